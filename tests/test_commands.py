"""The `teacher` and `train` subcommands: a student trained from saved predictions, without the teacher."""

import json

import pytest
import torch
from conftest import CLASS_NAMES, NEWS_TEXTS, write_lines
from safetensors.torch import load_file
from test_teacher_cache import teacher_argv
from transformers import pipeline

from zsdistill.cli import main


def train_argv(predictions_dir, data_file, output_dir, student, *extra: str) -> list[str]:
    return [
        "train",
        "--teacher_predictions",
        str(predictions_dir),
        "--data_file",
        str(data_file),
        "--output_dir",
        str(output_dir),
        "--student_name_or_path",
        str(student),
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--cpu",
        *extra,
    ]


@pytest.fixture
def teacher_dir(tmp_path, news_files, bert_teacher):
    output_dir = tmp_path / "teacher"
    assert main(teacher_argv(*news_files, output_dir, bert_teacher)) == 0
    return output_dir


def fail_to_load(*args, **kwargs):
    raise AssertionError("the teacher was loaded")


def test_train_from_predictions_without_teacher(tmp_path, news_files, teacher_dir, student, monkeypatch):
    monkeypatch.setattr("zsdistill.distill.load_teacher", fail_to_load)
    output_dir = tmp_path / "student"
    assert main(train_argv(teacher_dir, news_files[0], output_dir, student)) == 0

    classifier = pipeline("text-classification", model=str(output_dir), top_k=None, device="cpu")
    scores = classifier(["The team won the match."])[0]
    assert sorted(score["label"] for score in scores) == sorted(CLASS_NAMES)
    run = json.loads((output_dir / "zsdistill_run.json").read_text())
    assert run["teacher_predictions"] == str(teacher_dir / "teacher_predictions.safetensors")
    assert run["num_examples"] == len(NEWS_TEXTS)


def test_other_temperature_reuses_predictions(tmp_path, news_files, teacher_dir, student, monkeypatch):
    monkeypatch.setattr("zsdistill.distill.load_teacher", fail_to_load)
    weights = {}
    for temperature in ("1.0", "4.0"):
        output_dir = tmp_path / f"student-{temperature}"
        argv = train_argv(teacher_dir, news_files[0], output_dir, student, "--temperature", temperature)
        assert main(argv) == 0
        weights[temperature] = load_file(output_dir / "model.safetensors")
    # The same seed and data with other soft labels give other weights.
    assert not torch.equal(weights["1.0"]["classifier.weight"], weights["4.0"]["classifier.weight"])


def test_train_into_teacher_directory(news_files, teacher_dir, student):
    assert main(train_argv(teacher_dir, news_files[0], teacher_dir, student)) == 0
    assert (teacher_dir / "model.safetensors").is_file()
    assert (teacher_dir / "teacher_predictions.safetensors").is_file()


def test_distill_rerun_reuses_teacher(tmp_path, news_files, bert_teacher, student, monkeypatch):
    output_dir = tmp_path / "out"
    argv = [*teacher_argv(*news_files, output_dir, bert_teacher)[1:], "--student_name_or_path", str(student)]
    argv += ["--num_train_epochs", "1", "--per_device_train_batch_size", "4"]
    assert main(argv) == 0
    monkeypatch.setattr("zsdistill.distill.load_teacher", fail_to_load)
    assert main([*argv, "--overwrite_output_dir", "--temperature", "2.0"]) == 0
    run = json.loads((output_dir / "zsdistill_run.json").read_text())
    assert run["teacher_pairs_scored"] == 0


def test_train_rejects_other_data(tmp_path, teacher_dir, student, capsys):
    data_file = write_lines(tmp_path / "other.txt", NEWS_TEXTS[:-1])
    assert main(train_argv(teacher_dir, data_file, tmp_path / "student", student)) == 2
    error = capsys.readouterr().err
    assert f"({len(NEWS_TEXTS) - 1} texts) differ" in error
    assert f"({len(NEWS_TEXTS)} texts)" in error


def test_train_missing_predictions(tmp_path, news_files, student, capsys):
    assert main(train_argv(tmp_path / "nothing", news_files[0], tmp_path / "student", student)) == 2
    assert "no teacher_predictions.safetensors found" in capsys.readouterr().err


def test_train_unfinished_predictions(tmp_path, news_files, student, capsys):
    (tmp_path / "partial" / "teacher_chunks").mkdir(parents=True)
    assert main(train_argv(tmp_path / "partial", news_files[0], tmp_path / "student", student)) == 2
    assert "unfinished teacher pass" in capsys.readouterr().err


def test_train_multi_label_needs_contradiction(tmp_path, news_files, student, capsys):
    from conftest import save_teacher

    teacher = save_teacher(tmp_path / "binary", ["entailment", "neutral"])
    predictions_dir = tmp_path / "teacher"
    assert main(teacher_argv(*news_files, predictions_dir, teacher)) == 0
    argv = train_argv(predictions_dir, news_files[0], tmp_path / "student", student, "--multi_label")
    assert main(argv) == 2
    assert "no contradiction logits" in capsys.readouterr().err


def test_subcommand_help_lists_flags(capsys):
    for name, flag in (("teacher", "--teacher_chunk_size"), ("train", "--teacher_predictions")):
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert flag in capsys.readouterr().out
