"""Command line: `zsdistill`, `python -m zsdistill` and `accelerate launch -m zsdistill`."""

import argparse
import atexit
import importlib
import logging
import math
import os
import shlex
import sys

from zsdistill.allocator import keep_freed_memory
from zsdistill.data import InputError

DEFAULT_TEACHER = "roberta-large-mnli"
DEFAULT_STUDENT = "distilbert-base-uncased"
DEFAULT_TEMPLATE = "This example is {}."
MIN_TEMPERATURE = 1e-6
TEACHER_DTYPES = ["auto", "float32", "bfloat16", "float16"]
TEACHER_COMPILE_CHOICES = ["auto", "yes", "no"]
# With --teacher_compile auto, a pass with at least this many pairs left to score compiles the teacher. Compiling the
# offline MiniLM teacher takes 8 to 15 s on 2 CPU cores and then saves about 0.3 ms per pair in bfloat16, so it pays
# from about 30,000 to 50,000 pairs.
# NOTE: measured on that CPU only. On GPUs and for larger teachers, where compiling pays, is not measured.
COMPILE_MIN_PAIRS = 50_000


def _parse_number(text: str, kind: type) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None


def _positive_int(text: str) -> int:
    value = _parse_number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _seed(text: str) -> int:
    value = _parse_number(text, int)
    # numpy, which set_seed also seeds, takes seeds from 0 to 2**32 - 1.
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {2**32 - 1}, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _parse_number(text, float)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _parse_number(text, float)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be zero or a positive finite number, got {text}")
    return value


def _temperature(text: str) -> float:
    value = _positive_float(text)
    # Logits divided by a smaller value can overflow float32, and 0.01 already gives nearly one-hot soft labels.
    if value < MIN_TEMPERATURE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_TEMPERATURE:g}, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _parse_number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def _checkpointing_steps(text: str) -> int | str:
    if text == "epoch":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'epoch', got {text!r}") from None


def _non_negative_int(text: str) -> int:
    value = _parse_number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive integer, got {text}")
    return value


def _directory(text: str) -> str:
    # An empty path would mean the current directory, whose files a run would write over.
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a directory path, got an empty string")
    return text


def _label_index(text: str) -> int:
    return _parse_number(text, int)


def _threshold(text: str) -> float:
    value = _parse_number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text}")
    return value


class _DeprecatedMultiClass(argparse.Action):
    """`--multi_class`, the original script's name for `--multi_label`."""

    def __call__(self, parser, namespace, values, option_string=None):
        print("zsdistill: warning: --multi_class is deprecated, use --multi_label instead", file=sys.stderr)
        namespace.multi_label = True


class _Fp16Alias(argparse.Action):
    """`--fp16`, the TrainingArguments name for `--mixed_precision fp16`."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.mixed_precision = "fp16"


def add_data_arguments(
    parser: argparse.ArgumentParser, class_names_file: bool = True, labeled: bool = False, contents: str = "unlabeled"
) -> None:
    group = parser.add_argument_group("inputs")
    group.add_argument(
        "--data_file",
        required=True,
        help=f"UTF-8 file of {contents} texts: .txt with one text per line, or .csv, .tsv or .jsonl with the text in "
        "--text_column; rows with an empty text are skipped",
    )
    add_column_arguments(group)
    if labeled:
        group.add_argument(
            "--label_column",
            required=True,
            help="column of the gold labels, given as --text_column is. A label is a class name or, failing that, an "
            "integer class id counted from --first_label_id. A multi-label model takes a list per row: a JSON list, "
            "or labels separated by commas",
        )
        add_first_label_id_argument(group)
    if class_names_file:
        group.add_argument("--class_names_file", required=True, help="UTF-8 text file with one class name per line")


def add_column_arguments(group: argparse._ArgumentGroup, prefix: str = "", file_option: str = "--data_file") -> None:
    group.add_argument(
        f"--{prefix}text_column",
        default=None,
        help=f"column of the text in a .csv, .tsv or .jsonl {file_option}: a name from the header row, or with "
        f"--{prefix}no_header a 0-based index. Several columns separated by commas, such as title,description, are "
        f"joined with a space (default: text)",
    )
    group.add_argument(
        f"--{prefix}no_header",
        action="store_true",
        help=f"the .csv or .tsv {file_option} has no header row: its first row is data, and its columns are given as "
        f"0-based indices",
    )


def add_first_label_id_argument(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--first_label_id",
        type=_label_index,
        default=0,
        help="id of the first class for integer labels: 0 when the ids count from 0, 1 when they count from 1 "
        "(default: 0)",
    )


def add_eval_file_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation on labeled texts")
    group.add_argument(
        "--eval_file",
        default=None,
        help="labeled .csv, .tsv or .jsonl file; after training, the teacher's and the student's accuracy on it are "
        "reported beside the agreement (default: none)",
    )
    add_column_arguments(group, prefix="eval_", file_option="--eval_file")
    group.add_argument(
        "--eval_label_column",
        default=None,
        help="column of the --eval_file's gold labels, given as --eval_text_column is. A label is a class name or, "
        "failing that, an integer class id counted from --first_label_id; a multi-label row contains a JSON list or "
        "labels separated by commas",
    )
    add_first_label_id_argument(group)


def add_output_arguments(parser: argparse.ArgumentParser, contents: str) -> None:
    group = parser.add_argument_group("outputs")
    group.add_argument("--output_dir", type=_directory, required=True, help=f"directory for {contents}")
    group.add_argument(
        "--overwrite_output_dir", action="store_true", help="write into --output_dir even if it already contains files"
    )


def add_teacher_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("teacher")
    group.add_argument(
        "--teacher_name_or_path",
        default=DEFAULT_TEACHER,
        help=f"NLI model, Hub name or local path (default: {DEFAULT_TEACHER})",
    )
    group.add_argument(
        "--hypothesis_template",
        default=DEFAULT_TEMPLATE,
        help=f"hypothesis with one {{}} for the class name (default: {DEFAULT_TEMPLATE!r})",
    )
    group.add_argument(
        "--teacher_batch_size",
        type=_positive_int,
        default=32,
        help="(text, hypothesis) pairs per teacher forward pass, per process (default: 32)",
    )
    group.add_argument(
        "--teacher_max_tokens",
        type=_positive_int,
        default=None,
        help="also cap each teacher batch at this many tokens after padding, so that batches of long texts hold "
        "fewer pairs (default: no cap)",
    )
    group.add_argument(
        "--teacher_dtype",
        choices=TEACHER_DTYPES,
        default="auto",
        help="dtype of the teacher's weights; auto is bfloat16 on GPUs and CPUs that support it, else float32 "
        "(default: auto)",
    )
    group.add_argument(
        "--teacher_compile",
        choices=TEACHER_COMPILE_CHOICES,
        default="auto",
        help="compile the teacher with torch.compile, which takes a while once and then runs each batch faster; "
        f"auto compiles when {COMPILE_MIN_PAIRS:,} or more pairs are left to score (default: auto)",
    )
    group.add_argument(
        "--teacher_chunk_size",
        type=_positive_int,
        default=16384,
        help="pairs per chunk of the teacher pass: each chunk is sorted by length and saved when it finishes, so an "
        "interrupted pass resumes after its last chunk (default: 16384)",
    )
    group.add_argument(
        "--recompute_teacher",
        action="store_true",
        help="discard teacher predictions in --output_dir that were made for other inputs, instead of stopping",
    )
    group.add_argument(
        "--entailment_id",
        type=_label_index,
        default=None,
        help="index of the teacher's entailment logit (default: found by name in the teacher's config)",
    )
    group.add_argument(
        "--contradiction_id",
        type=_label_index,
        default=None,
        help="index of the logit entailment is contrasted with in multi-label mode (default: found by name)",
    )


def add_soft_label_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("soft labels")
    group.add_argument(
        "--multi_label",
        action="store_true",
        help="classes are independent: score each class as entailment against contradiction, train with a sigmoid",
    )
    group.add_argument(
        "--multi_class",
        nargs=0,
        action=_DeprecatedMultiClass,
        default=argparse.SUPPRESS,
        help="deprecated alias of --multi_label",
    )
    group.add_argument(
        "--temperature",
        type=_temperature,
        default=1.0,
        help="divides the teacher's logits before the softmax, at least 1e-6; above 1 smooths the soft labels "
        "(default: 1.0)",
    )


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("student training")
    group.add_argument(
        "--student_name_or_path",
        default=DEFAULT_STUDENT,
        help=f"model to train, Hub name or local path; gets a new K-way head (default: {DEFAULT_STUDENT})",
    )
    group.add_argument(
        "--per_device_train_batch_size",
        type=_positive_int,
        default=32,
        help="texts per step, per process (default: 32)",
    )
    group.add_argument(
        "--per_device_eval_batch_size",
        type=_positive_int,
        default=128,
        help="texts per agreement batch, per process (default: 128)",
    )
    group.add_argument(
        "--learning_rate", type=_positive_float, default=5e-5, help="peak AdamW learning rate (default: 5e-5)"
    )
    group.add_argument(
        "--weight_decay",
        type=_non_negative_float,
        default=0.01,
        help="AdamW weight decay on weight matrices (default: 0.01)",
    )
    group.add_argument(
        "--num_train_epochs",
        type=_positive_float,
        default=3.0,
        help="passes over the texts; may be fractional (default: 3)",
    )
    group.add_argument(
        "--warmup_ratio",
        type=_fraction,
        default=0.1,
        help="share of the optimizer steps with linearly rising learning rate (default: 0.1)",
    )
    group.add_argument(
        "--gradient_accumulation_steps",
        type=_positive_int,
        default=1,
        help="batches whose gradients are summed before each optimizer step (default: 1)",
    )
    group.add_argument(
        "--max_grad_norm",
        type=_non_negative_float,
        default=1.0,
        help="gradient clipping norm, 0 to disable (default: 1.0)",
    )
    group.add_argument(
        "--validation_split",
        type=_fraction,
        default=0.05,
        help="share of the texts held out to measure agreement with the teacher (default: 0.05)",
    )
    group.add_argument(
        "--seed", type=_seed, default=42, help="seed for the head's initialization, split and shuffling (default: 42)"
    )
    group.add_argument(
        "--checkpointing_steps",
        type=_checkpointing_steps,
        default=None,
        help="save the training state to OUTPUT_DIR/checkpoints/step_N every this many optimizer steps, or at the "
        "end of each epoch with 'epoch' (default: no checkpoints)",
    )
    group.add_argument(
        "--resume_from_checkpoint",
        default=None,
        metavar="PATH",
        help="continue training from a checkpoint directory, or from the newest one in OUTPUT_DIR/checkpoints with "
        "'latest'; the other training flags must match the checkpoint's (default: start from the student)",
    )
    group.add_argument(
        "--save_total_limit",
        type=_non_negative_int,
        default=None,
        help="keep only the N newest checkpoints; 0 keeps only the newest while training runs and deletes it when "
        "training ends (default: keep all, also after the run)",
    )


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument(
        "--max_length",
        type=_positive_int,
        default=None,
        help="max tokens per teacher pair and per student text; texts are truncated (default: each model's limit)",
    )
    group.add_argument(
        "--mixed_precision",
        choices=["no", "fp16", "bf16"],
        default=None,
        help="autocast for the teacher pass and training (default: the accelerate config's, else no)",
    )
    group.add_argument(
        "--fp16", nargs=0, action=_Fp16Alias, default=argparse.SUPPRESS, help="alias of --mixed_precision fp16"
    )
    group.add_argument("--cpu", action="store_true", help="run on the CPU even if an accelerator is available")


DESCRIPTION = (
    "Distill a zero-shot NLI classifier into a fast student: the teacher scores every (text, class) pair of the "
    "unlabeled texts, and the student learns its soft labels, answering in one pass per text."
)
EPILOG = """\
subcommands:
  zsdistill teacher ...   run the teacher pass only and save its predictions
  zsdistill train ...     train a student from saved teacher predictions, without loading the teacher
  zsdistill evaluate ...  score a student or a zero-shot teacher against gold labels
  zsdistill predict ...   write a student's predictions for every text of a data file
  Run `zsdistill SUBCOMMAND --help` for the flags of each.

Run on several processes or machines with `accelerate launch -m zsdistill ...`."""


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of the plain command, which runs the teacher pass and the student's training in one go."""
    parser = argparse.ArgumentParser(
        prog="zsdistill",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_arguments(parser)
    add_output_arguments(parser, "the student, its tokenizer, model card and the teacher's predictions")
    add_teacher_arguments(parser)
    add_soft_label_arguments(parser)
    add_training_arguments(parser)
    add_eval_file_arguments(parser)
    add_runtime_arguments(parser)
    return parser


def build_teacher_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsdistill teacher",
        description="Run the teacher over every (text, class) pair and save its logits, to train students later.",
    )
    add_data_arguments(parser)
    add_output_arguments(parser, "the teacher's predictions")
    add_teacher_arguments(parser)
    add_runtime_arguments(parser)
    return parser


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsdistill train",
        description="Train a student on the predictions saved by `zsdistill teacher` or a full run, without loading "
        "the teacher. The classes and the template are those the predictions were made with.",
    )
    parser.add_argument(
        "--teacher_predictions",
        required=True,
        help="directory that contains teacher_predictions.safetensors, or the path of that file",
    )
    add_data_arguments(parser, class_names_file=False)
    add_output_arguments(parser, "the student, its tokenizer and model card")
    add_soft_label_arguments(parser)
    add_training_arguments(parser)
    add_runtime_arguments(parser)
    return parser


def build_evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsdistill evaluate",
        description="Score a trained classifier (--model), or a zero-shot NLI teacher (--teacher_name_or_path), "
        "against the gold labels of a data file: accuracy, macro-F1, per-class precision, recall and F1, and the "
        "confusion matrix; micro- and macro-F1 for a multi-label model.",
    )
    add_data_arguments(parser, class_names_file=False, labeled=True, contents="labeled")
    group = parser.add_argument_group("model")
    choice = group.add_mutually_exclusive_group(required=True)
    choice.add_argument(
        "--model",
        help="trained sequence classifier, such as a zsdistill student: local directory or Hub name; the classes are "
        "its config's id2label",
    )
    choice.add_argument(
        "--teacher_name_or_path",
        help="NLI model to score as a zero-shot classifier, with --class_names_file and --hypothesis_template",
    )
    group.add_argument(
        "--per_device_eval_batch_size",
        type=_positive_int,
        default=128,
        help="texts per forward pass of --model, per process (default: 128)",
    )

    teacher = parser.add_argument_group("zero-shot teacher")
    teacher.add_argument("--class_names_file", help="UTF-8 text file with one class name per line")
    teacher.add_argument(
        "--hypothesis_template",
        default=None,
        help=f"hypothesis with one {{}} for the class name (default: {DEFAULT_TEMPLATE!r})",
    )
    teacher.add_argument(
        "--multi_label",
        action="store_true",
        help="classes are independent: score each class as entailment against contradiction",
    )
    teacher.add_argument(
        "--teacher_batch_size",
        type=_positive_int,
        default=32,
        help="(text, hypothesis) pairs per teacher forward pass, per process (default: 32)",
    )
    teacher.add_argument(
        "--teacher_max_tokens",
        type=_positive_int,
        default=None,
        help="also cap each teacher batch at this many tokens after padding (default: no cap)",
    )
    teacher.add_argument(
        "--teacher_dtype",
        choices=TEACHER_DTYPES,
        default=None,
        help="dtype of the teacher's weights; auto is bfloat16 on GPUs and CPUs that support it, else float32 "
        "(default: auto)",
    )
    teacher.add_argument(
        "--entailment_id", type=_label_index, default=None, help="index of the teacher's entailment logit"
    )
    teacher.add_argument(
        "--contradiction_id", type=_label_index, default=None, help="index of the teacher's contradiction logit"
    )

    outputs = parser.add_argument_group("outputs")
    outputs.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="for multi-label models: a class is predicted when its score is at least this (default: 0.5)",
    )
    outputs.add_argument(
        "--output_file", default=None, help="JSON file for the report, replaced if it exists (default: none)"
    )
    add_runtime_arguments(parser)
    return parser


def build_predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsdistill predict",
        description="Write a trained classifier's predictions for the texts of a data file, one JSON object per "
        'line in input order: {"row": 3, "label": "sports", "labels": ["sports"], "scores": {"sports": 0.91, ...}}. '
        "`row` is the text's row number in the data file, counting from 1: a line of a .txt or .jsonl file, or a "
        "record after the header of a .csv or .tsv file. Rows with an empty text get no line. `scores` contains every "
        "class's score (softmax, or a sigmoid per class for a multi-label model), rounded to 6 decimals.",
    )
    add_data_arguments(parser, class_names_file=False, contents="the")
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        required=True,
        help="trained sequence classifier, such as a zsdistill student: local directory or Hub name",
    )
    group.add_argument(
        "--per_device_eval_batch_size",
        type=_positive_int,
        default=128,
        help="texts per forward pass, per process (default: 128)",
    )
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument(
        "--output_file", required=True, help="JSON lines file for the predictions, replaced if it exists"
    )
    outputs.add_argument(
        "--top_k",
        type=_positive_int,
        default=None,
        help="number of best classes in `labels` (default: 1; for a multi-label model, every class at --threshold)",
    )
    outputs.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="for multi-label models: `labels` lists the classes whose score is at least this (default: 0.5)",
    )
    add_runtime_arguments(parser)
    return parser


# Each subcommand's parser and the function that runs it: a name in zsdistill.distill, or "module:function". The
# plain command is "distill".
COMMANDS = {
    "distill": (build_parser, "distill"),
    "teacher": (build_teacher_parser, "teacher_only"),
    "train": (build_train_parser, "train_only"),
    "evaluate": (build_evaluate_parser, "zsdistill.evaluation:evaluate_command"),
    "predict": (build_predict_parser, "zsdistill.inference:predict_command"),
}


def _configure_logging() -> None:
    import transformers
    from rich.logging import RichHandler

    from zsdistill.progress import console

    # zsdistill draws its own progress bars; transformers' bars for loading and saving weights would interleave.
    transformers.utils.logging.disable_progress_bar()
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False)],
    )


def _launcher() -> str:
    """Return how the command was started, as the user would type it again."""
    # `accelerate launch` sets this variable for every process it starts.
    if "ACCELERATE_DYNAMO_BACKEND" in os.environ:
        return "accelerate launch -m zsdistill"
    if sys.argv and sys.argv[0].endswith("__main__.py"):
        return "python -m zsdistill"
    return "zsdistill"


def _destroy_process_group() -> None:
    """Destroy the default process group if the command set one up."""
    # Looked up rather than imported, so that `--help` does not load torch.
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the plain command or a subcommand.

    Return the exit status: 0 on success, 2 for invalid input, 1 when the teacher's logits or the training loss are
    not finite, and 130 after Ctrl-C.
    """
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in COMMANDS:
        name, rest = argv[0], argv[1:]
    elif argv and not argv[0].startswith("-"):
        print(
            f"zsdistill: error: unknown subcommand {argv[0]!r}. Choose one of {', '.join(COMMANDS)}, or give the "
            f"plain command's flags (see zsdistill --help).",
            file=sys.stderr,
        )
        return 2
    else:
        name, rest = "distill", argv
    build, runner_name = COMMANDS[name]
    args = build().parse_args(rest)
    _configure_logging()

    # Imported here so that `--help` and argument errors return before torch and transformers load.
    module_name, _, function_name = runner_name.rpartition(":")
    runner = getattr(importlib.import_module(module_name or "zsdistill.distill"), function_name)
    # Each batch then reuses the memory that the previous one freed instead of faulting in fresh pages.
    keep_freed_memory()
    # A gloo process group left to the interpreter's shutdown can abort the process (SIGABRT) after the job is done,
    # when its threads free tensors once Python is gone. The group is kept until exit, rather than destroyed on
    # return, because a process can run several jobs in a row on the same Accelerate state.
    atexit.unregister(_destroy_process_group)
    atexit.register(_destroy_process_group)
    try:
        runner(args, command=f"{_launcher()} {shlex.join(argv)}")
    except InputError as error:
        print(f"zsdistill: error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"zsdistill: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("zsdistill: interrupted", file=sys.stderr)
        return 130
    return 0
