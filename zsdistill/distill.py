"""The main job: check the inputs, run the teacher over every pair, train the student, save it.

Each stage is a function, called in order by `distill`: checking the inputs and reading the models' configs
(seconds), the teacher pass (the expensive part, saved as soon as it ends), the student's training, and saving.
"""

import argparse
import gc
import json
import platform
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zsdistill import __version__
from zsdistill.data import (
    InputError,
    TextFile,
    check_hypothesis_template,
    check_output_dir,
    create_output_dir,
    read_class_names,
    read_texts,
)
from zsdistill.evaluation import (
    LabeledTexts,
    evaluate_student_on,
    evaluate_teacher_on,
    print_eval_file_summary,
    read_eval_file,
)
from zsdistill.model_card import ModelCardFacts, write_model_card
from zsdistill.models import load_config_and_tokenizer, load_student, load_teacher, max_input_length
from zsdistill.predictions import TEACHER_PREDICTIONS_FILE, apply_umask, save_teacher_predictions
from zsdistill.progress import print_table
from zsdistill.soft_labels import soft_labels_from_logits
from zsdistill.teacher import (
    NLILabelIds,
    build_hypotheses,
    check_hypotheses_fit,
    find_nli_label_ids,
    score_pairs,
)
from zsdistill.training import (
    EpochResult,
    SoftLabelDataset,
    TrainingConfig,
    split_validation,
    tokenize_texts,
    train_student,
)

logger = get_logger(__name__)

RUN_FILE = "zsdistill_run.json"


@dataclass
class RunSetup:
    """Everything checked and read before the first model weight is loaded."""

    data: TextFile
    class_names: list[str]
    multi_label: bool
    hypotheses: list[str]
    label_ids: NLILabelIds
    teacher_tokenizer: PreTrainedTokenizerBase
    teacher_max_length: int
    student_tokenizer: PreTrainedTokenizerBase
    student_max_length: int
    eval_set: LabeledTexts | None = None


@dataclass
class TeacherResult:
    """The teacher pass's soft labels, how long it took, and the teacher's report on --eval_file if one was given."""

    soft_labels: torch.Tensor
    num_pairs: int
    seconds: float
    eval_report: dict | None = None


def check_inputs(args: argparse.Namespace) -> RunSetup:
    """Read and check the input files and both models' configs and tokenizers, loading no weights."""
    data = read_texts(args.data_file, args.text_column, header=not args.no_header)
    class_names = read_class_names(args.class_names_file)
    check_hypothesis_template(args.hypothesis_template)
    check_output_dir(
        args.output_dir, args.overwrite_output_dir, (args.teacher_name_or_path, args.student_name_or_path)
    )
    # A softmax over a single class is always 1.0, so one class is scored and trained per class, as multi-label.
    multi_label = args.multi_label or len(class_names) == 1

    teacher_config, teacher_tokenizer = load_config_and_tokenizer(args.teacher_name_or_path, "teacher")
    label_ids = find_nli_label_ids(teacher_config, args.entailment_id, args.contradiction_id)
    if multi_label and label_ids.contradiction is None:
        reason = "--multi_label" if args.multi_label else "a single class"
        raise InputError(
            f"The teacher's labels ({teacher_config.id2label}) name no contradiction class, which {reason} needs. "
            f"Pass --contradiction_id with the index of the logit to contrast entailment with."
        )
    teacher_max_length = max_input_length(teacher_tokenizer, teacher_config, args.max_length)
    hypotheses = build_hypotheses(args.hypothesis_template, class_names)
    check_hypotheses_fit(teacher_tokenizer, hypotheses, class_names, teacher_max_length)

    student_config, student_tokenizer = load_config_and_tokenizer(args.student_name_or_path, "student")
    student_max_length = max_input_length(student_tokenizer, student_config, args.max_length)
    eval_set = read_eval_file(args, class_names, multi_label)
    create_output_dir(args.output_dir)
    return RunSetup(
        data=data,
        class_names=class_names,
        multi_label=multi_label,
        hypotheses=hypotheses,
        label_ids=label_ids,
        teacher_tokenizer=teacher_tokenizer,
        teacher_max_length=teacher_max_length,
        student_tokenizer=student_tokenizer,
        student_max_length=student_max_length,
        eval_set=eval_set,
    )


def run_teacher(args: argparse.Namespace, accelerator: Accelerator, setup: RunSetup) -> TeacherResult:
    """Score every (text, hypothesis) pair with the teacher and save its predictions into --output_dir."""
    num_texts, num_classes = len(setup.data.texts), len(setup.class_names)
    num_pairs = num_texts * num_classes
    if setup.data.blank_lines:
        plural = "s" if setup.data.blank_lines > 1 else ""
        logger.info(f"Skipped {setup.data.blank_lines} blank line{plural} in {setup.data.path}")
    if setup.multi_label and not args.multi_label:
        logger.info("One class given: each text is scored against it on its own, as in multi-label mode")
    print_table(
        accelerator,
        "Teacher pass",
        [
            ("teacher", args.teacher_name_or_path),
            ("examples", f"{num_texts:,}"),
            ("classes", f"{num_classes} ({', '.join(setup.class_names)})"),
            ("pairs", f"{num_pairs:,} (examples × classes)"),
            ("hypothesis template", repr(args.hypothesis_template)),
            ("mode", "multi-label" if setup.multi_label else "single-label"),
            ("batch size per process", f"{args.teacher_batch_size} pairs"),
            ("max length", f"{setup.teacher_max_length} tokens"),
            ("processes", str(accelerator.num_processes)),
            ("device", str(accelerator.device)),
            ("mixed precision", accelerator.mixed_precision),
        ],
    )

    teacher = load_teacher(args.teacher_name_or_path)
    start = time.perf_counter()
    logits = score_pairs(
        accelerator,
        teacher,
        setup.teacher_tokenizer,
        setup.data.texts,
        setup.hypotheses,
        setup.label_ids,
        args.teacher_batch_size,
        setup.teacher_max_length,
    )
    seconds = time.perf_counter() - start
    soft_labels = soft_labels_from_logits(logits, setup.multi_label, args.temperature)

    # Save the teacher's work before training, so a failure later does not lose it.
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        metadata = {
            "teacher": args.teacher_name_or_path,
            "hypothesis_template": args.hypothesis_template,
            "class_names": setup.class_names,
            "multi_label": setup.multi_label,
            "temperature": args.temperature,
            "entailment_id": setup.label_ids.entailment,
            "contradiction_id": setup.label_ids.contradiction,
            "max_length": setup.teacher_max_length,
        }
        save_teacher_predictions(output_dir / TEACHER_PREDICTIONS_FILE, logits, soft_labels, metadata)
    accelerator.wait_for_everyone()
    logger.info(
        f"Teacher pass: {num_pairs:,} pairs in {seconds:.1f} s ({num_pairs / seconds:,.1f} pairs/s), "
        f"predictions saved to {output_dir / TEACHER_PREDICTIONS_FILE}"
    )

    eval_report = evaluate_teacher_on(args, accelerator, teacher, setup)

    # Free the teacher before the student is loaded: on one accelerator the two need not fit together.
    del teacher
    accelerator.free_memory()
    gc.collect()
    return TeacherResult(soft_labels=soft_labels, num_pairs=num_pairs, seconds=seconds, eval_report=eval_report)


def training_config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """Collect the optimization flags into a TrainingConfig."""
    return TrainingConfig(**{name: getattr(args, name) for name in TrainingConfig.__dataclass_fields__})


def run_training(
    args: argparse.Namespace, accelerator: Accelerator, setup: RunSetup, soft_labels: torch.Tensor
) -> tuple[PreTrainedModel, list[EpochResult], int, float]:
    """Train the student on the soft labels; return it, its epochs, the number of held-out texts and the time."""
    set_seed(args.seed)
    config = training_config_from_args(args)
    train_indices, validation_indices = split_validation(len(setup.data.texts), args.validation_split, args.seed)
    student = load_student(args.student_name_or_path, setup.class_names, setup.multi_label)
    input_features = tokenize_texts(setup.student_tokenizer, setup.data.texts, setup.student_max_length)
    train_set = SoftLabelDataset(input_features, soft_labels, train_indices)
    validation_set = SoftLabelDataset(input_features, soft_labels, validation_indices) if validation_indices else None

    total_batch = config.per_device_train_batch_size * accelerator.num_processes * config.gradient_accumulation_steps
    print_table(
        accelerator,
        "Student training",
        [
            ("student", args.student_name_or_path),
            ("training examples", f"{len(train_indices):,}"),
            ("held-out examples", f"{len(validation_indices):,} (agreement with the teacher)"),
            ("epochs", f"{config.num_train_epochs:g}"),
            ("batch size per process", str(config.per_device_train_batch_size)),
            ("total batch size", f"{total_batch} (per process × processes × accumulation steps)"),
            ("learning rate", f"{config.learning_rate:g}, linear decay, warmup {config.warmup_ratio:g}"),
            ("max length", f"{setup.student_max_length} tokens"),
            ("processes", str(accelerator.num_processes)),
            ("mixed precision", accelerator.mixed_precision),
            ("loss", "binary cross-entropy per class" if setup.multi_label else "cross-entropy on soft labels"),
        ],
    )
    start = time.perf_counter()
    student, epochs = train_student(
        accelerator, student, setup.student_tokenizer, train_set, validation_set, config, setup.multi_label
    )
    return student, epochs, len(validation_indices), time.perf_counter() - start


def save_student(
    args: argparse.Namespace,
    accelerator: Accelerator,
    setup: RunSetup,
    student: PreTrainedModel,
    facts: ModelCardFacts,
    summary: dict,
) -> None:
    """Write the student, its tokenizer, the model card and the run summary from the main process alone."""
    # Every process waits here, so that no process still trains while the files are written.
    accelerator.wait_for_everyone()
    output_dir = Path(args.output_dir)
    unwrapped = accelerator.unwrap_model(student)
    unwrapped.save_pretrained(output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save)
    if accelerator.is_main_process:
        for weights_file in output_dir.glob("*.safetensors"):
            apply_umask(weights_file)
        setup.student_tokenizer.save_pretrained(output_dir)
        write_model_card(output_dir, facts)
        (output_dir / RUN_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()


def distill(args: argparse.Namespace, command: str) -> dict:
    """Run the whole job for parsed command-line arguments and return the summary written to zsdistill_run.json.

    `command` is the command line as the user typed it, recorded in the model card.
    """
    # Check every input before loading any model weights, so a mistake costs seconds.
    setup = check_inputs(args)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        cpu=args.cpu,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
    )
    # Accelerate accepts fp16 on a CPU but runs in float32 there, which the plan would misreport.
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise InputError(
            "--mixed_precision fp16 has no effect on the CPU, which runs it in float32. Use --mixed_precision bf16 "
            "for half precision on the CPU, or run on a GPU."
        )
    set_seed(args.seed)

    teacher = run_teacher(args, accelerator, setup)
    student, epochs, num_validation, training_seconds = run_training(args, accelerator, setup, teacher.soft_labels)
    student_eval_report = evaluate_student_on(args, accelerator, student, setup)

    agreement = epochs[-1].agreement if epochs else None
    facts = ModelCardFacts(
        teacher=args.teacher_name_or_path,
        student_base=args.student_name_or_path,
        hypothesis_template=args.hypothesis_template,
        multi_label=setup.multi_label,
        temperature=args.temperature,
        class_names=setup.class_names,
        num_examples=len(setup.data.texts),
        num_validation=num_validation,
        agreement=agreement,
        command=command,
    )
    summary = {
        "zsdistill_version": __version__,
        "command": command,
        "arguments": vars(args),
        "multi_label": setup.multi_label,
        "class_names": setup.class_names,
        "num_examples": len(setup.data.texts),
        "num_blank_lines": setup.data.blank_lines,
        "num_pairs": teacher.num_pairs,
        "num_processes": accelerator.num_processes,
        "teacher_seconds": teacher.seconds,
        "teacher_pairs_per_second": teacher.num_pairs / teacher.seconds,
        "training_seconds": training_seconds,
        "epochs": [asdict(epoch) for epoch in epochs],
        "agreement": agreement,
        "evaluation": {"teacher": teacher.eval_report, "student": student_eval_report},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": version("transformers"),
            "accelerate": version("accelerate"),
        },
    }
    save_student(args, accelerator, setup, student, facts, summary)

    if student_eval_report is not None:
        print_eval_file_summary(accelerator, args.eval_file, teacher.eval_report, student_eval_report, agreement)
    print_table(
        accelerator,
        "Done",
        [
            ("teacher pass", f"{teacher.seconds:.1f} s, {teacher.num_pairs / teacher.seconds:,.1f} pairs/s"),
            ("student training", f"{training_seconds:.1f} s"),
            ("agreement", "not measured" if agreement is None else f"{agreement:.2%} of held-out decisions"),
            ("student", str(args.output_dir)),
        ],
    )
    return summary
