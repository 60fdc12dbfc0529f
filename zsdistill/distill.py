"""The main job: check the inputs, run the teacher over every pair, train the student, save it.

Each stage is a function, called in order by `distill`: checking the inputs and reading the models' configs
(seconds), the teacher pass (the expensive part, saved as soon as it ends), the student's training, and saving.
"""

import argparse
import gc
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import is_torch_xla_available, set_seed
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zsdistill import __version__
from zsdistill.checkpoints import (
    Checkpoint,
    check_setup,
    describe_checkpointing,
    find_checkpoint,
    setup_from_inputs,
    sha256_of_tensor,
)
from zsdistill.cli import COMPILE_MIN_PAIRS
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
from zsdistill.models import (
    load_config_and_tokenizer,
    load_student,
    load_teacher,
    max_input_length,
    resolve_teacher_dtype,
    warn_if_float16_is_slow,
)
from zsdistill.predictions import (
    TEACHER_CACHE_ENTRIES,
    TEACHER_PREDICTIONS_FILE,
    TeacherCache,
    TeacherRecord,
    apply_umask,
    hash_texts,
    load_teacher_predictions,
    read_predictions_metadata,
)
from zsdistill.progress import print_table
from zsdistill.soft_labels import soft_labels_from_logits
from zsdistill.teacher import (
    NLILabelIds,
    build_hypotheses,
    check_hypotheses_fit,
    find_nli_label_ids,
)
from zsdistill.teacher_pass import TeacherPassResult, run_teacher_pass
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
    teacher_revision: str | None
    student_tokenizer: PreTrainedTokenizerBase | None
    student_max_length: int | None
    resume_checkpoint: Checkpoint | None
    eval_set: LabeledTexts | None


@dataclass
class StudentSetup:
    """The texts, classes and student tokenizer that training needs, checked before any weight is loaded."""

    data: TextFile
    class_names: list[str]
    multi_label: bool
    student_tokenizer: PreTrainedTokenizerBase
    student_max_length: int
    resume_checkpoint: Checkpoint | None = None
    eval_set: LabeledTexts | None = None


def find_resume_checkpoint(
    args: argparse.Namespace, texts: list[str], class_names: list[str], multi_label: bool, student_max_length: int
) -> Checkpoint | None:
    """Find the checkpoint that --resume_from_checkpoint names and check that it was saved for this setup."""
    if args.resume_from_checkpoint is None:
        return None
    checkpoint = find_checkpoint(args.resume_from_checkpoint, args.output_dir)
    train_indices, _ = split_validation(texts, args.validation_split, args.seed)
    known_setup = setup_from_inputs(args, texts, len(train_indices), class_names, multi_label, student_max_length)
    check_setup(checkpoint, known_setup)
    return checkpoint


def check_inputs(args: argparse.Namespace, train: bool = True) -> RunSetup:
    """Read and check the input files and the models' configs and tokenizers, loading no weights.

    The student is checked only when `train` is set.
    """
    data = read_texts(args.data_file, args.text_column, header=not args.no_header)
    class_names = read_class_names(args.class_names_file)
    check_hypothesis_template(args.hypothesis_template)
    model_paths = (args.teacher_name_or_path, args.student_name_or_path) if train else (args.teacher_name_or_path,)
    check_output_dir(
        args.output_dir,
        args.overwrite_output_dir,
        model_paths,
        reusable=TEACHER_CACHE_ENTRIES,
        resuming=getattr(args, "resume_from_checkpoint", None) is not None,
        can_resume=hasattr(args, "resume_from_checkpoint"),
    )
    # A softmax over a single class is always 1.0, so one class is scored and trained per class, as multi-label.
    multi_label = getattr(args, "multi_label", False) or len(class_names) == 1

    teacher_config, teacher_tokenizer = load_config_and_tokenizer(args.teacher_name_or_path, "teacher")
    label_ids = find_nli_label_ids(teacher_config, args.entailment_id, args.contradiction_id)
    if multi_label and label_ids.contradiction is None:
        reason = "a single class" if len(class_names) == 1 else "--multi_label"
        raise InputError(
            f"The teacher's labels ({teacher_config.id2label}) name no contradiction class, which {reason} needs. "
            f"Pass --contradiction_id with the index of the logit to contrast entailment with."
        )
    teacher_max_length = max_input_length(teacher_tokenizer, teacher_config, args.max_length)
    hypotheses = build_hypotheses(args.hypothesis_template, class_names)
    check_hypotheses_fit(teacher_tokenizer, hypotheses, class_names, teacher_max_length)

    student_tokenizer, student_max_length, resume_checkpoint = None, None, None
    if train:
        student_config, student_tokenizer = load_config_and_tokenizer(args.student_name_or_path, "student")
        student_max_length = max_input_length(student_tokenizer, student_config, args.max_length)
        resume_checkpoint = find_resume_checkpoint(args, data.texts, class_names, multi_label, student_max_length)
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
        teacher_revision=getattr(teacher_config, "_commit_hash", None),
        student_tokenizer=student_tokenizer,
        student_max_length=student_max_length,
        resume_checkpoint=resume_checkpoint,
        eval_set=eval_set,
    )


def _teacher_identity(name_or_path: str) -> str:
    """Return a local teacher's absolute path, so that two spellings of one path match, or a Hub name as given."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else name_or_path


def run_teacher(args: argparse.Namespace, accelerator: Accelerator, setup: RunSetup) -> TeacherPassResult:
    """Score every (text, hypothesis) pair with the teacher, saving its logits into --output_dir as it goes.

    Saved work from an earlier run of the same inputs in --output_dir is reused.
    """
    num_texts, num_classes = len(setup.data.texts), len(setup.class_names)
    num_pairs = num_texts * num_classes
    if setup.data.blank_lines:
        plural = "s" if setup.data.blank_lines > 1 else ""
        logger.info(f"Skipped {setup.data.blank_lines} blank line{plural} in {setup.data.path}")
    if len(setup.class_names) == 1 and not getattr(args, "multi_label", False):
        logger.info("One class given: each text is scored against it on its own, as in multi-label mode")

    dtype = resolve_teacher_dtype(args.teacher_dtype, accelerator.device)
    warn_if_float16_is_slow(dtype, accelerator.device)
    num_distinct = len(set(setup.data.texts))
    record = TeacherRecord(
        teacher=_teacher_identity(args.teacher_name_or_path),
        teacher_revision=setup.teacher_revision,
        hypothesis_template=args.hypothesis_template,
        class_names=setup.class_names,
        entailment_id=setup.label_ids.entailment,
        contradiction_id=setup.label_ids.contradiction,
        max_length=setup.teacher_max_length,
        teacher_dtype=str(dtype).removeprefix("torch."),
        mixed_precision=accelerator.mixed_precision,
        texts_sha256=hash_texts(setup.data.texts),
        num_texts=num_texts,
        num_unique_texts=num_distinct,
        texts_per_chunk=max(1, args.teacher_chunk_size // num_classes),
    )
    batch_text = f"{args.teacher_batch_size} pairs"
    if args.teacher_max_tokens is not None:
        batch_text += f", at most {args.teacher_max_tokens:,} tokens"
    print_table(
        accelerator,
        "Teacher pass",
        [
            ("teacher", args.teacher_name_or_path),
            ("examples", f"{num_texts:,} ({num_distinct:,} distinct, each scored once)"),
            ("classes", f"{num_classes} ({', '.join(setup.class_names)})"),
            ("pairs", f"{num_pairs:,} (examples × classes), {num_distinct * num_classes:,} to score"),
            ("hypothesis template", repr(args.hypothesis_template)),
            ("batch size per process", f"{batch_text}, sorted by length"),
            ("max length", f"{setup.teacher_max_length} tokens"),
            ("processes", str(accelerator.num_processes)),
            ("device", str(accelerator.device)),
            ("teacher dtype", _dtype_text(record.teacher_dtype, args.teacher_dtype)),
            ("compile", _compile_text(args.teacher_compile)),
            ("mixed precision", accelerator.mixed_precision),
        ],
    )

    result = run_teacher_pass(
        accelerator,
        TeacherCache(args.output_dir),
        record,
        setup.data.texts,
        lambda: load_teacher(args.teacher_name_or_path, dtype),
        setup.teacher_tokenizer,
        setup.hypotheses,
        setup.label_ids,
        args.teacher_batch_size,
        args.teacher_max_tokens,
        recompute=args.recompute_teacher,
        compile_choice=args.teacher_compile,
    )
    if result.pairs_scored:
        details = "" if result.padding_share is None else f", {result.padding_share:.1%} of tokens were padding"
        if result.compile_seconds is not None:
            details += f", and the first batch took {result.compile_seconds:.1f} s because it compiled the teacher"
        logger.info(
            f"Teacher pass: {result.pairs_scored:,} pairs scored in {result.seconds:.1f} s "
            f"({result.pairs_scored / result.seconds:,.1f} pairs/s){details}; predictions saved to "
            f"{Path(args.output_dir) / TEACHER_PREDICTIONS_FILE}"
        )
    accelerator.wait_for_everyone()
    return result


def _dtype_text(dtype: str, choice: str) -> str:
    return f"{dtype} (auto)" if choice == "auto" else dtype


def _compile_text(choice: str) -> str:
    if choice == "auto":
        return f"auto (torch.compile when {COMPILE_MIN_PAIRS:,} or more pairs are left to score)"
    return choice


def evaluate_teacher_on_eval_file(args: argparse.Namespace, accelerator: Accelerator, setup: RunSetup) -> dict | None:
    """Score the teacher on --eval_file and return its report, or None when no --eval_file was given.

    The teacher pass frees its teacher when it ends (and loads none when its predictions were saved before), so the
    teacher is loaded here on its own for the eval file and freed again.
    """
    if setup.eval_set is None:
        return None
    teacher = load_teacher(args.teacher_name_or_path, resolve_teacher_dtype(args.teacher_dtype, accelerator.device))
    report = evaluate_teacher_on(args, accelerator, teacher, setup)
    del teacher
    accelerator.free_memory()
    gc.collect()
    return report


def training_config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """Collect the optimization flags into a TrainingConfig."""
    return TrainingConfig(**{name: getattr(args, name) for name in TrainingConfig.__dataclass_fields__})


def run_training(
    args: argparse.Namespace, accelerator: Accelerator, setup: StudentSetup, soft_labels: torch.Tensor
) -> tuple[PreTrainedModel, list[EpochResult], int, float]:
    """Train the student on the soft labels; return it, its epochs, the number of held-out texts and the time."""
    set_seed(args.seed)
    config = training_config_from_args(args)
    train_indices, validation_indices = split_validation(setup.data.texts, args.validation_split, args.seed)
    training_setup = {
        **setup_from_inputs(
            args, setup.data.texts, len(train_indices), setup.class_names, setup.multi_label, setup.student_max_length
        ),
        # A resumed run reuses the saved teacher predictions, so its soft labels match bit for bit unless the teacher
        # pass was computed again.
        "soft_labels_sha256": sha256_of_tensor(soft_labels),
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
    }
    # check_inputs compared the other fields before the teacher pass. These three are known only now.
    resume = setup.resume_checkpoint
    if resume is not None:
        check_setup(resume, training_setup)

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
            (
                "checkpoints",
                describe_checkpointing(args.output_dir, config.checkpointing_steps, config.save_total_limit),
            ),
            ("resuming from", "no checkpoint" if resume is None else str(resume.path)),
        ],
    )
    start = time.perf_counter()
    student, epochs = train_student(
        accelerator,
        student,
        setup.student_tokenizer,
        train_set,
        validation_set,
        config,
        setup.multi_label,
        output_dir=Path(args.output_dir),
        setup=training_setup,
        resume=resume,
    )
    return student, epochs, len(validation_indices), time.perf_counter() - start


def save_student(
    args: argparse.Namespace,
    accelerator: Accelerator,
    setup: StudentSetup,
    student: PreTrainedModel,
    facts: ModelCardFacts,
    summary: dict,
) -> None:
    """Write the student, its tokenizer, the model card and the run summary from the main process alone."""
    # Every process waits here, so that no process still trains while the files are written.
    accelerator.wait_for_everyone()
    output_dir = Path(args.output_dir)
    # Every process calls get_state_dict, because under FSDP it gathers the shards of the weights from all of them.
    state_dict = accelerator.get_state_dict(student)
    unwrapped = accelerator.unwrap_model(student)
    unwrapped.save_pretrained(output_dir, is_main_process=accelerator.is_main_process, state_dict=state_dict)
    if accelerator.is_main_process:
        for weights_file in output_dir.glob("*.safetensors"):
            apply_umask(weights_file)
        setup.student_tokenizer.save_pretrained(output_dir)
        write_model_card(output_dir, facts)
        (output_dir / RUN_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()


def make_accelerator(args: argparse.Namespace) -> Accelerator:
    """Create the Accelerator, on the CPU when asked or when there is no accelerator, and check the process count.

    Half precision that would not take effect is rejected.
    """
    # `accelerate launch` starts several processes through torchrun without telling them to use the CPU. Accelerate
    # 1.16 then gives each process on a machine without an accelerator a single-process state of its own, so the
    # CPU is chosen here to make them join one gloo process group.
    cpu = args.cpu or not (torch.accelerator.is_available() or is_torch_xla_available())
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        cpu=cpu,
        gradient_accumulation_steps=getattr(args, "gradient_accumulation_steps", 1),
    )
    # torchrun sets WORLD_SIZE in every process it starts.
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise InputError(
            f"The launcher started {launched} processes (WORLD_SIZE={launched}), but Accelerate found no distributed "
            f"backend for the {accelerator.device.type} device and runs each process alone, so each would do the "
            f"whole job and write the same files. Pass --cpu to run the processes on the CPU, or launch one process."
        )
    # Only the main process logs, so that the messages of model loading are not repeated once per process.
    if not accelerator.is_main_process:
        transformers.utils.logging.set_verbosity_error()
    # Accelerate accepts fp16 on a CPU but runs in float32 there, which the plan would misreport.
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise InputError(
            "--mixed_precision fp16 has no effect on the CPU, which runs it in float32. Use --mixed_precision bf16 "
            "for half precision on the CPU, or run on a GPU."
        )
    return accelerator


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "accelerate": version("accelerate"),
    }


def train_and_save(
    args: argparse.Namespace,
    accelerator: Accelerator,
    setup: StudentSetup,
    soft_labels: torch.Tensor,
    teacher_name: str,
    hypothesis_template: str,
    command: str,
    teacher_summary: dict,
    teacher_eval_report: dict | None = None,
) -> dict:
    """Train the student on the soft labels, save it with its model card and run summary, and return the summary.

    `teacher_eval_report` is the teacher's report on --eval_file, stored in the summary beside the student's.
    """
    student, epochs, num_validation, training_seconds = run_training(args, accelerator, setup, soft_labels)
    student_eval_report = evaluate_student_on(args, accelerator, student, setup)

    agreement = epochs[-1].agreement if epochs else None
    facts = ModelCardFacts(
        teacher=teacher_name,
        student_base=args.student_name_or_path,
        hypothesis_template=hypothesis_template,
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
        "num_processes": accelerator.num_processes,
        **teacher_summary,
        "training_seconds": training_seconds,
        "epochs": [asdict(epoch) for epoch in epochs],
        "resumed_from": None if setup.resume_checkpoint is None else setup.resume_checkpoint.run_record(),
        "agreement": agreement,
        "evaluation": {"teacher": teacher_eval_report, "student": student_eval_report},
        "versions": _versions(),
    }
    save_student(args, accelerator, setup, student, facts, summary)
    return summary


def _agreement_text(agreement: float | None) -> str:
    return "not measured" if agreement is None else f"{agreement:.2%} of held-out decisions"


def _teacher_summary(result: TeacherPassResult) -> dict:
    return {
        "num_pairs": result.num_pairs,
        "teacher_pairs_scored": result.pairs_scored,
        "teacher_chunks_reused": result.chunks_reused,
        "teacher_seconds": result.seconds,
        "teacher_pairs_per_second": result.pairs_scored / result.seconds if result.pairs_scored else None,
        "teacher_padding_share": result.padding_share,
        "teacher_compiled": result.compiled,
        "teacher_compile_seconds": result.compile_seconds,
    }


def _teacher_pass_text(result: TeacherPassResult) -> str:
    if not result.pairs_scored:
        return f"reused from an earlier run ({result.num_pairs:,} pairs)"
    text = f"{result.seconds:.1f} s, {result.pairs_scored / result.seconds:,.1f} pairs/s"
    if result.compile_seconds is not None:
        text += f", including {result.compile_seconds:.1f} s for the first batch, which compiled the teacher"
    if result.chunks_reused:
        text += f", {result.chunks_reused} of {result.num_chunks} chunks reused"
    return text


def distill(args: argparse.Namespace, command: str) -> dict:
    """Run the whole job for parsed command-line arguments and return the summary written to zsdistill_run.json.

    `command` is the command line as the user typed it, recorded in the model card.
    """
    # Check every input before loading any model weights, so a mistake costs seconds.
    setup = check_inputs(args)
    accelerator = make_accelerator(args)
    set_seed(args.seed)

    teacher = run_teacher(args, accelerator, setup)
    teacher_eval_report = evaluate_teacher_on_eval_file(args, accelerator, setup)
    soft_labels = soft_labels_from_logits(teacher.logits, setup.multi_label, args.temperature)
    student_setup = StudentSetup(
        data=setup.data,
        class_names=setup.class_names,
        multi_label=setup.multi_label,
        student_tokenizer=setup.student_tokenizer,
        student_max_length=setup.student_max_length,
        resume_checkpoint=setup.resume_checkpoint,
        eval_set=setup.eval_set,
    )
    summary = train_and_save(
        args,
        accelerator,
        student_setup,
        soft_labels,
        args.teacher_name_or_path,
        args.hypothesis_template,
        command,
        _teacher_summary(teacher),
        teacher_eval_report,
    )
    student_eval_report = summary["evaluation"]["student"]
    if student_eval_report is not None:
        print_eval_file_summary(
            accelerator, args.eval_file, teacher_eval_report, student_eval_report, summary["agreement"]
        )
    print_table(
        accelerator,
        "Done",
        [
            ("teacher pass", _teacher_pass_text(teacher)),
            ("student training", f"{summary['training_seconds']:.1f} s"),
            ("agreement", _agreement_text(summary["agreement"])),
            ("student", str(args.output_dir)),
        ],
    )
    return summary


def teacher_only(args: argparse.Namespace, command: str) -> TeacherPassResult:
    """Run the teacher pass alone and save its logits into --output_dir, for `zsdistill train` to use."""
    setup = check_inputs(args, train=False)
    accelerator = make_accelerator(args)
    result = run_teacher(args, accelerator, setup)
    print_table(
        accelerator,
        "Done",
        [
            ("teacher pass", _teacher_pass_text(result)),
            ("predictions", str(Path(args.output_dir) / TEACHER_PREDICTIONS_FILE)),
            ("next", f"zsdistill train --teacher_predictions {args.output_dir} --data_file {args.data_file} ..."),
        ],
    )
    return result


@dataclass
class SavedPredictions:
    """Teacher predictions read from disk, with the record of what produced them."""

    path: Path
    record: dict


def _find_predictions_file(path: str | Path) -> Path:
    path = Path(path)
    candidate = path / TEACHER_PREDICTIONS_FILE if path.is_dir() else path
    if not candidate.is_file():
        partial = (path / "teacher_chunks").is_dir() if path.is_dir() else False
        hint = (
            " It holds an unfinished teacher pass: run `zsdistill teacher` again with the same arguments to finish it."
            if partial
            else " Run `zsdistill teacher` first, or give the --output_dir of a finished run."
        )
        raise InputError(f"--teacher_predictions {path}: no {TEACHER_PREDICTIONS_FILE} found.{hint}")
    return candidate


def check_train_inputs(args: argparse.Namespace) -> tuple[StudentSetup, SavedPredictions]:
    """Check the saved predictions against the data file and the student's config, loading no weights."""
    path = _find_predictions_file(args.teacher_predictions)
    try:
        record = read_predictions_metadata(path)
    except Exception as error:  # safetensors raises several error types for a file that is not its format.
        raise InputError(f"--teacher_predictions {path} cannot be read as teacher predictions: {error}") from None
    missing = [field for field in ("class_names", "texts_sha256", "num_texts", "teacher") if field not in record]
    if missing:
        raise InputError(
            f"--teacher_predictions {path} lacks the record of what produced it ({', '.join(missing)} missing). "
            f"Run `zsdistill teacher` again to write predictions with their record."
        )

    data = read_texts(args.data_file, args.text_column, header=not args.no_header)
    if hash_texts(data.texts) != record["texts_sha256"]:
        raise InputError(
            f"The texts of --data_file {args.data_file} ({len(data.texts):,} texts) differ from those the teacher "
            f"predictions in {path} were made for ({record['num_texts']:,} texts). Give the data file of that "
            f"teacher pass."
        )
    class_names = record["class_names"]
    multi_label = args.multi_label or len(class_names) == 1
    if multi_label and record.get("contradiction_id") is None:
        raise InputError(
            f"The teacher predictions in {path} have no contradiction logits, which --multi_label needs. Train "
            f"without --multi_label, or run the teacher again with --contradiction_id."
        )
    check_output_dir(
        args.output_dir,
        args.overwrite_output_dir,
        (args.student_name_or_path,),
        reusable=TEACHER_CACHE_ENTRIES,
        resuming=args.resume_from_checkpoint is not None,
    )
    student_config, student_tokenizer = load_config_and_tokenizer(args.student_name_or_path, "student")
    student_max_length = max_input_length(student_tokenizer, student_config, args.max_length)
    resume_checkpoint = find_resume_checkpoint(args, data.texts, class_names, multi_label, student_max_length)
    create_output_dir(args.output_dir)
    setup = StudentSetup(
        data=data,
        class_names=class_names,
        multi_label=multi_label,
        student_tokenizer=student_tokenizer,
        student_max_length=student_max_length,
        resume_checkpoint=resume_checkpoint,
    )
    return setup, SavedPredictions(path=path, record=record)


def train_only(args: argparse.Namespace, command: str) -> dict:
    """Train a student on saved teacher predictions, without loading the teacher."""
    setup, saved = check_train_inputs(args)
    accelerator = make_accelerator(args)
    set_seed(args.seed)
    logits, _ = load_teacher_predictions(saved.path)
    logger.info(f"Training on the teacher predictions in {saved.path} ({saved.record['teacher']})")
    soft_labels = soft_labels_from_logits(logits, setup.multi_label, args.temperature)
    summary = train_and_save(
        args,
        accelerator,
        setup,
        soft_labels,
        saved.record["teacher"],
        saved.record["hypothesis_template"],
        command,
        {"teacher_predictions": str(saved.path)},
    )
    print_table(
        accelerator,
        "Done",
        [
            ("teacher predictions", str(saved.path)),
            ("student training", f"{summary['training_seconds']:.1f} s"),
            ("agreement", _agreement_text(summary["agreement"])),
            ("student", str(args.output_dir)),
        ],
    )
    return summary
