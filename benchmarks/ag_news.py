"""Read the AG News files that the benchmarks use: the official test split and two samples of the train split.

Formats, as stored in the data folder:
- `test.csv`: no header, columns class (1 to 4), title, description, every field quoted.
- `train_subset_5000.csv`: no header, columns text (title, a space, description), label (0 to 3).
- `train_subset_8000_desc.csv`: header `label,content`, label 1 to 4, content the description alone.

AG News escapes a line break inside a field as a backslash, which is read here as a space.
"""

import csv
import re
from dataclasses import dataclass
from pathlib import Path

# Label order of AG News (classes.txt): World, Sports, Business, Sci/Tech.
LABEL_NAMES = ["World", "Sports", "Business", "Sci/Tech"]
TEST_FILE = "test.csv"
TRAIN_FILES = ("train_subset_5000.csv", "train_subset_8000_desc.csv")


@dataclass
class LabeledTexts:
    """Texts with their 0-based labels."""

    texts: list[str]
    labels: list[int]


@dataclass
class UnlabeledTrainTexts:
    """The train samples' texts without labels, with the counts of what was dropped and why."""

    texts: list[str]
    num_rows: int
    num_duplicates: int
    num_in_test_split: int


def normalize_text(text: str) -> str:
    """Replace AG News's backslash line breaks with spaces and collapse runs of whitespace."""
    return " ".join(text.replace("\\", " ").split())


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"AG News file not found: {path}. Pass --data_dir with the folder that contains it.")
    return path


def read_test_split(data_dir: Path) -> LabeledTexts:
    """Read the test split as title and description joined by a space, with 0-based labels."""
    texts, labels = [], []
    with _require_file(data_dir / TEST_FILE).open(newline="", encoding="utf-8") as file:
        for label, title, description in csv.reader(file):
            texts.append(normalize_text(f"{title} {description}"))
            labels.append(int(label) - 1)
    return LabeledTexts(texts=texts, labels=labels)


def _text_suffixes(text: str) -> list[str]:
    """Return the text and every tail of it that starts after a space."""
    return [text] + [text[match.end() :] for match in re.finditer(" ", text)]


def read_unlabeled_train_texts(data_dir: Path, test_texts: list[str]) -> UnlabeledTrainTexts:
    """Read the texts of both train samples, drop their labels, and remove repeated articles and test texts.

    The 8,000-row sample contains descriptions alone, so one of its texts repeats an article of the 5,000-row sample
    when it equals the end of that sample's title-and-description text. A train text that equals a test text, or
    the end of one, is removed as well, so that the student never trains on a text it is scored on.
    """
    with _require_file(data_dir / TRAIN_FILES[0]).open(newline="", encoding="utf-8") as file:
        full_texts = [normalize_text(text) for text, _ in csv.reader(file)]
    with _require_file(data_dir / TRAIN_FILES[1]).open(newline="", encoding="utf-8") as file:
        descriptions = [normalize_text(row["content"]) for row in csv.DictReader(file)]

    test_suffixes = {suffix for text in test_texts for suffix in _text_suffixes(text)}
    seen_suffixes: set[str] = set()
    texts, num_duplicates, num_in_test = [], 0, 0
    # Full texts come first, so that an article present in both samples keeps its title.
    for text in full_texts + descriptions:
        if text in test_suffixes:
            num_in_test += 1
        elif text in seen_suffixes:
            num_duplicates += 1
        else:
            texts.append(text)
            seen_suffixes.update(_text_suffixes(text))
    return UnlabeledTrainTexts(
        texts=texts,
        num_rows=len(full_texts) + len(descriptions),
        num_duplicates=num_duplicates,
        num_in_test_split=num_in_test,
    )
