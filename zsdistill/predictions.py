"""The teacher's predictions on disk: raw logits and soft labels, one row per example, in a safetensors file."""

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zsdistill.teacher import TeacherLogits

TEACHER_PREDICTIONS_FILE = "teacher_predictions.safetensors"


def save_teacher_predictions(
    path: str | Path, logits: TeacherLogits, soft_labels: torch.Tensor, metadata: dict[str, object]
) -> None:
    """Write the logits and soft labels, with `metadata` (such as the class names) stored as JSON strings.

    The file is written under a temporary name and renamed, so a file with the final name is always complete.
    """
    path = Path(path)
    tensors = {"entailment_logits": logits.entailment, "soft_labels": soft_labels}
    if logits.contradiction is not None:
        tensors["contradiction_logits"] = logits.contradiction
    temporary = path.with_name(path.name + ".tmp")
    save_file(tensors, temporary, metadata={key: json.dumps(value) for key, value in metadata.items()})
    temporary.replace(path)
    apply_umask(path)


def apply_umask(path: str | Path) -> None:
    """Give a file the permissions that the process's umask grants new files.

    safetensors creates its files readable by their owner alone, unlike the other files of an output directory.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_teacher_predictions(path: str | Path) -> tuple[TeacherLogits, torch.Tensor, dict[str, object]]:
    """Read a file written by save_teacher_predictions: the logits, the soft labels and the metadata."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = {key: json.loads(value) for key, value in (handle.metadata() or {}).items()}
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    logits = TeacherLogits(entailment=tensors["entailment_logits"], contradiction=tensors.get("contradiction_logits"))
    return logits, tensors["soft_labels"], metadata
