"""Scores against gold labels, of a student or of a zero-shot teacher: `zsdistill evaluate` and the run's --eval_file.

The metrics go through `evaluate`, with the module in zsdistill/metric_modules loaded by path, so that no download
is needed.
"""

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from rich.table import Table
from transformers import PreTrainedTokenizerBase

from zsdistill.cli import DEFAULT_TEMPLATE
from zsdistill.data import (
    InputError,
    TextFile,
    check_hypothesis_template,
    check_output_file,
    read_class_names,
    read_texts,
)
from zsdistill.gold_labels import read_gold_labels
from zsdistill.inference import (
    DEFAULT_THRESHOLD,
    ClassifierSetup,
    check_classifier,
    check_decision_options,
    check_finite,
    classify_texts,
    load_classifier,
    make_accelerator,
    prepare_for_inference,
    scores_from_logits,
)
from zsdistill.models import (
    load_config_and_tokenizer,
    load_teacher,
    max_input_length,
    resolve_teacher_dtype,
    warn_if_float16_is_slow,
)
from zsdistill.progress import console, make_progress, print_table
from zsdistill.soft_labels import soft_labels_from_logits
from zsdistill.teacher import (
    NLILabelIds,
    PairScorer,
    build_hypotheses,
    check_hypotheses_fit,
    find_nli_label_ids,
    logits_to_teacher_logits,
)

if TYPE_CHECKING:
    from zsdistill.distill import RunSetup

logger = get_logger(__name__)

CLASSIFICATION_REPORT_MODULE = Path(__file__).parent / "metric_modules" / "classification_report.py"
# Larger confusion matrices go to the JSON file only, since a table that wide wraps on a terminal.
MAX_CLASSES_IN_CONFUSION_TABLE = 12


@dataclass
class LabeledTexts:
    """The texts of a labeled data file and their gold labels as class indices, shape (N,) or (N, K) multi-hot."""

    data: TextFile
    gold: torch.Tensor


@dataclass
class ZeroShotSetup:
    """A zero-shot teacher checked before its weights are loaded."""

    class_names: list[str]
    multi_label: bool
    hypotheses: list[str]
    label_ids: NLILabelIds
    tokenizer: PreTrainedTokenizerBase
    max_length: int


def read_labeled_texts(
    path: str,
    text_column: str | None,
    label_column: str,
    header: bool,
    class_names: list[str],
    multi_label: bool,
    first_label_id: int,
    option_prefix: str = "--",
) -> LabeledTexts:
    """Read a labeled data file and map its labels to the classes, or raise InputError naming the bad value."""
    data = read_texts(path, text_column, label_column, header, option_prefix)
    gold = read_gold_labels(data, class_names, multi_label, first_label_id, f"{option_prefix}label_column")
    return LabeledTexts(data=data, gold=gold)


def decide(scores: torch.Tensor, multi_label: bool, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Return the predicted class of each text, or for multi-label scores a 0/1 tensor of the classes at threshold."""
    if multi_label:
        return (scores >= threshold).long()
    return scores.argmax(dim=-1)


def classification_report(
    predictions: torch.Tensor, gold: torch.Tensor, class_names: list[str], multi_label: bool
) -> dict:
    """Compute the metrics of `predictions` against `gold` with the packaged `evaluate` module.

    Single-label: accuracy, macro-F1, per-class precision, recall, F1 and support, and the confusion matrix (row =
    gold class, column = predicted class). Multi-label: micro- and macro-F1, exact-match accuracy and per-class
    figures. See zsdistill/metric_modules/classification_report.py for the definitions.
    """
    import evaluate

    metric = evaluate.load(
        str(CLASSIFICATION_REPORT_MODULE), config_name="multilabel" if multi_label else None, keep_in_memory=True
    )
    result = metric.compute(predictions=predictions.tolist(), references=gold.tolist(), num_classes=len(class_names))
    per_class = {
        name: {
            "precision": result["precision"][index],
            "recall": result["recall"][index],
            "f1": result["f1"][index],
            "support": result["support"][index],
        }
        for index, name in enumerate(class_names)
    }
    if multi_label:
        for index, name in enumerate(class_names):
            per_class[name]["predicted"] = result["predicted"][index]
        figures = ("micro_precision", "micro_recall", "micro_f1", "macro_f1", "exact_match")
        return {**{name: result[name] for name in figures}, "per_class": per_class}
    return {
        "accuracy": result["accuracy"],
        "macro_f1": result["macro_f1"],
        "per_class": per_class,
        "confusion_matrix": result["confusion_matrix"],
    }


def headline(report: dict) -> str:
    """Return the report's main figures on one line."""
    if "accuracy" in report:
        return f"accuracy {report['accuracy']:.2%}, macro-F1 {report['macro_f1']:.4f}"
    return (
        f"micro-F1 {report['micro_f1']:.4f}, macro-F1 {report['macro_f1']:.4f}, "
        f"exact match {report['exact_match']:.2%}"
    )


def print_report(accelerator: Accelerator, title: str, report: dict, class_names: list[str]) -> None:
    """Print the per-class figures and, for up to 12 classes, the confusion matrix, on the main process."""
    if not accelerator.is_main_process:
        return
    multi_label = "accuracy" not in report
    per_class = Table(title=f"{title}: per class", title_justify="left", title_style="bold")
    for column in ("class", "precision", "recall", "F1", "support") + (("predicted",) if multi_label else ()):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for name in class_names:
        figures = report["per_class"][name]
        cells = [name, f"{figures['precision']:.4f}", f"{figures['recall']:.4f}", f"{figures['f1']:.4f}"]
        cells.append(f"{figures['support']:,}")
        if multi_label:
            cells.append(f"{figures['predicted']:,}")
        per_class.add_row(*cells)
    console.print(per_class)

    if multi_label:
        return
    if len(class_names) > MAX_CLASSES_IN_CONFUSION_TABLE:
        console.print(f"The confusion matrix of {len(class_names)} classes is in the JSON report (--output_file).")
        return
    confusion = Table(
        title=f"{title}: confusion matrix (rows: gold label, columns: prediction)",
        title_justify="left",
        title_style="bold",
    )
    confusion.add_column("gold \\ predicted")
    for name in class_names:
        confusion.add_column(name, justify="right")
    for name, counts in zip(class_names, report["confusion_matrix"], strict=True):
        confusion.add_row(name, *(f"{count:,}" for count in counts))
    console.print(confusion)


def zero_shot_scores(
    accelerator: Accelerator,
    teacher: torch.nn.Module,
    setup: ZeroShotSetup,
    texts: list[str],
    batch_size: int,
    max_tokens: int | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Score every text against every class with the NLI teacher, as transformers' zero-shot pipeline does.

    Returns the soft labels, shape (N, K), on every process.
    """
    scorer = PairScorer(
        accelerator,
        teacher,
        setup.tokenizer,
        setup.hypotheses,
        setup.label_ids,
        batch_size,
        setup.max_length,
        max_tokens,
    )
    with make_progress(accelerator, unit="pairs") as progress:
        task = progress.add_task("Teacher", total=len(texts) * len(setup.hypotheses))
        logits = scorer.score(texts, on_step=lambda pairs: progress.update(task, advance=pairs))
    return soft_labels_from_logits(logits_to_teacher_logits(logits), setup.multi_label, temperature)


def check_zero_shot_teacher(
    teacher_name_or_path: str,
    class_names: list[str],
    hypothesis_template: str,
    multi_label: bool,
    entailment_id: int | None,
    contradiction_id: int | None,
    max_length: int | None,
) -> ZeroShotSetup:
    """Check the template and the teacher's config and tokenizer for zero-shot scoring, loading no weights."""
    check_hypothesis_template(hypothesis_template)
    # A softmax over a single class is always 1.0, so one class is scored on its own, as multi-label.
    multi_label = multi_label or len(class_names) == 1
    config, tokenizer = load_config_and_tokenizer(teacher_name_or_path, "teacher")
    label_ids = find_nli_label_ids(config, entailment_id, contradiction_id)
    if multi_label and label_ids.contradiction is None:
        raise InputError(
            f"The teacher's labels ({config.id2label}) name no contradiction class, which multi-label scoring "
            f"needs. Pass --contradiction_id with the index of the logit to contrast entailment with."
        )
    teacher_max_length = max_input_length(tokenizer, config, max_length)
    hypotheses = build_hypotheses(hypothesis_template, class_names)
    check_hypotheses_fit(tokenizer, hypotheses, class_names, teacher_max_length)
    return ZeroShotSetup(
        class_names=class_names,
        multi_label=multi_label,
        hypotheses=hypotheses,
        label_ids=label_ids,
        tokenizer=tokenizer,
        max_length=teacher_max_length,
    )


def _reject_teacher_options(args: argparse.Namespace) -> None:
    """Raise InputError for a zero-shot option given with --model, whose config sets the classes and the mode."""
    options = {
        "--class_names_file": args.class_names_file,
        "--hypothesis_template": args.hypothesis_template,
        "--multi_label": args.multi_label or None,
        "--entailment_id": args.entailment_id,
        "--contradiction_id": args.contradiction_id,
        "--teacher_max_tokens": args.teacher_max_tokens,
        "--teacher_dtype": args.teacher_dtype,
    }
    given = [option for option, value in options.items() if value is not None]
    if given:
        raise InputError(
            f"The options {', '.join(given)} apply to a zero-shot teacher given with --teacher_name_or_path, but "
            f"--model was given, and a trained classifier's classes and mode come from its config. Drop them."
        )


@dataclass
class _EvaluationSetup:
    """The inputs of `zsdistill evaluate`, checked before any weights are loaded. One of the two setups is set."""

    model_name: str
    kind: str
    class_names: list[str]
    multi_label: bool
    classifier: ClassifierSetup | None
    zero_shot: ZeroShotSetup | None


def _check_model_options(args: argparse.Namespace) -> _EvaluationSetup:
    if args.model is not None:
        _reject_teacher_options(args)
        classifier = check_classifier(args.model, args.max_length)
        check_decision_options(classifier, args.threshold)
        return _EvaluationSetup(
            model_name=args.model,
            kind="classifier",
            class_names=classifier.class_names,
            multi_label=classifier.multi_label,
            classifier=classifier,
            zero_shot=None,
        )

    if args.class_names_file is None:
        raise InputError(
            "--teacher_name_or_path needs --class_names_file, the file with one class name per line whose "
            "hypotheses the teacher scores."
        )
    zero_shot = check_zero_shot_teacher(
        args.teacher_name_or_path,
        read_class_names(args.class_names_file),
        args.hypothesis_template or DEFAULT_TEMPLATE,
        args.multi_label,
        args.entailment_id,
        args.contradiction_id,
        args.max_length,
    )
    if args.threshold is not None and not zero_shot.multi_label:
        raise InputError(
            f"--threshold {args.threshold:g} applies to multi-label scoring. Pass --multi_label, or drop --threshold."
        )
    return _EvaluationSetup(
        model_name=args.teacher_name_or_path,
        kind="zero-shot teacher",
        class_names=zero_shot.class_names,
        multi_label=zero_shot.multi_label,
        classifier=None,
        zero_shot=zero_shot,
    )


def _score_texts(
    args: argparse.Namespace, accelerator: Accelerator, setup: _EvaluationSetup, data: TextFile
) -> tuple[torch.Tensor, float, float]:
    """Load the model and score every text. Return the scores, the loading time and the scoring time in seconds."""
    load_start = time.perf_counter()
    if setup.classifier is not None:
        model = prepare_for_inference(accelerator, load_classifier(args.model))
        start = time.perf_counter()
        logits = classify_texts(
            accelerator,
            model,
            setup.classifier.tokenizer,
            data.texts,
            args.per_device_eval_batch_size,
            setup.classifier.max_length,
        )
        check_finite(logits, data, args.model)
        scores = scores_from_logits(logits, setup.multi_label)
    else:
        dtype = resolve_teacher_dtype(args.teacher_dtype or "auto", accelerator.device)
        warn_if_float16_is_slow(dtype, accelerator.device)
        model = load_teacher(args.teacher_name_or_path, dtype)
        start = time.perf_counter()
        scores = zero_shot_scores(
            accelerator, model, setup.zero_shot, data.texts, args.teacher_batch_size, args.teacher_max_tokens
        )
    return scores, start - load_start, time.perf_counter() - start


def evaluate_command(args: argparse.Namespace, command: str) -> dict:
    """Run `zsdistill evaluate`: score a classifier or a zero-shot teacher against the gold labels of a file."""
    # Check every input before loading any model weights, so a mistake costs seconds.
    setup = _check_model_options(args)
    labeled = read_labeled_texts(
        args.data_file,
        args.text_column,
        args.label_column,
        not args.no_header,
        setup.class_names,
        setup.multi_label,
        args.first_label_id,
    )
    if args.output_file is not None:
        check_output_file(args.output_file, "--output_file", (args.data_file,))
    accelerator = make_accelerator(args)
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    data = labeled.data

    if data.blank_lines:
        logger.info(f"Skipped {data.blank_lines} rows with an empty text in {data.path}")
    print_table(
        accelerator,
        "Evaluation",
        [
            (setup.kind, setup.model_name),
            ("data file", str(data.path)),
            ("labeled texts", f"{len(data.texts):,}"),
            ("classes", f"{len(setup.class_names)} ({', '.join(setup.class_names)})"),
            ("mode", f"multi-label, threshold {threshold:g}" if setup.multi_label else "single-label"),
            ("processes", str(accelerator.num_processes)),
            ("device", str(accelerator.device)),
            ("mixed precision", accelerator.mixed_precision),
        ],
    )

    scores, load_seconds, seconds = _score_texts(args, accelerator, setup, data)
    predictions = decide(scores, setup.multi_label, threshold)
    report = {
        "model": setup.model_name,
        "kind": setup.kind,
        "data_file": str(data.path),
        "num_examples": len(data.texts),
        "num_skipped_rows": data.blank_lines,
        "multi_label": setup.multi_label,
        "threshold": threshold if setup.multi_label else None,
        "class_names": setup.class_names,
        **classification_report(predictions, labeled.gold, setup.class_names, setup.multi_label),
        "load_seconds": load_seconds,
        "seconds": seconds,
        "examples_per_second": len(data.texts) / seconds,
        "num_processes": accelerator.num_processes,
        "command": command,
    }
    print_report(accelerator, setup.model_name, report, setup.class_names)
    if accelerator.is_main_process and args.output_file is not None:
        Path(args.output_file).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()
    print_table(
        accelerator,
        "Done",
        [
            ("result", headline(report)),
            ("examples", f"{len(data.texts):,} in {seconds:.1f} s ({len(data.texts) / seconds:,.1f} texts/s)"),
            ("report", str(args.output_file) if args.output_file else "not written (no --output_file)"),
        ],
    )
    return report


def read_eval_file(args: argparse.Namespace, class_names: list[str], multi_label: bool) -> LabeledTexts | None:
    """Read the run's --eval_file and its gold labels, or return None when no --eval_file was given."""
    # The parsers of the subcommands that train no student from a teacher lack the --eval_file options.
    if getattr(args, "eval_file", None) is None:
        given = [
            option
            for option, value in (
                ("--eval_text_column", getattr(args, "eval_text_column", None)),
                ("--eval_label_column", getattr(args, "eval_label_column", None)),
                ("--eval_no_header", getattr(args, "eval_no_header", None) or None),
            )
            if value is not None
        ]
        if given:
            raise InputError(
                f"The options {', '.join(given)} describe the --eval_file, which was not given. Pass --eval_file or "
                f"drop them."
            )
        return None
    if args.eval_label_column is None:
        raise InputError("--eval_file needs --eval_label_column, the column of its gold labels.")
    return read_labeled_texts(
        args.eval_file,
        args.eval_text_column,
        args.eval_label_column,
        not args.eval_no_header,
        class_names,
        multi_label,
        args.first_label_id,
        option_prefix="--eval_",
    )


def evaluate_teacher_on(
    args: argparse.Namespace, accelerator: Accelerator, teacher: torch.nn.Module, setup: "RunSetup"
) -> dict | None:
    """Score the run's teacher on `setup.eval_set` and return the report, or None without an --eval_file.

    The soft labels use the run's --temperature, so the report describes the decisions that the student learns.
    """
    if setup.eval_set is None:
        return None
    zero_shot = ZeroShotSetup(
        class_names=setup.class_names,
        multi_label=setup.multi_label,
        hypotheses=setup.hypotheses,
        label_ids=setup.label_ids,
        tokenizer=setup.teacher_tokenizer,
        max_length=setup.teacher_max_length,
    )
    start = time.perf_counter()
    scores = zero_shot_scores(
        accelerator, teacher, zero_shot, setup.eval_set.data.texts, args.teacher_batch_size, None, args.temperature
    )
    return _eval_file_report("teacher", scores, setup, time.perf_counter() - start)


def evaluate_student_on(
    args: argparse.Namespace, accelerator: Accelerator, student: torch.nn.Module, setup: "RunSetup"
) -> dict | None:
    """Score the student, as prepared by training, on `setup.eval_set` and return the report, or None without one."""
    if setup.eval_set is None:
        return None
    start = time.perf_counter()
    logits = classify_texts(
        accelerator,
        student,
        setup.student_tokenizer,
        setup.eval_set.data.texts,
        args.per_device_eval_batch_size,
        setup.student_max_length,
        description="Student on --eval_file",
    )
    check_finite(logits, setup.eval_set.data, "student")
    scores = scores_from_logits(logits, setup.multi_label)
    return _eval_file_report("student", scores, setup, time.perf_counter() - start)


def _eval_file_report(role: str, scores: torch.Tensor, setup: "RunSetup", seconds: float) -> dict:
    eval_set = setup.eval_set
    predictions = decide(scores, setup.multi_label)
    report = classification_report(predictions, eval_set.gold, setup.class_names, setup.multi_label)
    report = {"eval_file": str(eval_set.data.path), "num_examples": len(eval_set.data.texts), **report}
    report["seconds"] = seconds
    logger.info(
        f"{role.capitalize()} on {eval_set.data.path} ({len(eval_set.data.texts):,} texts): {headline(report)}"
    )
    return report


def print_eval_file_summary(
    accelerator: Accelerator, eval_file: str, teacher_report: dict, student_report: dict, agreement: float | None
) -> None:
    """Print the teacher's and the student's figures on the --eval_file beside the agreement, on the main process."""
    num_examples = student_report["num_examples"]
    agreement_text = "not measured" if agreement is None else f"{agreement:.2%} of held-out decisions"
    print_table(
        accelerator,
        f"Gold labels of {eval_file} ({num_examples:,} texts)",
        [
            ("teacher", headline(teacher_report)),
            ("student", headline(student_report)),
            ("agreement with the teacher", agreement_text),
        ],
    )
