"""Gold labels of a labeled data file as class indices, read from class names or from integer class ids."""

import json
import re

import torch

from zsdistill.data import InputError, TextFile

_INTEGER = re.compile(r"[+-]?\d+")
_MAX_NAMES_SHOWN = 10


class _LabelMap:
    """The mapping from a label value to a class index: by class name first, else by integer id from `first_id`."""

    def __init__(self, data: TextFile, class_names: list[str], first_id: int, label_option: str):
        self.path = data.path
        self.class_names = class_names
        self.index_of_name = {name: index for index, name in enumerate(class_names)}
        self.first_id = first_id
        self.label_option = label_option

    def index(self, value: object, row: int) -> int:
        if isinstance(value, str):
            label = value.strip()
            if label in self.index_of_name:
                return self.index_of_name[label]
            if not _INTEGER.fullmatch(label):
                raise self.unknown(value, row)
            class_id = int(label)
        elif isinstance(value, int) and not isinstance(value, bool):
            class_id = value
        else:
            raise InputError(
                f"The label on row {row} of {self.path} is the JSON value {json.dumps(value)}. A label must be a "
                f"class name (a string) or an integer class id."
            )
        if not 0 <= class_id - self.first_id < len(self.class_names):
            raise self.unknown(value, row)
        return class_id - self.first_id

    def unknown(self, value: object, row: int) -> InputError:
        names = ", ".join(repr(name) for name in self.class_names[:_MAX_NAMES_SHOWN])
        if len(self.class_names) > _MAX_NAMES_SHOWN:
            names += f" and {len(self.class_names) - _MAX_NAMES_SHOWN} more"
        last_id = self.first_id + len(self.class_names) - 1
        message = (
            f"Unknown label {value!r} on row {row} of {self.path}. A label must be one of the class names ({names}) "
            f"or an integer class id from {self.first_id} to {last_id}."
        )
        if str(value).strip() == str(last_id + 1) and self.first_id == 0:
            message += " If the ids in the file count from 1, pass --first_label_id 1."
        return InputError(message)

    def missing(self, row: int) -> InputError:
        return InputError(
            f"Row {row} of {self.path} has a text but no label in {self.label_option}. Give every row with a text "
            f"a label, or remove the row."
        )


def read_gold_labels(
    data: TextFile,
    class_names: list[str],
    multi_label: bool,
    first_label_id: int = 0,
    label_option: str = "--label_column",
) -> torch.Tensor:
    """Return the gold labels of `data.labels` as class indices, or raise InputError naming the first bad label.

    A label is a class name, matched exactly after stripping surrounding whitespace, or else an integer id into
    `class_names` that counts from `first_label_id`. Single-label: a tensor of shape (N,) with one class index per
    row. Multi-label: a tensor of shape (N, K) with 1 for each class that applies. A multi-label row contains a JSON
    list of labels, or a string of labels separated by commas (an empty string applies no class). A single label is
    a list of one.
    """
    if data.labels is None:
        raise ValueError("the data file was read without a label column")
    label_map = _LabelMap(data, class_names, first_label_id, label_option)
    rows = zip(data.labels, data.row_numbers, strict=True)
    if not multi_label:
        return torch.tensor([_single_label(label_map, value, row) for value, row in rows], dtype=torch.long)

    gold = torch.zeros(len(data.labels), len(class_names), dtype=torch.long)
    for position, (value, row) in enumerate(rows):
        for label in _label_list(label_map, value, row):
            gold[position, label_map.index(label, row)] = 1
    return gold


def _single_label(label_map: _LabelMap, value: object, row: int) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise label_map.missing(row)
    if isinstance(value, list):
        raise InputError(
            f"Row {row} of {label_map.path} has a list of labels, {json.dumps(value)}, but the classifier is "
            f"single-label and takes one label per row. Give one label, or evaluate a multi-label model."
        )
    return label_map.index(value, row)


def _label_list(label_map: _LabelMap, value: object, row: int) -> list[object]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        return [value]

    text = value.strip()
    # A class name may itself contain a comma, so a whole-name match comes before splitting.
    if text in label_map.index_of_name:
        return [text]
    if text.startswith("["):
        try:
            labels = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(
                f"The labels {value!r} on row {row} of {label_map.path} start with '[' but are not a valid JSON "
                f'list ({error.msg}). Write them as a JSON list, such as ["sports", "business"], or separate '
                f"them with commas."
            ) from None
        if not isinstance(labels, list):
            raise InputError(f"The labels {value!r} on row {row} of {label_map.path} are not a JSON list.")
        return labels
    return [label for label in (part.strip() for part in text.split(",")) if label]
