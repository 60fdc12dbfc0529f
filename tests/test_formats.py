"""Data files in .txt, .csv, .tsv and .jsonl: texts, labels, row numbers, skipped rows and column errors."""

import csv
import json

import pytest
from conftest import CLASS_NAMES, NEWS_TEXTS, cli_args, write_lines

from zsdistill.cli import main
from zsdistill.data import InputError, read_texts

# Fields with a comma, a doubled quote and a newline inside, then a row whose text is empty.
AWKWARD_ROWS = [
    ("Hello, world", "greeting"),
    ('She said "hi" twice', "quote"),
    ("line one\nline two", "newline"),
    ("", "empty"),
    ("  padded  ", "padded"),
]
EXPECTED_TEXTS = ["Hello, world", 'She said "hi" twice', "line one\nline two", "padded"]


def write_delimited(path, rows, delimiter, header=("text", "label"), line_ending="\n"):
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, delimiter=delimiter, lineterminator=line_ending)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(("suffix", "delimiter"), [(".csv", ","), (".tsv", "\t")])
@pytest.mark.parametrize("line_ending", ["\n", "\r\n"])
def test_delimited_fields_with_quotes_commas_newlines(tmp_path, suffix, delimiter, line_ending):
    path = write_delimited(tmp_path / f"data{suffix}", AWKWARD_ROWS, delimiter, line_ending=line_ending)
    data = read_texts(path, label_column="label")
    assert data.texts == EXPECTED_TEXTS
    assert data.labels == ["greeting", "quote", "newline", "padded"]
    assert data.row_numbers == [1, 2, 3, 5]
    assert data.blank_lines == 1


def test_tsv_keeps_commas_and_quoted_tabs(tmp_path):
    rows = [("a, b, c", "x"), ("tab\tinside", "y")]
    data = read_texts(write_delimited(tmp_path / "data.tsv", rows, "\t"), label_column="label")
    assert data.texts == ["a, b, c", "tab\tinside"]


def test_jsonl_fields_with_quotes_commas_newlines(tmp_path):
    rows = [{"text": text, "label": label} for text, label in AWKWARD_ROWS]
    rows[3]["text"] = None
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    data = read_texts(path, label_column="label")
    assert data.texts == EXPECTED_TEXTS
    assert data.labels == ["greeting", "quote", "newline", "padded"]
    assert data.row_numbers == [1, 2, 3, 5]
    assert data.blank_lines == 1


def test_jsonl_blank_line_counted_as_row(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "one"}\n\n{"text": "two", "label": [1, 2]}\n', encoding="utf-8")
    data = read_texts(path)
    assert data.texts == ["one", "two"]
    assert data.row_numbers == [1, 3]
    assert data.blank_lines == 1
    assert data.labels is None


def test_jsonl_labels_keep_json_types(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"text": "a", "y": 3}, {"text": "b", "y": ["x", "z"]}])
    assert read_texts(path, label_column="y").labels == [3, ["x", "z"]]


def test_txt_row_numbers_are_line_numbers(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("first\n\n  \nsecond\n", encoding="utf-8")
    data = read_texts(path)
    assert data.texts == ["first", "second"]
    assert data.row_numbers == [1, 4]
    assert data.blank_lines == 2


def test_headerless_columns_by_index_joined(tmp_path):
    rows = [("3", "Markets rally", "Stocks rose, again."), ("1", "", "Only a description"), ("2", "", "")]
    path = write_delimited(tmp_path / "news.csv", rows, ",", header=None)
    data = read_texts(path, text_column="1,2", label_column="0", header=False)
    assert data.texts == ["Markets rally Stocks rose, again.", "Only a description"]
    assert data.labels == ["3", "1"]
    assert data.row_numbers == [1, 2]
    assert data.blank_lines == 1


def test_header_columns_by_name_joined(tmp_path):
    rows = [("Title", "Body, with comma", "b")]
    path = write_delimited(tmp_path / "d.csv", rows, ",", header=("title", "description", "label"))
    data = read_texts(path, text_column="title, description")
    assert data.texts == ["Title Body, with comma"]


def test_blank_csv_line_skipped_and_counted(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text\nfirst\n\nsecond\n", encoding="utf-8")
    data = read_texts(path)
    assert data.texts == ["first", "second"]
    assert data.row_numbers == [1, 3]
    assert data.blank_lines == 1


def test_default_text_column_is_text(tmp_path):
    path = write_delimited(tmp_path / "d.csv", [("x", "hello")], ",", header=("id", "text"))
    assert read_texts(path).texts == ["hello"]


def test_missing_csv_column_names_columns(tmp_path):
    path = write_delimited(tmp_path / "d.csv", [("a", "b")], ",", header=("body", "topic"))
    with pytest.raises(InputError, match="no column 'text'") as raised:
        read_texts(path)
    assert "'body', 'topic'" in str(raised.value)
    assert "--text_column" in str(raised.value)
    assert "--no_header" in str(raised.value)


def test_missing_label_column_names_columns(tmp_path):
    path = write_delimited(tmp_path / "d.csv", [("a", "b")], ",", header=("text", "topic"))
    with pytest.raises(InputError, match="no column 'label'") as raised:
        read_texts(path, label_column="label")
    assert "'text', 'topic'" in str(raised.value)
    assert "--label_column" in str(raised.value)


def test_missing_jsonl_field_names_fields(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "x"}, {"body": "b", "label": "y"}])
    with pytest.raises(InputError, match="line 2 has no field 'text'") as raised:
        read_texts(path)
    assert "'body', 'label'" in str(raised.value)


def test_missing_jsonl_label_names_fields(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "topic": "x"}])
    with pytest.raises(InputError, match="no field 'label'") as raised:
        read_texts(path, label_column="label")
    assert "'text', 'topic'" in str(raised.value)


def test_option_prefix_names_eval_options(tmp_path):
    path = write_delimited(tmp_path / "d.csv", [("a", "b")], ",", header=("body", "topic"))
    with pytest.raises(InputError, match="--eval_text_column"):
        read_texts(path, option_prefix="--eval_")


def test_duplicate_column_name_rejected(tmp_path):
    path = write_delimited(tmp_path / "d.csv", [("a", "b")], ",", header=("text", "text"))
    with pytest.raises(InputError, match="2 columns named 'text'"):
        read_texts(path)


def test_row_with_wrong_field_count(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nfine,a\nunquoted, comma,b\n", encoding="utf-8")
    with pytest.raises(InputError, match="row 2 \\(line 3\\) has 3 fields, but the header has 2"):
        read_texts(path)


def test_column_index_out_of_range(tmp_path):
    path = write_delimited(tmp_path / "d.csv", [("a", "b")], ",", header=None)
    with pytest.raises(InputError, match="Column index 5 is out of range") as error:
        read_texts(path, text_column="5", header=False)
    assert str(error.value).endswith("Check --text_column.")
    with pytest.raises(InputError, match="Column index 4 is out of range") as error:
        read_texts(path, text_column="0", label_column="4", header=False)
    assert str(error.value).endswith("Check --label_column.")


def test_no_header_needs_text_column(tmp_path):
    path = write_delimited(tmp_path / "d.csv", [("a", "b")], ",", header=None)
    with pytest.raises(InputError, match="--no_header needs --text_column"):
        read_texts(path, header=False)


def test_no_header_column_name_rejected(tmp_path):
    path = write_delimited(tmp_path / "d.csv", [("a", "b")], ",", header=None)
    with pytest.raises(InputError, match="'text' is not a 0-based column index"):
        read_texts(path, text_column="text", header=False)


def test_txt_with_text_column_rejected(tmp_path):
    path = write_lines(tmp_path / "texts.txt", ["one"])
    with pytest.raises(InputError, match="--text_column 'text' was given") as raised:
        read_texts(path, text_column="text")
    assert ".csv, .tsv or .jsonl" in str(raised.value)


def test_txt_with_label_column_rejected(tmp_path):
    with pytest.raises(InputError, match="--label_column 'label' was given"):
        read_texts(write_lines(tmp_path / "texts.txt", ["one"]), label_column="label")


def test_no_header_on_jsonl_rejected(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    with pytest.raises(InputError, match="--no_header applies to .csv and .tsv files"):
        read_texts(path, header=False)


def test_unsupported_extension_names_supported(tmp_path):
    path = write_lines(tmp_path / "data.json", ["[]"])
    with pytest.raises(InputError, match="unsupported extension '.json'") as raised:
        read_texts(path)
    assert ".txt, .csv, .tsv, .jsonl" in str(raised.value)


def test_invalid_jsonl_line_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b",}\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        read_texts(path)


def test_jsonl_line_not_object(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('["a", "b"]\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 1 is a JSON list, not an object"):
        read_texts(path)


def test_jsonl_text_not_string(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": 12}])
    with pytest.raises(InputError, match="'text' on line 1 is a JSON int"):
        read_texts(path)


def test_all_texts_empty_rejected(tmp_path):
    path = write_delimited(tmp_path / "d.csv", [("", "a"), ("  ", "b")], ",")
    with pytest.raises(InputError, match="no row with a non-empty text in the column 'text' \\(2 rows read\\)"):
        read_texts(path)


def test_header_only_file_rejected(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(InputError, match="no row with a non-empty text"):
        read_texts(path)


def test_unterminated_quote_rejected(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text\nfine\n"never closed\nmore\n', encoding="utf-8")
    with pytest.raises(InputError, match="could not be parsed as CSV at line 4: unexpected end of data"):
        read_texts(path)


def test_text_after_closing_quote_rejected(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text('text\tlabel\n"Hi," he said\ta\n', encoding="utf-8")
    with pytest.raises(InputError, match="could not be parsed as TSV at line 2"):
        read_texts(path)


def test_main_job_reads_csv_columns(tmp_path, capsys):
    data_file = write_delimited(tmp_path / "d.csv", [("a", "b")], ",", header=("body", "topic"))
    class_file = write_lines(tmp_path / "classes.txt", ["sports", "business"])
    status = main(cli_args(data_file, class_file, tmp_path / "out", tmp_path / "t", tmp_path / "s"))
    assert status == 2
    error = capsys.readouterr().err
    assert "no column 'text'" in error
    assert not (tmp_path / "out").exists()


def test_main_job_trains_on_csv(tmp_path, bert_teacher, student):
    rows = [(str(index), text) for index, text in enumerate(NEWS_TEXTS)] + [("8", "")]
    data_file = write_delimited(tmp_path / "d.csv", rows, ",", header=("id", "body"))
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    extra = ["--text_column", "body", "--num_train_epochs", "1", "--validation_split", "0.25", "--cpu"]
    assert main(cli_args(data_file, class_file, tmp_path / "out", bert_teacher, student, *extra)) == 0
    run = json.loads((tmp_path / "out" / "zsdistill_run.json").read_text())
    assert run["num_examples"] == len(NEWS_TEXTS)
    assert run["num_blank_lines"] == 1
