"""Gold-label evaluation: the metrics, label names and ids, `zsdistill evaluate` and the run's --eval_file."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import CLASS_NAMES, NEWS_TEXTS, cli_args, write_lines
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from zsdistill.cli import main
from zsdistill.data import InputError, TextFile
from zsdistill.evaluation import classification_report
from zsdistill.gold_labels import read_gold_labels

TEMPLATE = "This text is about {}."
# Gold labels of NEWS_TEXTS, by class name.
GOLD = ["sports", "business", "science", "politics", "business", "sports", "science", "politics"]


def labeled_file(path, labels, texts=NEWS_TEXTS):
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels, strict=True))
    return path


def text_file(labels, rows=None) -> TextFile:
    rows = rows or list(range(1, len(labels) + 1))
    return TextFile(path="labels.csv", texts=["t"] * len(labels), blank_lines=0, row_numbers=rows, labels=labels)


def run_evaluate(*argv) -> None:
    assert main(["evaluate", *map(str, argv), "--cpu"]) == 0


def test_single_label_report_by_hand():
    # Confusion matrix (rows gold, columns predicted), class 3 never occurs:
    #   gold 0: 1 1 0 0   gold 1: 0 2 0 0   gold 2: 1 0 1 0   gold 3: 0 0 0 0
    # class 0: P 1/2 R 1/2 F1 1/2; class 1: P 2/3 R 1 F1 4/5; class 2: P 1 R 1/2 F1 2/3; class 3: all 0.
    report = classification_report(
        torch.tensor([0, 1, 1, 1, 2, 0]), torch.tensor([0, 0, 1, 1, 2, 2]), ["a", "b", "c", "d"], multi_label=False
    )
    assert report["accuracy"] == pytest.approx(4 / 6)
    # The mean over the classes that occur, so class 3 does not count.
    assert report["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert report["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    expected = {
        "a": (1 / 2, 1 / 2, 1 / 2, 2),
        "b": (2 / 3, 1.0, 4 / 5, 2),
        "c": (1.0, 1 / 2, 2 / 3, 2),
        "d": (0.0, 0.0, 0.0, 0),
    }
    for name, (precision, recall, f1, support) in expected.items():
        figures = report["per_class"][name]
        assert figures["precision"] == pytest.approx(precision), name
        assert figures["recall"] == pytest.approx(recall), name
        assert figures["f1"] == pytest.approx(f1), name
        assert figures["support"] == support, name


def test_predicted_absent_class_counts_in_macro_f1():
    # Class 1 is never gold but predicted once, so its F1 of 0 enters the mean: (2/3 + 0) / 2.
    report = classification_report(torch.tensor([0, 1]), torch.tensor([0, 0]), ["a", "b"], multi_label=False)
    assert report["accuracy"] == pytest.approx(0.5)
    assert report["per_class"]["a"]["f1"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx(1 / 3)


def test_multi_label_report_by_hand():
    gold = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]])
    predictions = torch.tensor([[1, 0, 0], [1, 0, 1], [0, 0, 1], [1, 1, 0]])
    # class 0: TP 2 FP 1 FN 0; class 1: TP 1 FP 0 FN 1; class 2: TP 1 FP 1 FN 0. Summed: TP 4, FP 2, FN 1.
    report = classification_report(predictions, gold, ["a", "b", "c"], multi_label=True)
    assert report["micro_precision"] == pytest.approx(4 / 6)
    assert report["micro_recall"] == pytest.approx(4 / 5)
    assert report["micro_f1"] == pytest.approx(8 / 11)
    assert report["macro_f1"] == pytest.approx((4 / 5 + 2 / 3 + 2 / 3) / 3)
    assert report["exact_match"] == pytest.approx(2 / 4)
    assert report["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["b"]["recall"] == pytest.approx(1 / 2)
    assert report["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert [report["per_class"][name]["support"] for name in "abc"] == [2, 2, 1]
    assert [report["per_class"][name]["predicted"] for name in "abc"] == [3, 1, 2]
    assert "confusion_matrix" not in report


def test_multi_label_absent_class_counts_in_macro_f1():
    # Class 1 is neither gold nor predicted anywhere: its F1 of 0 still enters the mean over all classes.
    report = classification_report(torch.tensor([[1, 0]]), torch.tensor([[1, 0]]), ["a", "b"], multi_label=True)
    assert report["micro_f1"] == pytest.approx(1.0)
    assert report["per_class"]["b"]["f1"] == 0.0
    assert report["macro_f1"] == pytest.approx(0.5)


def test_labels_by_class_name():
    gold = read_gold_labels(text_file([" business", "sports", "politics "]), CLASS_NAMES, multi_label=False)
    assert gold.tolist() == [1, 0, 3]


def test_labels_by_zero_based_id():
    assert read_gold_labels(text_file(["0", "3", 2]), CLASS_NAMES, multi_label=False).tolist() == [0, 3, 2]


def test_labels_by_one_based_id():
    gold = read_gold_labels(text_file(["1", "4", 2]), CLASS_NAMES, multi_label=False, first_label_id=1)
    assert gold.tolist() == [0, 3, 1]


def test_class_name_wins_over_id():
    # A class named "1" is matched by name, and "0" falls back to the id of the first class.
    gold = read_gold_labels(text_file(["1", "0"]), ["zero", "1"], multi_label=False)
    assert gold.tolist() == [1, 0]


def test_unknown_label_named():
    with pytest.raises(InputError, match="Unknown label 'football' on row 7 of labels.csv") as raised:
        read_gold_labels(text_file(["sports", "football"], rows=[2, 7]), CLASS_NAMES, multi_label=False)
    assert "'sports', 'business', 'science', 'politics'" in str(raised.value)
    assert "from 0 to 3" in str(raised.value)


def test_out_of_range_id_suggests_first_label_id():
    with pytest.raises(InputError, match="Unknown label '4' on row 2") as raised:
        read_gold_labels(text_file(["1", "4"]), CLASS_NAMES, multi_label=False)
    assert "--first_label_id 1" in str(raised.value)


def test_id_below_first_label_id_rejected():
    with pytest.raises(InputError, match="Unknown label '0'.*from 1 to 4"):
        read_gold_labels(text_file(["0"]), CLASS_NAMES, multi_label=False, first_label_id=1)


def test_missing_label_rejected():
    with pytest.raises(InputError, match="Row 2 of labels.csv has a text but no label in --label_column"):
        read_gold_labels(text_file(["sports", " "]), CLASS_NAMES, multi_label=False)


def test_list_label_single_label_rejected():
    with pytest.raises(InputError, match="has a list of labels"):
        read_gold_labels(text_file([["sports"]]), CLASS_NAMES, multi_label=False)


@pytest.mark.parametrize("value", [True, 1.5, {"a": 1}])
def test_non_label_json_value_rejected(value):
    with pytest.raises(InputError, match="is the JSON value"):
        read_gold_labels(text_file([value]), CLASS_NAMES, multi_label=False)


def test_multi_label_lists():
    labels = [["sports", 3], '["business"]', "sports, science", "", None, "politics", 2]
    gold = read_gold_labels(text_file(labels), CLASS_NAMES, multi_label=True)
    assert gold.tolist() == [
        [1, 0, 0, 1],
        [0, 1, 0, 0],
        [1, 0, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 1],
        [0, 0, 1, 0],
    ]


def test_multi_label_name_with_comma():
    class_names = ["sports", "arts, culture"]
    gold = read_gold_labels(text_file(["arts, culture", '["arts, culture", "sports"]']), class_names, True)
    assert gold.tolist() == [[0, 1], [1, 1]]
    # Not a class name as a whole, the field is split on commas, and "arts" is no class.
    with pytest.raises(InputError, match="Unknown label 'arts'"):
        read_gold_labels(text_file(["arts, culture,sports"]), class_names, True)


def test_multi_label_unknown_label_named():
    with pytest.raises(InputError, match="Unknown label 'cooking' on row 1"):
        read_gold_labels(text_file(['["sports", "cooking"]']), CLASS_NAMES, multi_label=True)


def test_multi_label_invalid_json_list():
    with pytest.raises(InputError, match="not a valid JSON list"):
        read_gold_labels(text_file(['["sports",']), CLASS_NAMES, multi_label=True)


def student_predictions(model_dir, texts) -> torch.Tensor:
    """The classifier's scores for `texts`, computed with transformers alone."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    multi_label = model.config.problem_type == "multi_label_classification"
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)


def confusion_by_hand(gold: list[int], predicted: list[int], num_classes: int) -> list[list[int]]:
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for gold_class, predicted_class in zip(gold, predicted, strict=True):
        matrix[gold_class][predicted_class] += 1
    return matrix


def test_evaluate_student_matches_transformers(tmp_path, single_label_classifier, capsys):
    data_file = labeled_file(tmp_path / "gold.csv", GOLD)
    report_file = tmp_path / "report.json"
    run_evaluate(
        "--model",
        single_label_classifier,
        "--data_file",
        data_file,
        "--label_column",
        "label",
        "--output_file",
        report_file,
        "--per_device_eval_batch_size",
        "3",
    )
    report = json.loads(report_file.read_text())

    predicted = student_predictions(single_label_classifier, NEWS_TEXTS).argmax(dim=-1).tolist()
    gold = [CLASS_NAMES.index(label) for label in GOLD]
    assert len(set(predicted)) > 1, "the fitted classifier should not predict one class for every text"
    correct = sum(prediction == label for prediction, label in zip(predicted, gold, strict=True))
    assert report["accuracy"] == pytest.approx(correct / len(gold))
    assert report["confusion_matrix"] == confusion_by_hand(gold, predicted, len(CLASS_NAMES))
    assert report["num_examples"] == len(NEWS_TEXTS)
    assert report["class_names"] == CLASS_NAMES
    assert report["kind"] == "classifier"
    assert report["seconds"] > 0

    output = capsys.readouterr().err
    assert "per class" in output
    assert "confusion matrix" in output
    assert "accuracy" in output


def test_evaluate_ids_from_one(tmp_path, single_label_classifier):
    by_name, by_id = tmp_path / "name.json", tmp_path / "id.json"
    name_file = labeled_file(tmp_path / "name.csv", GOLD)
    id_file = labeled_file(tmp_path / "id.csv", [str(CLASS_NAMES.index(label) + 1) for label in GOLD])
    common = ["--model", single_label_classifier, "--label_column", "label"]
    run_evaluate(*common, "--data_file", name_file, "--output_file", by_name)
    run_evaluate(*common, "--data_file", id_file, "--output_file", by_id, "--first_label_id", "1")
    assert json.loads(by_id.read_text())["confusion_matrix"] == json.loads(by_name.read_text())["confusion_matrix"]


def test_evaluate_teacher_matches_zero_shot_pipeline(tmp_path, bert_teacher):
    data_file = labeled_file(tmp_path / "gold.csv", GOLD)
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    report_file = tmp_path / "report.json"
    run_evaluate(
        "--teacher_name_or_path",
        bert_teacher,
        "--class_names_file",
        class_file,
        "--hypothesis_template",
        TEMPLATE,
        "--data_file",
        data_file,
        "--label_column",
        "label",
        "--output_file",
        report_file,
        "--teacher_batch_size",
        "5",
        "--teacher_dtype",
        "float32",
    )
    report = json.loads(report_file.read_text())

    classifier = pipeline("zero-shot-classification", model=str(bert_teacher), device="cpu")
    results = classifier(NEWS_TEXTS, candidate_labels=CLASS_NAMES, hypothesis_template=TEMPLATE)
    predicted = [CLASS_NAMES.index(result["labels"][0]) for result in results]
    gold = [CLASS_NAMES.index(label) for label in GOLD]
    assert report["confusion_matrix"] == confusion_by_hand(gold, predicted, len(CLASS_NAMES))
    assert report["kind"] == "zero-shot teacher"


def test_evaluate_multi_label_student(tmp_path, multi_label_classifier):
    gold_lists = [
        ["sports"],
        ["business", "science"],
        [],
        ["politics"],
        ["sports", "business"],
        ["science"],
        ["science", "politics"],
        ["business"],
    ]
    data_file = tmp_path / "gold.jsonl"
    rows = [{"text": text, "topics": labels} for text, labels in zip(NEWS_TEXTS, gold_lists, strict=True)]
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    scores = student_predictions(multi_label_classifier, NEWS_TEXTS)
    threshold = scores.median().item()
    report_file = tmp_path / "report.json"
    run_evaluate(
        "--model",
        multi_label_classifier,
        "--data_file",
        data_file,
        "--label_column",
        "topics",
        "--threshold",
        threshold,
        "--output_file",
        report_file,
    )
    report = json.loads(report_file.read_text())

    predicted = scores >= threshold
    gold = torch.tensor([[name in labels for name in CLASS_NAMES] for labels in gold_lists])
    true_positives = (predicted & gold).sum().item()
    false_positives = (predicted & ~gold).sum().item()
    false_negatives = (~predicted & gold).sum().item()
    assert 0 < predicted.sum() < predicted.numel(), "the threshold should split the scores"
    micro_f1 = 2 * true_positives / (2 * true_positives + false_positives + false_negatives)
    assert report["micro_f1"] == pytest.approx(micro_f1)
    assert report["exact_match"] == pytest.approx((predicted == gold).all(dim=1).float().mean().item())
    assert report["threshold"] == pytest.approx(threshold)
    assert report["multi_label"] is True
    assert "accuracy" not in report


def test_evaluate_unknown_label_before_loading(tmp_path, single_label_classifier, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model's weights were loaded before the labels were checked")

    monkeypatch.setattr("zsdistill.evaluation.load_classifier", fail)
    data_file = labeled_file(tmp_path / "gold.csv", GOLD[:-1] + ["weather"])
    argv = ["evaluate", "--model", str(single_label_classifier), "--data_file", str(data_file)]
    assert main([*argv, "--label_column", "label", "--cpu"]) == 2
    assert "Unknown label 'weather' on row 8" in capsys.readouterr().err


def test_evaluate_missing_label_column(tmp_path, single_label_classifier, capsys):
    data_file = labeled_file(tmp_path / "gold.csv", GOLD)
    argv = ["evaluate", "--model", str(single_label_classifier), "--data_file", str(data_file)]
    assert main([*argv, "--label_column", "topic", "--cpu"]) == 2
    error = capsys.readouterr().err
    assert "no column 'topic'" in error
    assert "'text', 'label'" in error


def test_evaluate_model_and_teacher_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(
            ["evaluate", "--model", "m", "--teacher_name_or_path", "t", "--data_file", "d.csv", "--label_column", "l"]
        )
    assert raised.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_evaluate_needs_model_or_teacher(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["evaluate", "--data_file", "d.csv", "--label_column", "l"])
    assert raised.value.code == 2
    assert "one of the arguments --model --teacher_name_or_path is required" in capsys.readouterr().err


def test_evaluate_teacher_needs_class_names(tmp_path, bert_teacher, capsys):
    data_file = labeled_file(tmp_path / "gold.csv", GOLD)
    argv = ["evaluate", "--teacher_name_or_path", str(bert_teacher), "--data_file", str(data_file)]
    assert main([*argv, "--label_column", "label"]) == 2
    assert "--teacher_name_or_path needs --class_names_file" in capsys.readouterr().err


def test_evaluate_teacher_options_with_model_rejected(tmp_path, single_label_classifier, capsys):
    data_file = labeled_file(tmp_path / "gold.csv", GOLD)
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    argv = ["evaluate", "--model", str(single_label_classifier), "--data_file", str(data_file)]
    assert main([*argv, "--label_column", "label", "--class_names_file", str(class_file), "--multi_label"]) == 2
    assert "options --class_names_file, --multi_label apply to a zero-shot teacher" in capsys.readouterr().err


def test_evaluate_threshold_single_label_rejected(tmp_path, single_label_classifier, capsys):
    data_file = labeled_file(tmp_path / "gold.csv", GOLD)
    argv = ["evaluate", "--model", str(single_label_classifier), "--data_file", str(data_file)]
    assert main([*argv, "--label_column", "label", "--threshold", "0.3"]) == 2
    assert "--threshold 0.3 applies to multi-label models" in capsys.readouterr().err


def test_evaluate_two_processes_one_prediction_per_row(tmp_path, single_label_classifier):
    # Five texts in batches of two per process: the last step repeats texts to fill the batches.
    texts, gold = NEWS_TEXTS[:5], GOLD[:5]
    data_file = labeled_file(tmp_path / "gold.csv", gold, texts)
    options = ["--model", str(single_label_classifier), "--data_file", str(data_file), "--label_column", "label"]
    options += ["--per_device_eval_batch_size", "2", "--cpu"]
    run_evaluate(*options, "--output_file", tmp_path / "one.json")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "zsdistill", "evaluate"]
    command = [*torchrun, *options, "--output_file", str(tmp_path / "two.json")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=os.environ)
    assert result.returncode == 0, result.stderr[-3000:]

    single, distributed = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert single["num_processes"] == 1
    assert distributed["num_processes"] == 2
    assert sum(map(sum, distributed["confusion_matrix"])) == len(texts)
    assert distributed["confusion_matrix"] == single["confusion_matrix"]


def run_distill_with_eval_file(tmp_path, teacher, student, *extra) -> tuple[int, object]:
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    eval_file = labeled_file(tmp_path / "gold.csv", GOLD)
    small_run = [
        "--hypothesis_template",
        TEMPLATE,
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--validation_split",
        "0.25",
        "--cpu",
        "--eval_file",
        str(eval_file),
    ]
    output_dir = tmp_path / "out"
    status = main(cli_args(data_file, class_file, output_dir, teacher, student, *small_run, *extra))
    return status, output_dir


def test_distill_reports_teacher_and_student_accuracy(tmp_path, bert_teacher, student, capsys):
    status, output_dir = run_distill_with_eval_file(tmp_path, bert_teacher, student, "--eval_label_column", "label")
    assert status == 0
    output = capsys.readouterr().err
    assert "Gold labels of" in output
    assert "agreement with the teacher" in output
    evaluation = json.loads((output_dir / "zsdistill_run.json").read_text())["evaluation"]

    # The run's figures equal those of `zsdistill evaluate` on the same file, for the teacher and the student.
    class_file, eval_file = tmp_path / "classes.txt", tmp_path / "gold.csv"
    teacher_report, student_report = tmp_path / "teacher.json", tmp_path / "student.json"
    run_evaluate(
        "--teacher_name_or_path",
        bert_teacher,
        "--class_names_file",
        class_file,
        "--hypothesis_template",
        TEMPLATE,
        "--data_file",
        eval_file,
        "--label_column",
        "label",
        "--output_file",
        teacher_report,
    )
    run_evaluate(
        "--model", output_dir, "--data_file", eval_file, "--label_column", "label", "--output_file", student_report
    )
    for role, report_file in (("teacher", teacher_report), ("student", student_report)):
        expected = json.loads(report_file.read_text())
        assert evaluation[role]["num_examples"] == len(GOLD), role
        assert evaluation[role]["accuracy"] == pytest.approx(expected["accuracy"]), role
        assert evaluation[role]["confusion_matrix"] == expected["confusion_matrix"], role


def test_distill_eval_file_needs_label_column(tmp_path, bert_teacher, student, capsys):
    status, output_dir = run_distill_with_eval_file(tmp_path, bert_teacher, student)
    assert status == 2
    assert "--eval_file needs --eval_label_column" in capsys.readouterr().err
    assert not output_dir.exists()


def test_distill_eval_unknown_label_rejected(tmp_path, bert_teacher, student, capsys):
    status, _ = run_distill_with_eval_file(tmp_path, bert_teacher, student, "--eval_label_column", "text")
    assert status == 2
    assert "Unknown label 'The team won the football match" in capsys.readouterr().err


def test_distill_eval_options_need_eval_file(tmp_path, bert_teacher, student, capsys):
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    argv = cli_args(data_file, class_file, tmp_path / "out", bert_teacher, student, "--eval_label_column", "label")
    assert main(argv) == 2
    assert "options --eval_label_column describe the --eval_file, which was not given" in capsys.readouterr().err


def test_evaluate_help_states_label_rules(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "A label is a class name or, failing that, an integer class id counted from --first_label_id" in help_text
    assert "id of the first class for integer labels" in help_text
