"""`zsdistill predict`: one JSON line per text in input order, top-k labels, thresholds and several processes."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import CLASS_NAMES, NEWS_TEXTS, write_lines
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from zsdistill.cli import main

# Scores are written rounded to 6 decimals.
SCORE_TOLERANCE = 2e-6


def transformers_scores(model_dir, texts) -> torch.Tensor:
    """The classifier's scores for `texts`, computed with transformers alone."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    multi_label = model.config.problem_type == "multi_label_classification"
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)


def read_predictions(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def predict(model_dir, data_file, output_file, *extra) -> list[dict]:
    argv = ["predict", "--model", str(model_dir), "--data_file", str(data_file), "--output_file", str(output_file)]
    assert main([*argv, "--cpu", *extra]) == 0
    return read_predictions(output_file)


def scores_tensor(lines: list[dict]) -> torch.Tensor:
    return torch.tensor([[line["scores"][name] for name in CLASS_NAMES] for line in lines])


@pytest.fixture
def jsonl_with_empty_row(tmp_path):
    """NEWS_TEXTS as .jsonl with an empty text on row 3, so the texts are on rows 1, 2 and 4 to 9."""
    rows = [{"text": text} for text in NEWS_TEXTS]
    rows.insert(2, {"text": ""})
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_predict_rows_in_input_order(tmp_path, single_label_classifier, jsonl_with_empty_row):
    # Batches of three, sorted by length inside the loop, must still come out in file order.
    lines = predict(
        single_label_classifier, jsonl_with_empty_row, tmp_path / "p.jsonl", "--per_device_eval_batch_size", "3"
    )
    assert [line["row"] for line in lines] == [1, 2, 4, 5, 6, 7, 8, 9]

    expected = transformers_scores(single_label_classifier, NEWS_TEXTS)
    torch.testing.assert_close(scores_tensor(lines), expected, atol=SCORE_TOLERANCE, rtol=0)
    best = [CLASS_NAMES[index] for index in expected.argmax(dim=-1).tolist()]
    assert len(set(best)) > 1, "the fitted classifier should not predict one class for every text"
    assert [line["label"] for line in lines] == best
    assert [line["labels"] for line in lines] == [[label] for label in best]
    assert all(list(line["scores"]) == CLASS_NAMES for line in lines)


def test_predict_txt_row_numbers(tmp_path, single_label_classifier):
    data_file = tmp_path / "texts.txt"
    data_file.write_text(f"{NEWS_TEXTS[0]}\n\n{NEWS_TEXTS[1]}\n", encoding="utf-8")
    lines = predict(single_label_classifier, data_file, tmp_path / "p.jsonl")
    assert [line["row"] for line in lines] == [1, 3]


def test_predict_top_k(tmp_path, single_label_classifier):
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    lines = predict(single_label_classifier, data_file, tmp_path / "p.jsonl", "--top_k", "3")
    expected = transformers_scores(single_label_classifier, NEWS_TEXTS)
    for line, scores in zip(lines, expected, strict=True):
        best_three = [CLASS_NAMES[index] for index in scores.argsort(descending=True)[:3].tolist()]
        assert line["labels"] == best_three
        assert line["label"] == best_three[0]


def test_predict_multi_label_threshold(tmp_path, multi_label_classifier):
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    expected = transformers_scores(multi_label_classifier, NEWS_TEXTS)
    threshold = expected.median().item()
    lines = predict(multi_label_classifier, data_file, tmp_path / "p.jsonl", "--threshold", str(threshold))

    torch.testing.assert_close(scores_tensor(lines), expected, atol=SCORE_TOLERANCE, rtol=0)
    counts = [len(line["labels"]) for line in lines]
    assert len(set(counts)) > 1, "the threshold should give texts different numbers of labels"
    for line, scores in zip(lines, expected, strict=True):
        above = [index for index in scores.argsort(descending=True).tolist() if scores[index] >= threshold]
        assert line["labels"] == [CLASS_NAMES[index] for index in above]
        assert line["label"] == (CLASS_NAMES[above[0]] if above else None)


def test_predict_multi_label_top_k_caps_labels(tmp_path, multi_label_classifier):
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    lines = predict(multi_label_classifier, data_file, tmp_path / "p.jsonl", "--threshold", "0", "--top_k", "2")
    expected = transformers_scores(multi_label_classifier, NEWS_TEXTS)
    for line, scores in zip(lines, expected, strict=True):
        assert line["labels"] == [CLASS_NAMES[index] for index in scores.argsort(descending=True)[:2].tolist()]


def test_predict_multi_label_default_threshold(tmp_path, multi_label_classifier):
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    lines = predict(multi_label_classifier, data_file, tmp_path / "p.jsonl")
    for line in lines:
        assert all(line["scores"][label] >= 0.5 for label in line["labels"])
        assert all(score < 0.5 for name, score in line["scores"].items() if name not in line["labels"])


def run_torchrun_predict(model_dir, data_file, output_file) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "zsdistill", "predict"]
    command += ["--model", str(model_dir), "--data_file", str(data_file), "--output_file", str(output_file)]
    command += ["--per_device_eval_batch_size", "2", "--cpu"]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env=os.environ)


@pytest.mark.parametrize("num_texts", [5, 1])
def test_predict_two_processes_input_order(tmp_path, single_label_classifier, num_texts):
    # Five texts in batches of two per process leave the last step short; one text leaves a process without any.
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS[:num_texts])
    single = predict(single_label_classifier, data_file, tmp_path / "one.jsonl", "--per_device_eval_batch_size", "2")
    result = run_torchrun_predict(single_label_classifier, data_file, tmp_path / "two.jsonl")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"processes\W+2\W", result.stderr), "the plan should report two processes"

    distributed = read_predictions(tmp_path / "two.jsonl")
    assert [line["row"] for line in distributed] == list(range(1, num_texts + 1))
    assert [line["labels"] for line in distributed] == [line["labels"] for line in single]
    torch.testing.assert_close(scores_tensor(distributed), scores_tensor(single), atol=SCORE_TOLERANCE, rtol=0)


def test_predict_threshold_single_label_rejected(tmp_path, single_label_classifier, capsys):
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    argv = ["predict", "--model", str(single_label_classifier), "--data_file", str(data_file)]
    assert main([*argv, "--output_file", str(tmp_path / "p.jsonl"), "--threshold", "0.7"]) == 2
    assert "--threshold 0.7 applies to multi-label models" in capsys.readouterr().err
    assert not (tmp_path / "p.jsonl").exists()


def test_predict_top_k_above_classes_rejected(tmp_path, single_label_classifier, capsys):
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    argv = ["predict", "--model", str(single_label_classifier), "--data_file", str(data_file)]
    assert main([*argv, "--output_file", str(tmp_path / "p.jsonl"), "--top_k", "5"]) == 2
    assert "--top_k 5 is more than the 4 classes" in capsys.readouterr().err


def test_predict_output_over_input_rejected(tmp_path, single_label_classifier, capsys):
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    argv = ["predict", "--model", str(single_label_classifier), "--data_file", str(data_file)]
    assert main([*argv, "--output_file", str(data_file)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert data_file.read_text(encoding="utf-8").splitlines() == NEWS_TEXTS


def test_predict_output_directory_missing(tmp_path, single_label_classifier, capsys):
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    argv = ["predict", "--model", str(single_label_classifier), "--data_file", str(data_file)]
    assert main([*argv, "--output_file", str(tmp_path / "missing" / "p.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_predict_model_without_head_rejected(tmp_path, student, capsys):
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    argv = ["predict", "--model", str(student), "--data_file", str(data_file), "--cpu"]
    assert main([*argv, "--output_file", str(tmp_path / "p.jsonl")]) == 2
    assert "lacks trained weights" in capsys.readouterr().err
