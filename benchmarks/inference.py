"""Batched inference of a student classifier under Accelerate, used by the speed and accuracy benchmarks."""

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from zsdistill.training import tokenize_texts


class _PadCollator:
    """Pad a batch of tokenized texts to its longest text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad(features, padding=True, return_tensors="pt")
        return {name: batch[name] for name in self.tokenizer.model_input_names if name in batch}


def predict_logits(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    batch_size: int,
    max_length: int,
) -> torch.Tensor:
    """Tokenize the texts, run them through the classifier in batches and return its logits, shape (N, K), float32.

    Tokenizing is part of the work, as it is in the teacher's loop, so that timings of the two compare.
    """
    features = tokenize_texts(tokenizer, texts, max_length)
    loader = DataLoader(features, batch_size=batch_size, shuffle=False, collate_fn=_PadCollator(tokenizer))
    model.requires_grad_(False)
    model.eval()
    model, loader = accelerator.prepare(model, loader)

    logits = []
    with torch.inference_mode():
        for batch in loader:
            # gather_for_metrics drops the samples that Accelerate repeats to give every process equal batches.
            logits.append(accelerator.gather_for_metrics(model(**batch).logits.float()).cpu())
    return torch.cat(logits)
