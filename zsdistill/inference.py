"""A trained classifier, such as a student, over a data file: the batched inference loop and `zsdistill predict`."""

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from torch.utils.data import DataLoader, Dataset
from transformers import AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from zsdistill.data import InputError, TextFile, check_output_file, read_texts
from zsdistill.models import load_config_and_tokenizer, max_input_length
from zsdistill.progress import make_progress, print_table
from zsdistill.training import tokenize_texts

logger = get_logger(__name__)

DEFAULT_THRESHOLD = 0.5
# Scores in the predictions file are rounded to this many decimal places.
SCORE_DECIMALS = 6


@dataclass
class ClassifierSetup:
    """A classifier's config and tokenizer, read before its weights are loaded, and what they imply."""

    name_or_path: str
    config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase
    class_names: list[str]
    multi_label: bool
    max_length: int


def check_classifier(name_or_path: str, max_length: int | None) -> ClassifierSetup:
    """Read a sequence classifier's config and tokenizer and find its classes, loading no weights.

    The class names are the config's `id2label` in id order. The model is multi-label when its `problem_type` is
    "multi_label_classification" or it has a single label, the cases where transformers' text-classification
    pipeline applies a sigmoid per class.
    """
    config, tokenizer = load_config_and_tokenizer(name_or_path, "model")
    if config.problem_type == "regression":
        raise InputError(
            f"The model {name_or_path!r} is a regression model (problem_type 'regression'), not a classifier. Give a "
            f"sequence classifier, such as a student written by zsdistill."
        )
    id2label = {int(index): name for index, name in (config.id2label or {}).items()}
    if sorted(id2label) != list(range(config.num_labels)):
        raise InputError(
            f"The config of the model {name_or_path!r} has num_labels {config.num_labels} but id2label names the ids "
            f"{sorted(id2label)}. Fix id2label in its config.json so that it names each id from 0 to "
            f"{config.num_labels - 1}."
        )
    class_names = [id2label[index] for index in range(config.num_labels)]
    multi_label = config.problem_type == "multi_label_classification" or config.num_labels == 1
    return ClassifierSetup(
        name_or_path=name_or_path,
        config=config,
        tokenizer=tokenizer,
        class_names=class_names,
        multi_label=multi_label,
        max_length=max_input_length(tokenizer, config, max_length),
    )


def check_decision_options(setup: ClassifierSetup, threshold: float | None, top_k: int | None = None) -> None:
    """Raise InputError for a --threshold given to a single-label model, or a --top_k above the number of classes."""
    if threshold is not None and not setup.multi_label:
        raise InputError(
            f"--threshold {threshold:g} applies to multi-label models, but {setup.name_or_path!r} is single-label: "
            f"it picks the class with the highest score. Drop --threshold."
        )
    num_classes = len(setup.class_names)
    if top_k is not None and top_k > num_classes:
        raise InputError(
            f"--top_k {top_k} is more than the {num_classes} classes of {setup.name_or_path!r}. Give a number from 1 "
            f"to {num_classes}."
        )


def load_classifier(name_or_path: str) -> PreTrainedModel:
    """Load a sequence classifier's weights, rejecting a checkpoint whose classification head would be random."""
    model, loading_info = AutoModelForSequenceClassification.from_pretrained(name_or_path, output_loading_info=True)
    if loading_info["missing_keys"]:
        missing = ", ".join(sorted(loading_info["missing_keys"])[:5])
        raise InputError(
            f"The model {name_or_path!r} lacks trained weights for {missing}, so transformers initialized them at "
            f"random and its scores would be noise. Give a trained classifier, such as the --output_dir of a "
            f"zsdistill run."
        )
    return model


def prepare_for_inference(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """Move a model to the device and apply the mixed precision, freezing it and without a distributed wrapper."""
    model.requires_grad_(False)
    model.eval()
    # On several CPU processes, Accelerate 1.16's prepare() wraps every model in DistributedDataParallel, which
    # rejects a model without trainable parameters. Inference needs no such wrapper, and evaluation_mode skips it.
    return accelerator.prepare_model(model, evaluation_mode=True)


def make_accelerator(args: argparse.Namespace) -> Accelerator:
    """Create the Accelerator of an inference command from --mixed_precision and --cpu."""
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu)
    # Accelerate accepts fp16 on a CPU but runs in float32 there.
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise InputError(
            "--mixed_precision fp16 has no effect on the CPU, which runs it in float32. Use --mixed_precision bf16 "
            "for half precision on the CPU, or run on a GPU."
        )
    return accelerator


class _IndexedTexts(Dataset):
    """Tokenized texts in a chosen order, each with its index in the input."""

    def __init__(self, input_features: list[dict], order: list[int]):
        self.input_features = input_features
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, position: int) -> dict:
        index = self.order[position]
        return {**self.input_features[index], "index": index}


class _IndexedCollator:
    """Pad a batch to its longest text and stack the input indices."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        indices = torch.tensor([feature.pop("index") for feature in features])
        batch = self.tokenizer.pad(features, padding=True, return_tensors="pt")
        batch = {name: batch[name] for name in self.tokenizer.model_input_names if name in batch}
        batch["index"] = indices
        return batch


def classify_texts(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    batch_size: int,
    max_length: int,
    description: str = "Classifying",
) -> torch.Tensor:
    """Return a prepared classifier's logits for every text, shape (N, K), float32, on the CPU, in input order.

    Every process passes the same texts. Each runs its share of the batches, and every process returns all the
    logits, exactly one row per text.
    """
    input_features = tokenize_texts(tokenizer, texts, max_length)
    # Longest texts first, so that a batch pads to few tokens and a batch too large for memory fails at the start.
    order = sorted(range(len(texts)), key=lambda index: -len(input_features[index]["input_ids"]))
    loader = DataLoader(
        _IndexedTexts(input_features, order), batch_size=batch_size, collate_fn=_IndexedCollator(tokenizer)
    )
    loader = accelerator.prepare(loader)

    num_labels = accelerator.unwrap_model(model).config.num_labels
    logits_out = torch.empty(len(texts), num_labels, dtype=torch.float32)
    predicted = torch.zeros(len(texts), dtype=torch.bool)
    was_training = model.training
    model.eval()
    with make_progress(accelerator, unit="texts") as progress, torch.inference_mode():
        task = progress.add_task(description, total=len(texts))
        for batch in loader:
            indices = batch.pop("index")
            logits = model(**batch).logits.float()
            # Gathering inside the loop lets gather_for_metrics drop the texts repeated to fill the last batches.
            indices, logits = accelerator.gather_for_metrics((indices, logits))
            indices = indices.cpu()
            if predicted[indices].any() or indices.unique().numel() != indices.numel():
                raise RuntimeError("The inference loop returned a text twice. Report this as a bug in zsdistill.")
            predicted[indices] = True
            logits_out[indices] = logits.cpu()
            progress.update(task, advance=len(indices))
    model.train(was_training)
    if not predicted.all():
        missing = (~predicted).sum().item()
        raise RuntimeError(
            f"The inference loop left {missing} texts without a prediction. Report this as a bug in zsdistill."
        )
    return logits_out


def scores_from_logits(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Return a softmax over the classes, or for a multi-label model a sigmoid per class."""
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)


def check_finite(logits: torch.Tensor, data: TextFile, model_name: str) -> None:
    """Raise FloatingPointError naming the first row whose logits are not all finite."""
    finite = torch.isfinite(logits).all(dim=-1)
    if not finite.all():
        row = data.row_numbers[int((~finite).nonzero()[0])]
        raise FloatingPointError(
            f"The model {model_name!r} returned a non-finite logit for row {row} of {data.path}. Half precision "
            f"overflows in some models: run with --mixed_precision no."
        )


def write_predictions(
    path: str | Path,
    row_numbers: list[int],
    scores: torch.Tensor,
    class_names: list[str],
    multi_label: bool,
    top_k: int | None,
    threshold: float,
) -> None:
    """Write one JSON object per text: its row number, the predicted labels best first and every class's score.

    `labels` contains the `top_k` best classes (default 1), or for a multi-label model the classes whose score is at
    least `threshold`, at most `top_k` of them. `label` is the first of `labels`, or null when no class reaches the
    threshold. The file is written under a temporary name and renamed, so a file with the final name is complete.
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    order = scores.argsort(dim=-1, descending=True, stable=True)
    # The decisions use the scores before rounding, as `zsdistill evaluate` does.
    reaches_threshold = (scores >= threshold).tolist()
    rounded = scores.double().round(decimals=SCORE_DECIMALS).tolist()
    with temporary.open("w", encoding="utf-8") as file:
        for position, (row, class_order) in enumerate(zip(row_numbers, order.tolist(), strict=True)):
            if multi_label:
                chosen = [index for index in class_order if reaches_threshold[position][index]]
                chosen = chosen[:top_k] if top_k is not None else chosen
            else:
                chosen = class_order[: top_k or 1]
            labels = [class_names[index] for index in chosen]
            line = {
                "row": row,
                "label": labels[0] if labels else None,
                "labels": labels,
                "scores": dict(zip(class_names, rounded[position], strict=True)),
            }
            file.write(json.dumps(line, ensure_ascii=False) + "\n")
    temporary.replace(path)


def predict_command(args: argparse.Namespace, command: str) -> dict:
    """Run `zsdistill predict`: write the classifier's predictions for every text of the data file."""
    # Check every input before loading any model weights, so a mistake costs seconds.
    setup = check_classifier(args.model, args.max_length)
    check_decision_options(setup, args.threshold, args.top_k)
    data = read_texts(args.data_file, args.text_column, header=not args.no_header)
    check_output_file(args.output_file, "--output_file", (args.data_file,))
    accelerator = make_accelerator(args)
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold

    if data.blank_lines:
        logger.info(f"Skipped {data.blank_lines} rows with an empty text in {data.path}")
    print_table(
        accelerator,
        "Prediction",
        [
            ("model", args.model),
            ("data file", str(data.path)),
            ("texts", f"{len(data.texts):,}"),
            ("classes", f"{len(setup.class_names)} ({', '.join(setup.class_names)})"),
            ("mode", f"multi-label, threshold {threshold:g}" if setup.multi_label else "single-label"),
            ("batch size per process", f"{args.per_device_eval_batch_size} texts"),
            ("max length", f"{setup.max_length} tokens"),
            ("processes", str(accelerator.num_processes)),
            ("device", str(accelerator.device)),
            ("mixed precision", accelerator.mixed_precision),
        ],
    )

    model = prepare_for_inference(accelerator, load_classifier(args.model))
    start = time.perf_counter()
    logits = classify_texts(
        accelerator, model, setup.tokenizer, data.texts, args.per_device_eval_batch_size, setup.max_length
    )
    seconds = time.perf_counter() - start
    check_finite(logits, data, args.model)
    scores = scores_from_logits(logits, setup.multi_label)

    if accelerator.is_main_process:
        write_predictions(
            args.output_file, data.row_numbers, scores, setup.class_names, setup.multi_label, args.top_k, threshold
        )
    accelerator.wait_for_everyone()
    print_table(
        accelerator,
        "Done",
        [
            ("predictions", f"{len(data.texts):,} rows in {seconds:.1f} s ({len(data.texts) / seconds:,.1f} texts/s)"),
            ("skipped rows", f"{data.blank_lines:,} (empty text)"),
            ("output file", str(args.output_file)),
        ],
    )
    return {
        "command": command,
        "num_examples": len(data.texts),
        "num_skipped_rows": data.blank_lines,
        "num_processes": accelerator.num_processes,
        "seconds": seconds,
    }
