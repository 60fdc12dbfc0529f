"""Training checkpoints: finding, checking, writing and deleting them under OUTPUT_DIR/checkpoints.

A checkpoint is a directory `step_{n}` containing what `Accelerator.save_state` writes after optimizer step n (weights,
optimizer, scheduler, random number generator states) and a JSON file with the loop's position and the training
setup. The JSON file is written last, so a directory without it is an interrupted save and is never resumed from.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from zsdistill.data import InputError

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "zsdistill_checkpoint.json"
STATE_FORMAT_VERSION = 1
LATEST = "latest"

_STEP_DIR = re.compile(r"step_(\d+)")

# The flags whose values a resumed run must share with the checkpoint, beyond the ones `setup_from_inputs` derives.
# The others (such as the batch size for agreement) leave the trained weights unchanged.
SETUP_FLAGS = (
    "student_name_or_path",
    "seed",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "learning_rate",
    "weight_decay",
    "warmup_ratio",
    "max_grad_norm",
)

# The name of each setup field in messages, so that a mismatch names the flag or input to change.
SETUP_FIELD_NAMES = {
    "student_name_or_path": "--student_name_or_path",
    "seed": "--seed",
    "per_device_train_batch_size": "--per_device_train_batch_size",
    "gradient_accumulation_steps": "--gradient_accumulation_steps",
    "num_train_epochs": "--num_train_epochs",
    "learning_rate": "--learning_rate",
    "weight_decay": "--weight_decay",
    "warmup_ratio": "--warmup_ratio",
    "max_grad_norm": "--max_grad_norm",
    "max_length": "the student's max length (--max_length)",
    "class_names": "the class names (--class_names_file)",
    "multi_label": "the mode (--multi_label)",
    "num_training_examples": "the number of training examples (--data_file, --validation_split)",
    "texts_sha256": "the texts of --data_file",
    "soft_labels_sha256": "the teacher's soft labels (teacher, --hypothesis_template, --temperature)",
    "num_processes": "the number of processes",
    "mixed_precision": "--mixed_precision",
}


@dataclass
class TrainingProgress:
    """The training loop's position at a checkpoint, and the results of the epochs finished before it.

    `batches_in_epoch` counts the batches of `epoch` that each process had trained on. The loss sum and count of an
    unfinished epoch are totals over all processes, so that its mean loss after resuming covers every batch.
    """

    optimizer_steps: int
    epoch: int
    batches_in_epoch: int
    epoch_finished: bool
    epoch_loss_sum: float = 0.0
    epoch_loss_count: float = 0.0
    epochs: list[dict] = field(default_factory=list)


@dataclass
class Checkpoint:
    """A complete checkpoint directory, the loop's position in it, and the setup it was trained with."""

    path: Path
    progress: TrainingProgress
    setup: dict

    def run_record(self) -> dict:
        """Return the entry that zsdistill_run.json stores for a run resumed from this checkpoint."""
        return {"checkpoint": str(self.path), "optimizer_steps": self.progress.optimizer_steps}


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def checkpoint_path(output_dir: str | Path, optimizer_steps: int) -> Path:
    return checkpoints_dir(output_dir) / f"step_{optimizer_steps}"


def describe_checkpointing(
    output_dir: str | Path, checkpointing_steps: int | str | None, save_total_limit: int | None
) -> str:
    """Describe when checkpoints are saved and which are kept, for the training plan."""
    if checkpointing_steps is None:
        return "none"
    if checkpointing_steps == "epoch":
        interval = "at the end of each epoch"
    elif checkpointing_steps == 1:
        interval = "after every optimizer step"
    else:
        interval = f"every {checkpointing_steps} optimizer steps"
    if save_total_limit is None:
        retention = "keeping all"
    elif save_total_limit == 0:
        retention = "keeping only the newest until training ends"
    else:
        retention = f"keeping the newest {save_total_limit}"
    return f"{interval} to {checkpoints_dir(output_dir)}, {retention}"


def list_step_dirs(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Return every `step_{n}` directory under OUTPUT_DIR/checkpoints, complete or not, sorted by step."""
    directory = checkpoints_dir(output_dir)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _STEP_DIR.fullmatch(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Return the complete checkpoints under OUTPUT_DIR/checkpoints, the oldest first."""
    return [(step, path) for step, path in list_step_dirs(output_dir) if (path / STATE_FILE).is_file()]


def find_checkpoint(value: str, output_dir: str | Path) -> Checkpoint:
    """Resolve `--resume_from_checkpoint` (a checkpoint directory or `latest`) and read the checkpoint.

    Raise InputError if there is none, or if the directory is not a complete checkpoint.
    """
    if value == LATEST:
        complete = list_checkpoints(output_dir)
        if not complete:
            raise InputError(
                f"--resume_from_checkpoint latest found no checkpoint in {checkpoints_dir(output_dir)}. "
                f"Start the run without --resume_from_checkpoint, with --checkpointing_steps to write checkpoints."
            )
        return read_checkpoint(complete[-1][1])

    path = Path(value)
    if not path.exists():
        raise InputError(
            f"--resume_from_checkpoint {path} not found. Give a checkpoint directory such as "
            f"{checkpoint_path(output_dir, 100)}, or `latest` for the newest one in {checkpoints_dir(output_dir)}."
        )
    if not (path / STATE_FILE).is_file():
        raise InputError(
            f"--resume_from_checkpoint {path} is not a complete zsdistill checkpoint: it has no {STATE_FILE}, which "
            f"is written last, so its save was interrupted or it is another directory. Give another step_N "
            f"directory, or `latest`."
        )
    return read_checkpoint(path)


# The files `Accelerator.save_state` writes for one model, optimizer and scheduler, besides one RNG file per process.
STATE_FILES = ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")


def read_checkpoint(path: Path) -> Checkpoint:
    missing = [name for name in STATE_FILES if not (path / name).is_file()]
    if missing:
        raise InputError(
            f"--resume_from_checkpoint {path} is incomplete: {', '.join(missing)} missing. Give another checkpoint, "
            f"or start the run without --resume_from_checkpoint."
        )
    state_file = path / STATE_FILE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if state.get("format_version") != STATE_FORMAT_VERSION:
            raise ValueError(f"format version {state.get('format_version')!r}, expected {STATE_FORMAT_VERSION}")
        progress = TrainingProgress(**state["progress"])
        setup = state["setup"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"--resume_from_checkpoint {path}: cannot read {state_file} ({error}). Give another checkpoint."
        ) from None
    return Checkpoint(path=path, progress=progress, setup=setup)


def write_progress(path: Path, progress: TrainingProgress, setup: dict) -> None:
    """Write the checkpoint's JSON file, through a temporary file so that a killed process leaves no partial one."""
    state = {"format_version": STATE_FORMAT_VERSION, "progress": asdict(progress), "setup": setup}
    temporary = path / f"{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path / STATE_FILE)


def delete_checkpoint(path: Path) -> None:
    # The JSON file goes first, so that a directory half deleted by a killed process no longer counts as complete.
    (path / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(path)


def delete_old_checkpoints(output_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest complete checkpoints and return the deleted directories."""
    complete = list_checkpoints(output_dir)
    old = [path for _, path in complete[: max(0, len(complete) - keep)]]
    for path in old:
        delete_checkpoint(path)
    return old


def sha256_of_texts(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\n")
    return digest.hexdigest()


def sha256_of_tensor(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def setup_from_inputs(
    args: argparse.Namespace,
    texts: list[str],
    num_training_examples: int,
    class_names: list[str],
    multi_label: bool,
    max_length: int,
) -> dict:
    """Return the part of the training setup that is known before the Accelerator is built and the teacher runs."""
    return {
        **{name: getattr(args, name) for name in SETUP_FLAGS},
        "max_length": max_length,
        "class_names": class_names,
        "multi_label": multi_label,
        "num_training_examples": num_training_examples,
        "texts_sha256": sha256_of_texts(texts),
    }


def check_setup(checkpoint: Checkpoint, current: dict) -> None:
    """Raise InputError naming every field of `current` whose value differs from the checkpoint's setup.

    A resumed run with another setup would train other weights than the run that wrote the checkpoint.
    """
    differences = []
    for name, value in current.items():
        saved = checkpoint.setup.get(name)
        if saved == value:
            continue
        label = SETUP_FIELD_NAMES.get(name, name)
        if name.endswith("_sha256"):
            differences.append(f"{label} differ")
        else:
            differences.append(f"{label} is {saved!r} in the checkpoint and {value!r} now")
    if differences:
        raise InputError(
            f"--resume_from_checkpoint {checkpoint.path} was saved with another training setup: "
            f"{'; '.join(differences)}. Resume with the checkpoint's setup, or start a new run without "
            f"--resume_from_checkpoint."
        )
