"""The main job: check the inputs, run the teacher over every pair, train the student, save it."""

import argparse
import gc
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed

from zsdistill import __version__
from zsdistill.data import (
    InputError,
    check_hypothesis_template,
    check_output_dir,
    read_class_names,
    read_texts,
)
from zsdistill.model_card import ModelCardFacts, write_model_card
from zsdistill.models import load_config_and_tokenizer, load_student, load_teacher, max_input_length
from zsdistill.predictions import TEACHER_PREDICTIONS_FILE, save_teacher_predictions
from zsdistill.progress import print_table
from zsdistill.soft_labels import soft_labels_from_logits
from zsdistill.teacher import build_hypotheses, check_hypotheses_fit, find_nli_label_ids, score_pairs
from zsdistill.training import SoftLabelDataset, TrainingConfig, split_validation, tokenize_texts, train_student

logger = get_logger(__name__)

RUN_FILE = "zsdistill_run.json"


def training_config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """Collect the optimization flags into a TrainingConfig."""
    fields = TrainingConfig.__dataclass_fields__
    return TrainingConfig(**{name: getattr(args, name) for name in fields})


def distill(args: argparse.Namespace, command: str) -> dict:
    """Run the whole job for parsed command-line arguments and return the summary written to zsdistill_run.json.

    `command` is the command line as the user typed it, recorded in the model card.
    """

    # Check every input before loading any model, so a mistake costs seconds.
    data = read_texts(args.data_file)
    class_names = read_class_names(args.class_names_file)
    check_hypothesis_template(args.hypothesis_template)
    check_output_dir(args.output_dir, args.overwrite_output_dir)
    # A softmax over a single class is always 1.0, so one class is scored and trained per class, as multi-label.
    multi_label = args.multi_label or len(class_names) == 1

    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        cpu=args.cpu,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
    )
    set_seed(args.seed)

    # Configs and tokenizers load in seconds; reading them first catches a wrong name or an impossible template.
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

    num_texts, num_classes = len(data.texts), len(class_names)
    if data.blank_lines:
        logger.info(f"Skipped {data.blank_lines} blank lines in {data.path}")
    if multi_label and not args.multi_label:
        logger.info("One class given: each text is scored against it on its own, as in multi-label mode")
    print_table(
        accelerator,
        "Teacher pass",
        [
            ("teacher", args.teacher_name_or_path),
            ("examples", f"{num_texts:,}"),
            ("classes", f"{num_classes} ({', '.join(class_names)})"),
            ("pairs", f"{num_texts * num_classes:,} (examples × classes)"),
            ("hypothesis template", repr(args.hypothesis_template)),
            ("mode", "multi-label" if multi_label else "single-label"),
            ("batch size per process", f"{args.teacher_batch_size} pairs"),
            ("max length", f"{teacher_max_length} tokens"),
            ("processes", str(accelerator.num_processes)),
            ("device", str(accelerator.device)),
            ("mixed precision", accelerator.mixed_precision),
        ],
    )

    # Teacher pass.
    start = time.perf_counter()
    teacher = load_teacher(args.teacher_name_or_path)
    logits = score_pairs(
        accelerator,
        teacher,
        teacher_tokenizer,
        data.texts,
        hypotheses,
        label_ids,
        args.teacher_batch_size,
        teacher_max_length,
    )
    teacher_seconds = time.perf_counter() - start
    soft_labels = soft_labels_from_logits(logits, multi_label, args.temperature)

    # Save the teacher's work before training, so a failure later does not lose it.
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_teacher_predictions(
            output_dir / TEACHER_PREDICTIONS_FILE,
            logits,
            soft_labels,
            {
                "teacher": args.teacher_name_or_path,
                "hypothesis_template": args.hypothesis_template,
                "class_names": class_names,
                "multi_label": multi_label,
                "temperature": args.temperature,
                "entailment_id": label_ids.entailment,
                "contradiction_id": label_ids.contradiction,
                "max_length": teacher_max_length,
            },
        )
    accelerator.wait_for_everyone()
    num_pairs = num_texts * num_classes
    logger.info(
        f"Teacher pass: {num_pairs:,} pairs in {teacher_seconds:.1f} s ({num_pairs / teacher_seconds:,.1f} pairs/s), "
        f"predictions saved to {output_dir / TEACHER_PREDICTIONS_FILE}"
    )

    # Free the teacher before the student is loaded: on one accelerator the two need not fit together.
    del teacher
    accelerator.free_memory()
    gc.collect()

    # Student training.
    set_seed(args.seed)
    training_config = training_config_from_args(args)
    train_indices, validation_indices = split_validation(num_texts, args.validation_split, args.seed)
    student = load_student(args.student_name_or_path, class_names, multi_label)
    input_features = tokenize_texts(student_tokenizer, data.texts, student_max_length)
    train_set = SoftLabelDataset(input_features, soft_labels, train_indices)
    validation_set = SoftLabelDataset(input_features, soft_labels, validation_indices) if validation_indices else None

    total_batch = (
        training_config.per_device_train_batch_size
        * accelerator.num_processes
        * training_config.gradient_accumulation_steps
    )
    print_table(
        accelerator,
        "Student training",
        [
            ("student", args.student_name_or_path),
            ("training examples", f"{len(train_indices):,}"),
            ("held-out examples", f"{len(validation_indices):,} (agreement with the teacher)"),
            ("epochs", f"{training_config.num_train_epochs:g}"),
            ("batch size per process", str(training_config.per_device_train_batch_size)),
            ("total batch size", f"{total_batch} (per process × processes × accumulation steps)"),
            (
                "learning rate",
                f"{training_config.learning_rate:g}, linear decay, warmup {training_config.warmup_ratio:g}",
            ),
            ("max length", f"{student_max_length} tokens"),
            ("loss", "binary cross-entropy per class" if multi_label else "cross-entropy on soft labels"),
        ],
    )
    start = time.perf_counter()
    student, epochs = train_student(
        accelerator, student, student_tokenizer, train_set, validation_set, training_config, multi_label
    )
    training_seconds = time.perf_counter() - start

    # Save the student. Every process waits here, then the main process alone writes the files.
    accelerator.wait_for_everyone()
    agreement = epochs[-1].agreement if epochs else None
    summary = {
        "zsdistill_version": __version__,
        "command": command,
        "arguments": vars(args),
        "multi_label": multi_label,
        "class_names": class_names,
        "num_examples": num_texts,
        "num_blank_lines": data.blank_lines,
        "num_pairs": num_pairs,
        "num_processes": accelerator.num_processes,
        "teacher_seconds": teacher_seconds,
        "teacher_pairs_per_second": num_pairs / teacher_seconds,
        "training_seconds": training_seconds,
        "epochs": [asdict(epoch) for epoch in epochs],
        "agreement": agreement,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": _version("transformers"),
            "accelerate": _version("accelerate"),
        },
    }
    unwrapped = accelerator.unwrap_model(student)
    unwrapped.save_pretrained(output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save)
    if accelerator.is_main_process:
        student_tokenizer.save_pretrained(output_dir)
        facts = ModelCardFacts(
            teacher=args.teacher_name_or_path,
            student_base=args.student_name_or_path,
            hypothesis_template=args.hypothesis_template,
            multi_label=multi_label,
            temperature=args.temperature,
            class_names=class_names,
            num_examples=num_texts,
            num_validation=len(validation_indices),
            agreement=agreement,
            command=command,
        )
        write_model_card(output_dir, facts)
        (output_dir / RUN_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()

    print_table(
        accelerator,
        "Done",
        [
            ("teacher pass", f"{teacher_seconds:.1f} s, {num_pairs / teacher_seconds:,.1f} pairs/s"),
            ("student training", f"{training_seconds:.1f} s"),
            ("agreement", "not measured" if agreement is None else f"{agreement:.2%} of held-out decisions"),
            ("student", str(output_dir)),
        ],
    )
    return summary


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
