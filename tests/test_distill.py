"""The main job end to end on tiny local models: outputs, reloading, modes and reproducibility."""

import json

import pytest
import torch
from conftest import CLASS_NAMES, NEWS_TEXTS, cli_args, write_lines
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, pipeline

from zsdistill.cli import main
from zsdistill.predictions import load_teacher_predictions


def run_main(data_file, class_file, output_dir, teacher, student, *extra) -> int:
    small_run = [
        "--hypothesis_template",
        "This text is about {}.",
        "--num_train_epochs",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--teacher_batch_size",
        "5",
        "--validation_split",
        "0.25",
        "--cpu",
    ]
    return main(cli_args(data_file, class_file, output_dir, teacher, student, *small_run, *extra))


def test_output_loads_in_text_classification_pipeline(news_files, tmp_path, bert_teacher, student):
    output_dir = tmp_path / "out"
    assert run_main(*news_files, output_dir, bert_teacher, student) == 0

    classifier = pipeline("text-classification", model=str(output_dir), top_k=None, device="cpu")
    result = classifier(["The team won the match.", "Shares fell."])
    assert len(result) == 2
    for scores in result:
        assert sorted(score["label"] for score in scores) == sorted(CLASS_NAMES)
        assert sum(score["score"] for score in scores) == pytest.approx(1.0, abs=1e-5)


def test_output_files(news_files, tmp_path, bert_teacher, student):
    output_dir = tmp_path / "out"
    run_main(*news_files, output_dir, bert_teacher, student)

    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "teacher_predictions.safetensors"):
        assert (output_dir / name).is_file(), name

    config = json.loads((output_dir / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(CLASS_NAMES)}
    assert config["problem_type"] == "single_label_classification"

    logits, metadata = load_teacher_predictions(output_dir / "teacher_predictions.safetensors")
    assert logits.entailment.shape == (len(NEWS_TEXTS), len(CLASS_NAMES))
    assert logits.contradiction.shape == (len(NEWS_TEXTS), len(CLASS_NAMES))
    assert metadata["class_names"] == CLASS_NAMES
    assert metadata["hypothesis_template"] == "This text is about {}."

    card = (output_dir / "README.md").read_text()
    assert str(bert_teacher) in card
    assert "This text is about {}." in card
    assert "single-label" in card
    for name in CLASS_NAMES:
        assert f"| {name} |" in card
    assert "--output_dir" in card

    run = json.loads((output_dir / "zsdistill_run.json").read_text())
    assert run["num_examples"] == len(NEWS_TEXTS)
    assert run["num_pairs"] == len(NEWS_TEXTS) * len(CLASS_NAMES)
    assert len(run["epochs"]) == 2
    # Six training texts in batches of 4 make two optimizer steps per epoch.
    assert [epoch["optimizer_steps"] for epoch in run["epochs"]] == [2, 4]
    assert 0.0 <= run["agreement"] <= 1.0


def test_multi_label_output(news_files, tmp_path, roberta_teacher, student):
    output_dir = tmp_path / "out"
    assert run_main(*news_files, output_dir, roberta_teacher, student, "--multi_label") == 0

    config = json.loads((output_dir / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    logits, _ = load_teacher_predictions(output_dir / "teacher_predictions.safetensors")
    assert logits.contradiction is not None

    classifier = pipeline("text-classification", model=str(output_dir), top_k=None, device="cpu")
    scores = classifier(["The team won the match."])[0]
    assert sorted(score["label"] for score in scores) == sorted(CLASS_NAMES)
    # A sigmoid per class: the scores are independent and need not sum to one.
    assert all(0.0 < score["score"] < 1.0 for score in scores)
    assert "multi-label" in (output_dir / "README.md").read_text()


def test_multi_class_alias_warns(news_files, tmp_path, capsys, bert_teacher, student):
    output_dir = tmp_path / "out"
    assert run_main(*news_files, output_dir, bert_teacher, student, "--multi_class") == 0
    assert "--multi_class is deprecated" in capsys.readouterr().err
    config = json.loads((output_dir / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"


def test_single_class_trained_per_class(tmp_path, bert_teacher, student):
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    class_file = write_lines(tmp_path / "classes.txt", ["sports"])
    output_dir = tmp_path / "out"
    assert run_main(data_file, class_file, output_dir, bert_teacher, student) == 0

    logits, _ = load_teacher_predictions(output_dir / "teacher_predictions.safetensors")
    assert logits.entailment.shape == (len(NEWS_TEXTS), 1)
    assert logits.contradiction.shape == (len(NEWS_TEXTS), 1)
    config = json.loads((output_dir / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"


def test_single_text(tmp_path, bert_teacher, student):
    data_file = write_lines(tmp_path / "texts.txt", ["The team won the match."])
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    output_dir = tmp_path / "out"
    assert run_main(data_file, class_file, output_dir, bert_teacher, student) == 0

    run = json.loads((output_dir / "zsdistill_run.json").read_text())
    assert run["num_examples"] == 1
    # One text cannot be both trained on and held out.
    assert run["agreement"] is None
    assert "not measured" in (output_dir / "README.md").read_text()
    AutoModelForSequenceClassification.from_pretrained(output_dir)


def test_blank_lines_skipped_and_counted(tmp_path, bert_teacher, student):
    data_file = tmp_path / "texts.txt"
    data_file.write_text("\n" + "\n\n".join(NEWS_TEXTS[:4]) + "\n   \n", encoding="utf-8")
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    output_dir = tmp_path / "out"
    assert run_main(data_file, class_file, output_dir, bert_teacher, student) == 0

    run = json.loads((output_dir / "zsdistill_run.json").read_text())
    assert run["num_examples"] == 4
    assert run["num_blank_lines"] == 5


def test_same_seed_same_student(news_files, tmp_path, bert_teacher, student):
    run_main(*news_files, tmp_path / "first", bert_teacher, student, "--seed", "7")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    run_main(*news_files, tmp_path / "second", bert_teacher, student, "--seed", "7")

    first = load_file(tmp_path / "first" / "model.safetensors")
    second = load_file(tmp_path / "second" / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=0, rtol=0, msg=name)


def test_other_seed_other_student(news_files, tmp_path, bert_teacher, student):
    run_main(*news_files, tmp_path / "first", bert_teacher, student, "--seed", "7")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    run_main(*news_files, tmp_path / "second", bert_teacher, student, "--seed", "8")

    first = load_file(tmp_path / "first" / "model.safetensors")
    second = load_file(tmp_path / "second" / "model.safetensors")
    assert not torch.equal(first["classifier.weight"], second["classifier.weight"])


def test_training_moves_student_toward_teacher(news_files, tmp_path, bert_teacher, student):
    output_dir = tmp_path / "out"
    run_main(*news_files, output_dir, bert_teacher, student, "--num_train_epochs", "20", "--learning_rate", "1e-3")
    run = json.loads((output_dir / "zsdistill_run.json").read_text())
    losses = [epoch["train_loss"] for epoch in run["epochs"]]
    assert losses[-1] < losses[0]


def test_overwrite_output_dir(news_files, tmp_path, bert_teacher, student):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "old.txt").write_text("old")
    assert run_main(*news_files, output_dir, bert_teacher, student) == 2
    assert not (output_dir / "config.json").exists()

    assert run_main(*news_files, output_dir, bert_teacher, student, "--overwrite_output_dir") == 0
    assert (output_dir / "config.json").is_file()


def test_gradient_accumulation_and_bf16(news_files, tmp_path, bert_teacher, student):
    output_dir = tmp_path / "out"
    extra = ("--gradient_accumulation_steps", "2", "--mixed_precision", "bf16")
    assert run_main(*news_files, output_dir, bert_teacher, student, *extra) == 0
    run = json.loads((output_dir / "zsdistill_run.json").read_text())
    assert run["arguments"]["mixed_precision"] == "bf16"
    # Two batches per epoch, summed over two accumulation steps, make one optimizer step per epoch.
    assert [epoch["optimizer_steps"] for epoch in run["epochs"]] == [1, 2]
    AutoModelForSequenceClassification.from_pretrained(output_dir)


def test_fractional_epochs(news_files, tmp_path, bert_teacher, student):
    output_dir = tmp_path / "out"
    # Six training texts in batches of 4 make two steps per epoch, so half an epoch is one step.
    assert run_main(*news_files, output_dir, bert_teacher, student, "--num_train_epochs", "0.5") == 0
    run = json.loads((output_dir / "zsdistill_run.json").read_text())
    assert len(run["epochs"]) == 1
    assert run["epochs"][0]["optimizer_steps"] == 1
    assert run["epochs"][0]["agreement"] is not None


def test_single_step_run_trains(tmp_path, bert_teacher, student):
    # Four texts in one batch make one optimizer step, which warmup must not spend at a learning rate of zero.
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS[:4])
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    output_dir = tmp_path / "out"
    extra = ("--num_train_epochs", "1", "--validation_split", "0", "--learning_rate", "1e-3")
    assert run_main(data_file, class_file, output_dir, bert_teacher, student, *extra) == 0
    run = json.loads((output_dir / "zsdistill_run.json").read_text())
    assert run["epochs"][-1]["optimizer_steps"] == 1

    trained = load_file(output_dir / "model.safetensors")
    base = load_file(student / "model.safetensors")
    name = "distilbert.embeddings.word_embeddings.weight"
    assert name in trained
    assert not torch.equal(trained[name], base[name.removeprefix("distilbert.")])


def test_diverged_training_stops(news_files, tmp_path, capsys, bert_teacher, student):
    output_dir = tmp_path / "out"
    assert run_main(*news_files, output_dir, bert_teacher, student, "--learning_rate", "1e12") == 1
    error = capsys.readouterr().err
    assert "Training diverged" in error
    assert "--learning_rate" in error
    # The teacher's work is kept, and no student is saved.
    assert (output_dir / "teacher_predictions.safetensors").is_file()
    assert not (output_dir / "model.safetensors").exists()


def test_fp16_on_cpu_rejected(news_files, tmp_path, capsys, bert_teacher, student):
    assert run_main(*news_files, tmp_path / "out", bert_teacher, student, "--fp16") == 2
    assert "bf16" in capsys.readouterr().err
    assert not (tmp_path / "out" / "teacher_predictions.safetensors").exists()


def test_output_file_permissions(news_files, tmp_path, bert_teacher, student):
    import os

    output_dir = tmp_path / "out"
    run_main(*news_files, output_dir, bert_teacher, student)
    modes = {path.name: path.stat().st_mode & 0o777 for path in output_dir.iterdir()}
    umask = os.umask(0)
    os.umask(umask)
    assert modes["model.safetensors"] == 0o666 & ~umask
    assert modes["teacher_predictions.safetensors"] == modes["config.json"]
