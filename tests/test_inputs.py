"""Input files and options: each mistake is a clear error raised before any model is loaded."""

import shutil
from pathlib import Path

import pytest
from conftest import CLASS_NAMES, NEWS_TEXTS, cli_args, save_teacher, write_lines

from zsdistill.cli import main
from zsdistill.data import (
    InputError,
    check_hypothesis_template,
    check_output_dir,
    read_class_names,
    read_texts,
)
from zsdistill.training import split_validation


def test_read_texts_skips_blank_lines(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("first\n\n  second  \r\n \t \nthird", encoding="utf-8")
    data = read_texts(path)
    assert data.texts == ["first", "second", "third"]
    assert data.blank_lines == 2


def test_read_texts_final_newline_not_blank(tmp_path):
    data = read_texts(write_lines(tmp_path / "texts.txt", ["one", "two"]))
    assert data.texts == ["one", "two"]
    assert data.blank_lines == 0


def test_read_texts_keeps_line_separator_characters(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("one\u2028still one\ntwo\n", encoding="utf-8")
    assert read_texts(path).texts == ["one\u2028still one", "two"]


def test_read_texts_strips_byte_order_mark(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes("\ufeffone\ntwo\n".encode())
    assert read_texts(path).texts == ["one", "two"]


def test_missing_data_file(tmp_path):
    with pytest.raises(InputError, match="Data file not found"):
        read_texts(tmp_path / "nothing.txt")


def test_data_file_is_directory(tmp_path):
    with pytest.raises(InputError, match="is not a file"):
        read_texts(tmp_path)


@pytest.mark.parametrize("content", ["", "\n\n", "  \n\t\n"])
def test_empty_data_file(tmp_path, content):
    path = tmp_path / "texts.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match="empty or contains only blank lines"):
        read_texts(path)


def test_non_utf8_names_line(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes("one\ntwo\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="line 3") as raised:
        read_texts(path)
    assert "UTF-8" in str(raised.value)
    assert "iconv" in str(raised.value)


def test_class_names_stripped(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text(" sports \nbusiness\n\n\n", encoding="utf-8")
    assert read_class_names(path) == ["sports", "business"]


def test_blank_class_name(tmp_path):
    path = write_lines(tmp_path / "classes.txt", ["sports", "  ", "business"])
    with pytest.raises(InputError, match="blank class name on line 2"):
        read_class_names(path)


def test_duplicate_class_name(tmp_path):
    path = write_lines(tmp_path / "classes.txt", ["sports", "business", "sports"])
    with pytest.raises(InputError, match="'sports' twice, on lines 1 and 3"):
        read_class_names(path)


def test_no_class_names(tmp_path):
    path = write_lines(tmp_path / "classes.txt", [""])
    with pytest.raises(InputError, match="Class names file .* empty"):
        read_class_names(path)


@pytest.mark.parametrize("template", ["This example is {}.", "{}", "Topic: {} {{not a field}}"])
def test_valid_templates(template):
    check_hypothesis_template(template)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("This example is about sports.", "0 placeholders"),
        ("{} or {}", "2 placeholders"),
        ("This example is {label}.", "'{label}' has a name or index"),
        ("This example is {0}.", "'{0}' has a name or index"),
        ("This example is {:>10}.", "conversion or format spec"),
        ("This example is {!r}.", "conversion or format spec"),
        ("This example is {.", "Invalid --hypothesis_template"),
    ],
)
def test_invalid_templates(template, message):
    with pytest.raises(InputError, match=message):
        check_hypothesis_template(template)


def test_output_dir_with_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match="--overwrite_output_dir"):
        check_output_dir(tmp_path, overwrite=False)
    check_output_dir(tmp_path, overwrite=True)


def test_output_dir_without_resume_hint(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError) as error:
        check_output_dir(tmp_path, overwrite=False, can_resume=False)
    assert "--overwrite_output_dir" in str(error.value)
    assert "--resume_from_checkpoint" not in str(error.value)


def test_output_dir_model_directory(tmp_path):
    with pytest.raises(InputError, match="whose files this run would replace"):
        check_output_dir(tmp_path, overwrite=True, model_paths=(str(tmp_path),))


def test_output_dir_empty_or_new(tmp_path):
    check_output_dir(tmp_path, overwrite=False)
    check_output_dir(tmp_path / "new", overwrite=False)


def test_output_dir_is_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        check_output_dir(path, overwrite=True)


def run_cli(tmp_path, data_lines=None, class_lines=None, *extra, data_bytes=None):
    """Run the command with a teacher path that does not exist, so any model loading would fail differently."""
    data_file = tmp_path / "texts.txt"
    if data_bytes is not None:
        data_file.write_bytes(data_bytes)
    else:
        write_lines(data_file, NEWS_TEXTS if data_lines is None else data_lines)
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES if class_lines is None else class_lines)
    never_loaded = (tmp_path / "teacher_never_loaded", tmp_path / "student_never_loaded")
    return main(cli_args(data_file, class_file, tmp_path / "out", *never_loaded, "--cpu", *extra))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data_lines": ["", "  "]}, "empty or contains only blank lines"),
        ({"data_bytes": b"ok\n\xff\xfe\n"}, "line 2"),
        ({"class_lines": ["sports", "", "business"]}, "blank class name on line 2"),
        ({"class_lines": ["sports", "sports"]}, "'sports' twice"),
        ({"class_lines": [""]}, "Class names file"),
    ],
)
def test_cli_input_errors_before_models(tmp_path, capsys, kwargs, message):
    assert (
        run_cli(tmp_path, kwargs.get("data_lines"), kwargs.get("class_lines"), data_bytes=kwargs.get("data_bytes"))
        == 2
    )
    error = capsys.readouterr().err
    assert message in error
    assert "Could not load" not in error


def test_cli_template_error_before_models(tmp_path, capsys):
    assert run_cli(tmp_path, None, None, "--hypothesis_template", "no placeholder") == 2
    assert "0 placeholders" in capsys.readouterr().err


def test_cli_output_dir_error_before_models(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_text("")
    assert run_cli(tmp_path) == 2
    assert "already contains files" in capsys.readouterr().err


def test_teacher_command_output_dir_hint(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_text("")
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    argv = ["teacher", "--data_file", str(data_file), "--class_names_file", str(class_file)]
    argv += ["--output_dir", str(tmp_path / "out"), "--teacher_name_or_path", str(tmp_path / "never_loaded")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "already contains files" in error
    assert "--resume_from_checkpoint" not in error


def test_cli_missing_data_file(tmp_path, capsys):
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    argv = ["--data_file", str(tmp_path / "missing.txt"), "--class_names_file", str(class_file)]
    assert main([*argv, "--output_dir", str(tmp_path / "out")]) == 2
    assert "Data file not found" in capsys.readouterr().err


def test_cli_missing_teacher(tmp_path, capsys):
    assert run_cli(tmp_path) == 2
    error = capsys.readouterr().err
    assert "The teacher" in error
    assert "teacher_never_loaded' was not found" in error


def test_cli_missing_student_before_teacher_pass(tmp_path, capsys, news_files, bert_teacher):
    assert main(cli_args(*news_files, tmp_path / "o", bert_teacher, "/no/student")) == 2
    assert "The student '/no/student' was not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_random_head_teacher_rejected(tmp_path, capsys, news_files, student):
    # A plain encoder has no NLI head: its labels are LABEL_0 and LABEL_1, so no entailment class is found.
    assert main(cli_args(*news_files, tmp_path / "o", student, student)) == 2
    assert "no entailment class" in capsys.readouterr().err


def test_cli_teacher_without_trained_head_rejected(tmp_path, capsys, news_files, student):
    ids = ["--entailment_id", "1", "--contradiction_id", "0"]
    assert main(cli_args(*news_files, tmp_path / "o", student, student, *ids)) == 2
    error = capsys.readouterr().err
    assert "initialized them at random" in error
    assert "classifier.weight" in error


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--temperature", "0"),
        ("--temperature", "-1"),
        ("--temperature", "1e-40"),
        ("--temperature", "inf"),
        ("--temperature", "nan"),
        ("--learning_rate", "inf"),
        ("--teacher_batch_size", "0"),
        ("--per_device_train_batch_size", "-2"),
        ("--learning_rate", "0"),
        ("--num_train_epochs", "0"),
        ("--warmup_ratio", "1.5"),
        ("--validation_split", "1"),
        ("--gradient_accumulation_steps", "0"),
        ("--max_length", "0"),
        ("--mixed_precision", "fp8"),
    ],
)
def test_invalid_option_values(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as raised:
        run_cli(tmp_path, None, None, flag, value)
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert flag in error
    assert value in error


def test_multi_label_needs_contradiction(tmp_path, capsys, news_files, student):
    teacher = save_teacher(tmp_path / "en", ["entailment", "neutral"])
    assert main(cli_args(*news_files, tmp_path / "o", teacher, student, "--multi_label")) == 2
    error = capsys.readouterr().err
    assert "no contradiction class" in error
    assert "--contradiction_id" in error


def test_read_texts_carriage_return_line_endings(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes(b"one\rtwo\r\rthree\r")
    data = read_texts(path)
    assert data.texts == ["one", "two", "three"]
    assert data.blank_lines == 1


def test_utf16_file_gets_utf16_hint(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("one\ntwo\n", encoding="utf-16")
    with pytest.raises(InputError, match="iconv -f utf-16 -t utf-8"):
        read_texts(path)


def test_output_dir_inside_file_rejected_before_models(tmp_path, capsys, news_files, bert_teacher, student):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(cli_args(*news_files, blocker / "sub", bert_teacher, student)) == 2
    error = capsys.readouterr().err
    assert "cannot be created" in error
    assert "a_file" in error


def test_output_dir_same_as_model_rejected(tmp_path, capsys, news_files, bert_teacher, student):
    argv = cli_args(*news_files, bert_teacher, bert_teacher, student, "--overwrite_output_dir")
    assert main(argv) == 2
    assert "is the directory of the model" in capsys.readouterr().err
    assert (bert_teacher / "config.json").is_file()


def test_missing_local_model_path(tmp_path, capsys, news_files, bert_teacher):
    assert main(cli_args(*news_files, tmp_path / "o", bert_teacher, "./models/no-such-student")) == 2
    error = capsys.readouterr().err
    assert "'./models/no-such-student' was not found" in error
    assert "Repo id" not in error


def test_shipped_example_files_valid():
    examples = Path(__file__).resolve().parents[1] / "examples"
    data = read_texts(examples / "news.txt")
    assert len(data.texts) == 40
    assert data.blank_lines == 0
    assert read_class_names(examples / "news_classes.txt") == ["world", "sports", "business", "science/tech"]


@pytest.mark.parametrize(
    ("remove", "damage", "message"),
    [
        ("config.json", None, "has no config.json, so it is not a model"),
        ("tokenizer.json", None, "has no tokenizer vocabulary"),
        ("model.safetensors", None, "has no weights"),
        (None, "model.safetensors", "cannot be read"),
    ],
)
def test_incomplete_student_rejected_before_teacher_pass(
    tmp_path, capsys, news_files, bert_teacher, student, remove, damage, message
):
    broken = tmp_path / "broken_student"
    shutil.copytree(student, broken)
    if remove:
        (broken / remove).unlink()
    if damage:
        (broken / damage).write_bytes(b"\x00" * 16)
    assert main(cli_args(*news_files, tmp_path / "o", bert_teacher, broken)) == 2
    error = capsys.readouterr().err
    assert message in error
    assert str(broken) in error
    assert not (tmp_path / "o").exists()


def test_empty_output_dir_rejected(news_files, bert_teacher, student, capsys):
    with pytest.raises(SystemExit):
        main(cli_args(*news_files, "", bert_teacher, student))
    assert "must be a directory path, got an empty string" in capsys.readouterr().err


def test_unknown_subcommand(capsys):
    assert main(["trian", "--data_file", "texts.txt"]) == 2
    error = capsys.readouterr().err
    assert "unknown subcommand 'trian'" in error
    assert "train" in error


def test_validation_split_keeps_copies_together():
    texts = ["a", "b", "a", "c", "b", "a", "d", "e"]
    train, held_out = split_validation(texts, 0.4, seed=0)
    assert sorted(train + held_out) == list(range(len(texts)))
    assert {texts[index] for index in train}.isdisjoint(texts[index] for index in held_out)
    # Two of the five distinct texts are held out, with all their copies.
    assert len({texts[index] for index in held_out}) == 2
