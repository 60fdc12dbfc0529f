"""Read and check the inputs of a run: the unlabeled texts, the class names and the hypothesis template.

Every check here runs before any model is loaded, so that a wrong path or a typo in a file costs seconds, not a
teacher pass.
"""

import os
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
        # A UTF-16 file starts with its byte order mark; any other encoding is for the user to name.
        encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "ENCODING"
        raise InputError(
            f"{description} {path} is not valid UTF-8: line {line_number} has the invalid byte "
            f"{raw[error.start : error.start + 1]!r}. Convert the file to UTF-8, for example with "
            f"`iconv -f {encoding} -t utf-8`."
        ) from None

    if not content.strip():
        raise InputError(
            f"{description} {path} is empty or contains only blank lines. Give a file with one entry per line."
        )

    # Line endings are read as Python's text mode reads them ("\n", "\r\n" or "\r"). str.splitlines() would
    # also split on characters such as U+2028 inside a text.
    return content.replace("\r\n", "\n").replace("\r", "\n").split("\n")


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


def check_output_dir(
    path: str | Path,
    overwrite: bool,
    model_paths: tuple[str, ...] = (),
    reusable: tuple[str, ...] = (),
    resuming: bool = False,
) -> None:
    """Check the output directory without changing anything on disk.

    Raise InputError if it is a file, is one of the local `model_paths`, or contains files while neither `overwrite`
    nor `resuming` is set. A resumed run continues the run whose files are there. Entries named in `reusable`, the
    saved work that any run reuses, do not count as files.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"--output_dir {path} is a file, not a directory. Choose another path.")
    for model_path in model_paths:
        if Path(model_path).exists() and path.resolve() == Path(model_path).resolve():
            raise InputError(
                f"--output_dir {path} is the directory of the model {model_path}, whose files the student would "
                f"replace. Choose another directory."
            )
    other_entries = [entry.name for entry in path.iterdir() if entry.name not in reusable] if path.is_dir() else []
    if other_entries and not (overwrite or resuming):
        raise InputError(
            f"--output_dir {path} already contains files ({', '.join(sorted(other_entries)[:3])}"
            f"{', ...' if len(other_entries) > 3 else ''}). Choose an empty or new directory, pass "
            f"--overwrite_output_dir to write over them, or pass --resume_from_checkpoint latest to continue the run "
            f"saved there."
        )


def create_output_dir(path: str | Path) -> None:
    """Create the output directory and check that it is writable, so that no finished work fails to save."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--output_dir {path} cannot be created: {error}. Choose a writable directory.") from None
    # A probe file would race with the other processes of a launch, which check that the directory is empty.
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"--output_dir {path} cannot be written: permission denied. Choose a writable directory.")
