"""Read and check the inputs of a run: the unlabeled texts, the class names and the hypothesis template.

Every check here runs before any model is loaded, so that a wrong path or a typo in a file costs seconds, not a
teacher pass.
"""

import string
from dataclasses import dataclass
from pathlib import Path


class InputError(ValueError):
    """An input file or option is invalid. The message names the value and gives the fix."""


@dataclass
class TextFile:
    """The non-blank lines of a text file, in file order, and how many blank lines were skipped."""

    path: Path
    texts: list[str]
    blank_lines: int


def _read_lines(path: str | Path, description: str) -> list[str]:
    """Read a UTF-8 file as a list of lines without their line endings, or raise InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{description} not found: {path}. Check the path.")
    if not path.is_file():
        raise InputError(f"{description} is not a file: {path}. Give the path of a text file with one entry per line.")

    raw = path.read_bytes()
    try:
        # utf-8-sig drops the byte order mark that some Windows editors write at the start of a file.
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line_number = raw.count(b"\n", 0, error.start) + 1
        raise InputError(
            f"{description} {path} is not valid UTF-8: line {line_number} has the invalid byte "
            f"{raw[error.start : error.start + 1]!r}. Convert the file to UTF-8, for example with "
            f"`iconv -f latin1 -t utf-8`."
        ) from None

    if not content.strip():
        raise InputError(
            f"{description} {path} is empty or contains only blank lines. Give a file with one entry per line."
        )

    # Split on "\n" only: str.splitlines() would also split on characters such as U+2028 inside a text.
    lines = content.split("\n")
    return [line.removesuffix("\r") for line in lines]


def read_texts(path: str | Path) -> TextFile:
    """Read a data file with one example per line, skipping blank lines and stripping surrounding whitespace."""
    lines = _read_lines(path, "Data file")
    texts = [line.strip() for line in lines if line.strip()]
    # A final newline leaves one empty string after the split, which is not a blank line of the file.
    if lines[-1] == "":
        lines = lines[:-1]
    blank_lines = sum(1 for line in lines if not line.strip())
    return TextFile(path=Path(path), texts=texts, blank_lines=blank_lines)


def read_class_names(path: str | Path) -> list[str]:
    """Read one class name per line. Blank lines at the end of the file are ignored, any other is an error."""
    lines = _read_lines(path, "Class names file")
    while lines and not lines[-1].strip():
        lines.pop()

    class_names = []
    first_line_of = {}
    for line_number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise InputError(
                f"Class names file {path} has a blank class name on line {line_number}. "
                f"Remove the blank line or write a class name on it."
            )
        if name in first_line_of:
            raise InputError(
                f"Class names file {path} lists {name!r} twice, on lines {first_line_of[name]} and {line_number}. "
                f"Each class name must be unique."
            )
        first_line_of[name] = line_number
        class_names.append(name)
    return class_names


def check_hypothesis_template(template: str) -> None:
    """Raise InputError unless the template has exactly one `{}` placeholder, the place of the class name."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)]
    except ValueError as error:
        raise InputError(
            f"Invalid --hypothesis_template {template!r}: {error}. Write a literal brace as '{{{{' or '}}}}'."
        ) from None

    fields = [field for field in fields if field[0] is not None]
    placeholder_fix = "Use exactly one '{}', for example 'This example is {}.'."
    if len(fields) != 1:
        raise InputError(
            f"Invalid --hypothesis_template {template!r}: it has {len(fields)} placeholders. {placeholder_fix}"
        )
    name, spec, conversion = fields[0]
    if name != "":
        raise InputError(
            f"Invalid --hypothesis_template {template!r}: the placeholder '{{{name}}}' has a name or index. "
            f"{placeholder_fix}"
        )
    # A format spec or conversion such as '{:>10}' or '{!r}' would change the class name, not just insert it.
    if spec or conversion:
        raise InputError(
            f"Invalid --hypothesis_template {template!r}: the placeholder has a conversion or format spec. "
            f"{placeholder_fix}"
        )


def check_output_dir(path: str | Path, overwrite: bool) -> None:
    """Raise InputError if the output directory is a file, or contains files and `overwrite` is not set."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"--output_dir {path} is a file, not a directory. Choose another path.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise InputError(
            f"--output_dir {path} already contains files. Choose an empty or new directory, "
            f"or pass --overwrite_output_dir to write over them."
        )
