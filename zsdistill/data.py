"""Read and check the inputs of a run: the texts, the class names and the hypothesis template.

Every check here runs before any model is loaded, so that a wrong path or a typo in a file costs seconds, not a
teacher pass.
"""

import csv
import io
import json
import os
import string
from dataclasses import dataclass
from pathlib import Path

# The data file formats, by file name extension.
DATA_FILE_FORMATS = {".txt": "text", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}
DEFAULT_TEXT_COLUMN = "text"
# csv's default limit of 131,072 characters per field is shorter than some documents.
_MAX_FIELD_CHARS = 2**31 - 1


class InputError(ValueError):
    """An input file or option is invalid. The message names the value and gives the fix."""


@dataclass
class DistinctTexts:
    """The distinct texts of a list in order of first appearance, and the index of each example's distinct text."""

    texts: list[str]
    index_of_example: list[int]


def find_distinct_texts(texts: list[str]) -> DistinctTexts:
    first_position: dict[str, int] = {}
    index_of_example = [first_position.setdefault(text, len(first_position)) for text in texts]
    return DistinctTexts(texts=list(first_position), index_of_example=index_of_example)


@dataclass
class TextFile:
    """The non-empty texts of a data file in file order, with their row numbers and, if read, their labels.

    `blank_lines` counts the rows skipped because their text is empty (blank lines in a .txt file). Row numbers count
    from 1: a row is a line of a .txt or .jsonl file, and a record after the header of a .csv or .tsv file, which
    may span several lines. `labels` contains the raw value of the label column for each text, or is None.
    """

    path: Path
    texts: list[str]
    blank_lines: int
    row_numbers: list[int]
    labels: list[object] | None = None


def _read_lines(path: str | Path, description: str) -> list[str]:
    """Read a UTF-8 file as a list of lines without their line endings, or raise InputError."""
    return _split_lines(_read_content(path, description))


def _split_lines(content: str) -> list[str]:
    # Line endings are read as Python's text mode reads them ("\n", "\r\n" or "\r"). str.splitlines() would
    # also split on characters such as U+2028 inside a text.
    return content.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _check_is_file(path: Path, description: str) -> None:
    if not path.exists():
        raise InputError(f"{description} not found: {path}. Check the path.")
    if not path.is_file():
        raise InputError(f"{description} is not a file: {path}. Give the path of a text file with one entry per line.")


def _read_content(path: str | Path, description: str) -> str:
    """Read a UTF-8 file that contains more than whitespace, or raise InputError."""
    path = Path(path)
    _check_is_file(path, description)

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
    return content


def read_texts(
    path: str | Path,
    text_column: str | None = None,
    label_column: str | None = None,
    header: bool = True,
    option_prefix: str = "--",
) -> TextFile:
    """Read the texts, and the labels if `label_column` is set, of a .txt, .csv, .tsv or .jsonl data file.

    A .txt file has one text per line and no columns. In the other formats `text_column` names the text's column
    (default "text"), and several names separated by commas are joined with a space. A .csv or .tsv file starts with a
    header row unless `header` is False, in which case its columns are 0-based indices. Rows whose text is empty are
    skipped and counted, and surrounding whitespace is stripped. `option_prefix` is the prefix of the command-line
    options that set the columns, for the messages.
    """
    path = Path(path)
    _check_is_file(path, "Data file")
    file_format = DATA_FILE_FORMATS.get(path.suffix.lower())
    if file_format is None:
        supported = ", ".join(DATA_FILE_FORMATS)
        raise InputError(
            f"Data file {path} has the unsupported extension {path.suffix!r}. Supported extensions are {supported}: "
            f"one text per line (.txt), comma- or tab-separated values (.csv, .tsv), or one JSON object per line "
            f"(.jsonl). Rename or convert the file."
        )
    options = _ColumnOptions(option_prefix)
    if file_format == "text":
        for option, value in ((options.text, text_column), (options.label, label_column)):
            if value is not None:
                raise InputError(
                    f"{option} {value!r} was given, but the data file {path} is a .txt file with one text per line "
                    f"and no columns. Give a .csv, .tsv or .jsonl file, or drop {option}."
                )
        if not header:
            raise InputError(f"{options.no_header} applies to .csv and .tsv files, not to the .txt file {path}.")
        return _read_text_lines(path)

    content = _read_content(path, "Data file")
    if file_format == "jsonl":
        if not header:
            raise InputError(
                f"{options.no_header} applies to .csv and .tsv files, not to the .jsonl file {path}, whose rows "
                f"are JSON objects with named fields."
            )
        return _read_jsonl(path, content, text_column, label_column, options)
    return _read_delimited(
        path, content, "\t" if file_format == "tsv" else ",", text_column, label_column, header, options
    )


@dataclass(frozen=True)
class _ColumnOptions:
    """The names of the command-line options that set a data file's columns, such as --text_column."""

    prefix: str

    @property
    def text(self) -> str:
        return f"{self.prefix}text_column"

    @property
    def label(self) -> str:
        return f"{self.prefix}label_column"

    @property
    def no_header(self) -> str:
        return f"{self.prefix}no_header"


def _read_text_lines(path: Path) -> TextFile:
    """Read a .txt data file with one text per line, skipping blank lines."""
    lines = _read_lines(path, "Data file")
    # A final newline leaves one empty string after the split, which is not a blank line of the file.
    if lines[-1] == "":
        lines = lines[:-1]
    texts, row_numbers = [], []
    for line_number, line in enumerate(lines, start=1):
        if line.strip():
            texts.append(line.strip())
            row_numbers.append(line_number)
    return TextFile(path=path, texts=texts, blank_lines=len(lines) - len(texts), row_numbers=row_numbers)


def _split_columns(spec: str, option: str) -> list[str]:
    names = [name.strip() for name in spec.split(",")]
    if not all(names):
        raise InputError(
            f"{option} {spec!r} contains an empty column name. Separate several columns with single commas, "
            f"for example 'title,description'."
        )
    return names


def _join_fields(fields: list[str]) -> str:
    return " ".join(field.strip() for field in fields if field.strip())


def _read_delimited(
    path: Path,
    content: str,
    delimiter: str,
    text_column: str | None,
    label_column: str | None,
    header: bool,
    options: _ColumnOptions,
) -> TextFile:
    """Read a .csv or .tsv data file, whose fields may be enclosed in double quotes as Python's csv module writes."""
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_FIELD_CHARS))
    # newline="" hands the csv reader the line endings unchanged, so that a newline inside a quoted field is kept.
    # strict=True rejects a quote that is never closed or is followed by text, which would otherwise swallow the
    # following lines into one field or drop the quotes silently.
    # NOTE: a .tsv file whose fields start with a literal double quote, without csv quoting, is rejected too.
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter, strict=True)
    records = _csv_records(path, reader, "TSV" if delimiter == "\t" else "CSV", first_row_number=0 if header else 1)
    # With a header the columns are found by name and every row must have as many fields as the header. Without
    # one, every row must have as many fields as the first.
    column_names = next(records)[2] if header else None
    text_indices, label_indices = _find_columns(path, text_column, label_column, column_names, options)
    num_fields = len(column_names) if header else None

    texts, row_numbers, labels = [], [], []
    blank_rows = 0
    for row_number, line_number, fields in records:
        if not fields:
            blank_rows += 1
            continue
        if num_fields is None:
            num_fields = len(fields)
            _check_positions(path, text_indices, num_fields, options.text)
            _check_positions(path, label_indices or [], num_fields, options.label)
        if len(fields) != num_fields:
            first_row = "the header" if header else "the first row"
            raise InputError(
                f"Data file {path}: row {row_number} (line {line_number}) has {len(fields)} fields, but {first_row} "
                f"has {num_fields}. A field that contains the delimiter {delimiter!r}, a double quote or a newline "
                f"must be enclosed in double quotes, with each double quote inside it written twice."
            )
        text = _join_fields([fields[index] for index in text_indices])
        if not text:
            blank_rows += 1
            continue
        texts.append(text)
        row_numbers.append(row_number)
        if label_indices is not None:
            labels.append(fields[label_indices[0]].strip())
    return _checked_text_file(
        path, texts, blank_rows, row_numbers, labels if label_column else None, text_column, options
    )


def _csv_records(path: Path, reader, format_name: str, first_row_number: int):
    """Yield (row number, first line, fields) for each record, numbered from `first_row_number`.

    A blank line is a record without fields.
    """
    row_number = first_row_number
    line_number = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise InputError(
                f"Data file {path} could not be parsed as {format_name} at line {reader.line_num}: {error}. A field "
                f"that starts with a double quote must end with one, and each double quote inside it must be written "
                f"twice."
            ) from None
        yield row_number, line_number, fields
        row_number += 1
        line_number = reader.line_num + 1


def _find_columns(
    path: Path,
    text_column: str | None,
    label_column: str | None,
    column_names: list[str] | None,
    options: _ColumnOptions,
) -> tuple[list[int], list[int] | None]:
    """Return the indices of the text columns and of the label column, found in the header row if there is one."""
    if column_names is None:
        if text_column is None:
            raise InputError(
                f"{options.no_header} needs {options.text} as a 0-based column index, for example "
                f"{options.text} 1, or 1,2 to join two columns."
            )
        text_indices = _column_positions(text_column, options.text, options)
        label_indices = _column_positions(label_column, options.label, options) if label_column else None
    else:
        if not column_names:
            raise InputError(
                f"Data file {path} starts with a blank line where its header row should be. Remove the blank line, "
                f"or pass {options.no_header} if the file has no header row."
            )
        text_indices = _column_indices(path, text_column or DEFAULT_TEXT_COLUMN, column_names, options.text, options)
        label_indices = (
            _column_indices(path, label_column, column_names, options.label, options) if label_column else None
        )
    if label_indices is not None and len(label_indices) != 1:
        raise InputError(f"{options.label} {label_column!r} names {len(label_indices)} columns. Give one column.")
    return text_indices, label_indices


def _column_indices(path: Path, spec: str, column_names: list[str], option: str, options: _ColumnOptions) -> list:
    indices = []
    for name in _split_columns(spec, option):
        matches = [index for index, column in enumerate(column_names) if column.strip() == name]
        if not matches:
            column_list = ", ".join(repr(_shorten(column, 40)) for column in column_names[:20])
            more = f" and {len(column_names) - 20} more" if len(column_names) > 20 else ""
            raise InputError(
                f"Data file {path} has no column {name!r}. Its header row names the columns {column_list}{more}. Pass "
                f"{option} with one of them, or pass {options.no_header} and 0-based column indices if its first "
                f"row is data, not a header."
            )
        if len(matches) > 1:
            raise InputError(
                f"Data file {path} has {len(matches)} columns named {name!r}, so {option} is ambiguous. Rename "
                f"the columns in its header row."
            )
        indices.append(matches[0])
    return indices


def _column_positions(spec: str, option: str, options: _ColumnOptions) -> list[int]:
    positions = []
    for name in _split_columns(spec, option):
        if not name.isdigit():
            raise InputError(
                f"{option} {name!r} is not a 0-based column index, which a file without a header row needs. Give a "
                f"number, or drop {options.no_header} to name columns from the header row."
            )
        positions.append(int(name))
    return positions


def _check_positions(path: Path, positions: list[int], num_fields: int, option: str) -> None:
    for position in positions:
        if position >= num_fields:
            raise InputError(
                f"Column index {position} is out of range: the first row of the data file {path} has {num_fields} "
                f"fields, indices 0 to {num_fields - 1}. Check {option}."
            )


def _read_jsonl(
    path: Path, content: str, text_column: str | None, label_column: str | None, options: _ColumnOptions
) -> TextFile:
    """Read a .jsonl data file with one JSON object per line. A blank line is a row with an empty text."""
    text_names = _split_columns(text_column or DEFAULT_TEXT_COLUMN, options.text)
    lines = _split_lines(content)
    if lines[-1] == "":
        lines = lines[:-1]

    texts, row_numbers, labels = [], [], []
    blank_rows = 0
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            blank_rows += 1
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(
                f"Data file {path}: line {line_number} is not valid JSON ({error.msg} at character {error.pos + 1}). "
                f"A .jsonl file has one JSON object per line."
            ) from None
        if not isinstance(row, dict):
            raise InputError(
                f"Data file {path}: line {line_number} is a JSON {type(row).__name__}, not an object. A .jsonl file "
                f'has one JSON object per line, such as {{"text": "...", "label": "..."}}.'
            )
        fields = [_jsonl_text_field(path, row, name, line_number, options.text) for name in text_names]
        text = _join_fields(fields)
        if not text:
            blank_rows += 1
            continue
        texts.append(text)
        row_numbers.append(line_number)
        if label_column is not None:
            if label_column not in row:
                raise _missing_key_error(path, row, label_column, line_number, options.label)
            labels.append(row[label_column])
    return _checked_text_file(
        path, texts, blank_rows, row_numbers, labels if label_column else None, text_column, options
    )


def _jsonl_text_field(path: Path, row: dict, name: str, line_number: int, option: str) -> str:
    if name not in row:
        raise _missing_key_error(path, row, name, line_number, option)
    value = row[name]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(
            f"Data file {path}: the field {name!r} on line {line_number} is a JSON {type(value).__name__} "
            f"({_shorten(json.dumps(value))}), not a string. Check {option}."
        )
    return value


def _missing_key_error(path: Path, row: dict, name: str, line_number: int, option: str) -> InputError:
    keys = ", ".join(repr(key) for key in list(row)[:20]) or "none"
    return InputError(
        f"Data file {path}: the object on line {line_number} has no field {name!r}. Its fields are {keys}. Pass "
        f"{option} with one of them."
    )


def _shorten(text: str, max_chars: int = 60) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def _checked_text_file(
    path: Path,
    texts: list[str],
    blank_rows: int,
    row_numbers: list[int],
    labels: list[object] | None,
    text_column: str | None,
    options: _ColumnOptions,
) -> TextFile:
    if not texts:
        column = text_column or DEFAULT_TEXT_COLUMN
        raise InputError(
            f"Data file {path} has no row with a non-empty text in the column {column!r} ({blank_rows} rows read). "
            f"Check {options.text}."
        )
    return TextFile(path=path, texts=texts, blank_lines=blank_rows, row_numbers=row_numbers, labels=labels)


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
    can_resume: bool = True,
) -> None:
    """Check the output directory without changing anything on disk.

    Raise InputError if it is a file, is one of the local `model_paths`, or contains files while neither `overwrite`
    nor `resuming` is set. A resumed run continues the run whose files are there. Entries named in `reusable`, the
    saved work that any run reuses, do not count as files. `can_resume` is whether the command takes
    --resume_from_checkpoint, which the error then suggests.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"--output_dir {path} is a file, not a directory. Choose another path.")
    for model_path in model_paths:
        if Path(model_path).exists() and path.resolve() == Path(model_path).resolve():
            raise InputError(
                f"--output_dir {path} is the directory of the model {model_path}, whose files this run would "
                f"replace. Choose another directory."
            )
    other_entries = [entry.name for entry in path.iterdir() if entry.name not in reusable] if path.is_dir() else []
    if other_entries and not (overwrite or resuming):
        listed = ", ".join(sorted(other_entries)[:3]) + (", ..." if len(other_entries) > 3 else "")
        if can_resume:
            fixes = (
                "pass --overwrite_output_dir to write over them, or pass --resume_from_checkpoint latest to continue "
                "the run saved there"
            )
        else:
            fixes = "or pass --overwrite_output_dir to write over them"
        raise InputError(
            f"--output_dir {path} already contains files ({listed}). Choose an empty or new directory, {fixes}."
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


def check_output_file(path: str | Path, option: str, input_paths: tuple[str | Path, ...] = ()) -> None:
    """Raise InputError unless `path` can be written as a file and is not one of `input_paths`. Nothing is written.

    An existing file at `path` passes the check, because the commands that write it replace it.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory. Give the path of a file to write.")
    for input_path in input_paths:
        if Path(input_path).exists() and path.exists() and path.resolve() == Path(input_path).resolve():
            raise InputError(
                f"{option} {path} is the input file {input_path}, which it would replace. Choose another path."
            )
    parent = path.parent
    if not parent.is_dir():
        raise InputError(
            f"The directory {parent} of {option} {path} does not exist. Create it or choose another path."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path} cannot be written: permission denied on {parent}. Choose another path.")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{option} {path} exists and cannot be written: permission denied. Choose another path.")
