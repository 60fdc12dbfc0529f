"""The teacher's predictions on disk: raw logits per (example, class), saved in chunks as the pass runs.

A directory that holds a teacher pass contains:

- `teacher_predictions.json`, the record of what produced the predictions (teacher, template, classes, label ids,
  length limit, dtype and a hash of the texts), written before the first chunk;
- `teacher_chunks/chunk-NNNNNN.safetensors`, one file per finished chunk of distinct texts, while the pass runs;
- `teacher_predictions.safetensors`, the logits of every example in input order, once the pass is complete. Its
  metadata repeats the record, so the file can be used on its own.

Every file is written under a temporary name and renamed, so a file with its final name is always complete.
"""

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from zsdistill.teacher import TeacherLogits

TEACHER_PREDICTIONS_FILE = "teacher_predictions.safetensors"
TEACHER_RECORD_FILE = "teacher_predictions.json"
TEACHER_CHUNKS_DIR = "teacher_chunks"
# The entries of an output directory that a later run reuses instead of counting them as another run's files.
TEACHER_CACHE_ENTRIES = (TEACHER_PREDICTIONS_FILE, TEACHER_RECORD_FILE, TEACHER_CHUNKS_DIR)


@dataclass
class TeacherRecord:
    """The inputs and settings that produced a set of teacher predictions, and the layout of its chunks."""

    teacher: str
    teacher_revision: str | None
    hypothesis_template: str
    class_names: list[str]
    entailment_id: int
    contradiction_id: int | None
    max_length: int
    teacher_dtype: str
    mixed_precision: str
    texts_sha256: str
    num_texts: int
    num_unique_texts: int
    texts_per_chunk: int


# The record's fields that change the logits, as messages name them. A difference in any of them means the saved
# predictions answer another question.
_COMPARED_FIELDS = {
    "teacher": "teacher",
    "teacher_revision": "teacher revision",
    "hypothesis_template": "hypothesis template",
    "class_names": "class names",
    "entailment_id": "entailment id",
    "contradiction_id": "contradiction id",
    "max_length": "max length",
    "teacher_dtype": "teacher dtype",
    "mixed_precision": "mixed precision",
    "texts_sha256": "texts of the data file",
}


def hash_texts(texts: list[str]) -> str:
    """Return the SHA-256 of the texts as read, each prefixed with its length so that no two lists collide."""
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


def record_differences(saved: dict, current: TeacherRecord) -> list[str]:
    """List, in words, each field that changes the logits and differs between a saved record and the current one."""
    differences = []
    for field, name in _COMPARED_FIELDS.items():
        before, now = saved.get(field), getattr(current, field)
        if before == now:
            continue
        if field == "texts_sha256":
            differences.append(
                f"the {name} ({saved.get('num_texts')} texts then, {current.num_texts} now, and their SHA-256 differs)"
            )
        else:
            differences.append(f"the {name} ({before!r} then, {now!r} now)")
    return differences


class TeacherCache:
    """The teacher-pass files of one directory."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.record_path = self.directory / TEACHER_RECORD_FILE
        self.predictions_path = self.directory / TEACHER_PREDICTIONS_FILE
        self.chunks_dir = self.directory / TEACHER_CHUNKS_DIR

    def read_record(self) -> dict | None:
        """Return the saved record, or None when there is none or it cannot be read."""
        try:
            return json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_record(self, record: TeacherRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.record_path.with_name(self.record_path.name + ".tmp")
        temporary.write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
        temporary.replace(self.record_path)

    def clear(self) -> None:
        """Delete the record, the chunks and the final predictions."""
        self.record_path.unlink(missing_ok=True)
        self.predictions_path.unlink(missing_ok=True)
        shutil.rmtree(self.chunks_dir, ignore_errors=True)

    def chunk_path(self, index: int) -> Path:
        return self.chunks_dir / f"chunk-{index:06d}.safetensors"

    def write_chunk(self, index: int, logits: torch.Tensor) -> None:
        """Save one chunk's logits, shape (texts in the chunk, K, C)."""
        self.chunks_dir.mkdir(parents=True, exist_ok=True)
        path = self.chunk_path(index)
        temporary = path.with_name(path.name + ".tmp")
        save_file({"logits": logits.contiguous()}, temporary)
        temporary.replace(path)

    def read_chunk(self, index: int) -> torch.Tensor:
        with safe_open(str(self.chunk_path(index)), framework="pt") as handle:
            return handle.get_tensor("logits")

    def finished_chunks(self, expected_shapes: list[tuple[int, ...]]) -> list[int]:
        """Return the indices of the chunks on disk that are readable and have the expected shape.

        A temporary file left by an interrupted write has another name and is never counted.
        """
        finished = []
        for index, shape in enumerate(expected_shapes):
            try:
                with safe_open(str(self.chunk_path(index)), framework="pt") as handle:
                    if tuple(handle.get_slice("logits").get_shape()) == shape:
                        finished.append(index)
            except (OSError, SafetensorError):
                continue
        return finished

    def remove_chunks(self) -> None:
        shutil.rmtree(self.chunks_dir, ignore_errors=True)


def save_teacher_predictions(path: str | Path, logits: TeacherLogits, record: TeacherRecord | dict) -> None:
    """Write the logits of every example, with the record stored in the file's metadata as JSON strings."""
    path = Path(path)
    tensors = {"entailment_logits": logits.entailment}
    if logits.contradiction is not None:
        tensors["contradiction_logits"] = logits.contradiction
    metadata = asdict(record) if isinstance(record, TeacherRecord) else record
    temporary = path.with_name(path.name + ".tmp")
    save_file(tensors, temporary, metadata={key: json.dumps(value) for key, value in metadata.items()})
    temporary.replace(path)
    apply_umask(path)


def read_predictions_metadata(path: str | Path) -> dict[str, object]:
    """Read the record stored in a predictions file without loading its tensors."""
    with safe_open(str(path), framework="pt") as handle:
        return {key: json.loads(value) for key, value in (handle.metadata() or {}).items()}


def load_teacher_predictions(path: str | Path) -> tuple[TeacherLogits, dict[str, object]]:
    """Read a file written by save_teacher_predictions: the logits and the record."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = {key: json.loads(value) for key, value in (handle.metadata() or {}).items()}
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    logits = TeacherLogits(entailment=tensors["entailment_logits"], contradiction=tensors.get("contradiction_logits"))
    return logits, metadata


def apply_umask(path: str | Path) -> None:
    """Give a file the permissions that the process's umask grants new files.

    safetensors creates its files readable by their owner alone, unlike the other files of an output directory.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
