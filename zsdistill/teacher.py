"""The NLI teacher: find its entailment and contradiction logits, and score every (text, hypothesis) pair."""

from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch.utils.data import DataLoader
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from zsdistill.data import InputError
from zsdistill.progress import make_progress

_CONTRADICTION_NAMES = ("contradiction", "not_entailment", "non_entailment", "not entailment", "non-entailment")


@dataclass(frozen=True)
class NLILabelIds:
    """Indices of the teacher's entailment logit and of the logit that entailment is contrasted with."""

    entailment: int
    contradiction: int | None


@dataclass
class TeacherLogits:
    """The teacher's raw logits for every (example, class) pair, shape (N, K), float32, in input order."""

    entailment: torch.Tensor
    contradiction: torch.Tensor | None


def find_nli_label_ids(
    config: PretrainedConfig, entailment_id: int | None = None, contradiction_id: int | None = None
) -> NLILabelIds:
    """Find the entailment and contradiction logits by name in `config.label2id`, unless given explicitly.

    Names match case-insensitively. A binary `entailment` / `not_entailment` model uses `not_entailment` as the
    contradiction. Raise InputError when no label is named as entailment, rather than guess an index.
    """
    num_labels = config.num_labels
    for flag, value in (("--entailment_id", entailment_id), ("--contradiction_id", contradiction_id)):
        if value is not None and not 0 <= value < num_labels:
            raise InputError(
                f"{flag} {value} is out of range: the teacher has {num_labels} labels, 0 to {num_labels - 1}."
            )

    label2id = {name.lower(): index for name, index in (config.label2id or {}).items()}
    labels_text = ", ".join(f"{index}: {name}" for name, index in sorted(config.label2id.items(), key=lambda x: x[1]))

    if entailment_id is None:
        entailment_id = next((index for name, index in label2id.items() if name.startswith("entail")), None)
    if entailment_id is None:
        raise InputError(
            f"The teacher's labels ({labels_text}) name no entailment class, so its entailment logit is unknown. "
            f"Use an NLI model, or pass --entailment_id (and --contradiction_id for --multi_label) with the "
            f"indices of its entailment and contradiction logits."
        )

    if contradiction_id is None:
        contradiction_id = next((label2id[name] for name in _CONTRADICTION_NAMES if name in label2id), None)
        # An explicit --entailment_id that points at the label named contradiction means the names are wrong, so the
        # contradiction found by name is dropped rather than used for both.
        if contradiction_id == entailment_id:
            contradiction_id = None
    if contradiction_id == entailment_id:
        raise InputError(
            f"--entailment_id and --contradiction_id are both {entailment_id}. They must name two different logits "
            f"of the teacher ({labels_text})."
        )
    return NLILabelIds(entailment=entailment_id, contradiction=contradiction_id)


def build_hypotheses(hypothesis_template: str, class_names: list[str]) -> list[str]:
    """Fill the template with each class name, as transformers' zero-shot pipeline does."""
    return [hypothesis_template.format(name) for name in class_names]


def check_hypotheses_fit(
    tokenizer: PreTrainedTokenizerBase, hypotheses: list[str], class_names: list[str], max_length: int
) -> None:
    """Raise InputError if a hypothesis leaves no room for even one token of the text, naming its class."""
    special_tokens = tokenizer.num_special_tokens_to_add(pair=True)
    for name, hypothesis in zip(class_names, hypotheses, strict=True):
        # verbose=False keeps the tokenizer from warning that a long hypothesis exceeds the model's limit.
        length = len(tokenizer(hypothesis, add_special_tokens=False, verbose=False)["input_ids"])
        if length + special_tokens + 1 > max_length:
            raise InputError(
                f"The hypothesis for class {_shorten(name)!r} ({_shorten(hypothesis)!r}) is {length} tokens long. "
                f"With {special_tokens} special tokens it leaves no room for the text within the limit of "
                f"{max_length} tokens. Shorten the class name or the template, or raise --max_length if the "
                f"teacher allows it."
            )


def _shorten(text: str, max_chars: int = 80) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


class _PairCollator:
    """Tokenize a batch of pair indices into teacher inputs, truncating only the text (the premise).

    Pair `i` is text `i // K` with hypothesis `i % K`, so the flat index also gives the pair's place in the output.
    """

    def __init__(self, tokenizer, texts, hypotheses, max_length):
        self.tokenizer = tokenizer
        self.texts = texts
        self.hypotheses = hypotheses
        self.max_length = max_length

    def __call__(self, pair_indices: list[int]) -> dict[str, torch.Tensor]:
        num_classes = len(self.hypotheses)
        premises = [self.texts[i // num_classes] for i in pair_indices]
        hypotheses = [self.hypotheses[i % num_classes] for i in pair_indices]
        batch = self.tokenizer(
            premises,
            hypotheses,
            truncation="only_first",
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        inputs = {name: batch[name] for name in self.tokenizer.model_input_names if name in batch}
        inputs["pair_index"] = torch.tensor(pair_indices, dtype=torch.long)
        return inputs


def score_pairs(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    hypotheses: list[str],
    label_ids: NLILabelIds,
    batch_size: int,
    max_length: int,
) -> TeacherLogits:
    """Run every (text, hypothesis) pair through the teacher and return its logits in input order.

    Each process scores its shard of the pairs. Results are gathered per batch with the pair index attached, so the
    output order never depends on how the pairs were batched or sharded.
    """
    num_texts, num_classes = len(texts), len(hypotheses)
    num_pairs = num_texts * num_classes
    collator = _PairCollator(tokenizer, texts, hypotheses, max_length)
    loader = DataLoader(range(num_pairs), batch_size=batch_size, shuffle=False, collate_fn=collator)

    model.requires_grad_(False)
    model.eval()
    if accelerator.distributed_type == DistributedType.FSDP:
        # Sharding the teacher's weights is what lets a teacher too large for one device run.
        # NOTE: the tests run on CPUs only, so this branch and saving the student under FSDP have not been run.
        model, loader = accelerator.prepare(model, loader)
    else:
        # The teacher is never trained, so it is prepared in evaluation mode: moved to the device and given
        # mixed-precision autocast, but not wrapped in DistributedDataParallel. A plain prepare() on MULTI_CPU wraps
        # even a model without trainable parameters in DDP (Accelerate 1.16), and DDP raises for it.
        model = accelerator.prepare_model(model, evaluation_mode=True)
        loader = accelerator.prepare(loader)

    columns = [label_ids.entailment]
    if label_ids.contradiction is not None:
        columns.append(label_ids.contradiction)
    logits_out = torch.empty(num_pairs, len(columns), dtype=torch.float32)
    times_received = torch.zeros(num_pairs, dtype=torch.long)

    with make_progress(accelerator, unit="pairs") as progress, torch.inference_mode():
        task = progress.add_task("Teacher pass", total=num_pairs)
        for batch in loader:
            pair_index = batch.pop("pair_index")
            logits = model(**batch).logits[:, columns].float()

            # Gather inside the loop over the prepared loader: that is where Accelerate drops the samples it
            # repeated to give every process an equal number of batches.
            pair_index, logits = accelerator.gather_for_metrics((pair_index, logits))
            # Every process checks the same gathered values, so all of them stop together.
            if not torch.isfinite(logits).all():
                first = pair_index[~torch.isfinite(logits).all(dim=1)][0].item()
                raise FloatingPointError(
                    f"The teacher returned a non-finite logit for text {first // num_classes} (0-based, blank lines "
                    f"not counted) and hypothesis {hypotheses[first % num_classes]!r}. Half precision can overflow "
                    f"in some models: run with --mixed_precision no."
                )
            logits_out[pair_index.cpu()] = logits.cpu()
            times_received.index_add_(0, pair_index.cpu(), torch.ones_like(pair_index, device="cpu"))
            progress.update(task, advance=len(pair_index))

    # The sampler repeats pairs to give every process the same number of batches, and gather_for_metrics drops the
    # repeats. Check that it did, since a missing pair would leave an uninitialized row in the output.
    if not (times_received == 1).all():
        missing = (times_received == 0).sum().item()
        repeated = (times_received > 1).sum().item()
        raise RuntimeError(
            f"The gathered teacher logits cover {num_pairs - missing:,} of {num_pairs:,} pairs, {repeated:,} of them "
            f"more than once, on {accelerator.num_processes} processes. Every pair must arrive exactly once. Run on "
            f"one process to get correct results."
        )

    logits_out = logits_out.view(num_texts, num_classes, len(columns))
    contradiction = logits_out[..., 1].contiguous() if label_ids.contradiction is not None else None
    return TeacherLogits(entailment=logits_out[..., 0].contiguous(), contradiction=contradiction)
