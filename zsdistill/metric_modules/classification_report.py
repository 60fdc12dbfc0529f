"""An `evaluate` metric: accuracy, F1 and per-class precision, recall and F1 against gold labels.

zsdistill loads it by file path with `evaluate.load`, so it needs no download. The default configuration takes one
class index per example and also returns the confusion matrix. The "multilabel" configuration takes a list of 0 or
1 per class for each example and returns micro- and macro-averaged figures.

Precision, recall or F1 whose denominator is zero is reported as 0.0. Macro-F1 is the unweighted mean of the
per-class F1, as scikit-learn's `f1_score(average="macro")` computes it when given no `labels`. For single-label
input the mean is over the classes that occur among the references or the predictions. For multi-label input it is
over all K classes.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Accuracy, macro-F1, per-class precision, recall, F1 and support, and the confusion matrix of single-label
predictions. With the "multilabel" configuration: micro- and macro-F1, exact-match accuracy and per-class figures.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: the predicted class index of each example, or (config "multilabel") a list of 0 or 1 per class.
    references: the gold labels, in the same form as the predictions.
    num_classes (int): the number of classes K. Classes that occur in neither list are still reported.
Returns:
    default config: accuracy, macro_f1, precision, recall, f1 and support (lists of K values, in class order), and
        confusion_matrix (K lists of K counts: row = gold class, column = predicted class).
    "multilabel" config: micro_precision, micro_recall, micro_f1, macro_f1, exact_match (the share of examples whose
        predicted set of classes equals the gold set), and precision, recall, f1, support and predicted (lists of K
        values, in class order).
"""


class ClassificationReport(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        if self.config_name == "multilabel":
            features = datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int32")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            )
        else:
            features = datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=features,
        )

    def _compute(self, predictions, references, num_classes: int) -> dict:
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if self.config_name == "multilabel":
            return _multi_label_report(predictions, references, num_classes)
        return _single_label_report(predictions, references, num_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Divide elementwise, with 0.0 where the denominator is zero."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _per_class(true_positives, false_positives, false_negatives) -> dict:
    # 2TP / (2TP + FP + FN) equals 2PR / (P + R) where both are defined, and is 0.0 when TP is 0.
    return {
        "precision": _ratio(true_positives, true_positives + false_positives),
        "recall": _ratio(true_positives, true_positives + false_negatives),
        "f1": _ratio(2 * true_positives, 2 * true_positives + false_positives + false_negatives),
    }


def _single_label_report(predictions: np.ndarray, references: np.ndarray, num_classes: int) -> dict:
    for name, values in (("predictions", predictions), ("references", references)):
        if values.size and not (0 <= values.min() and values.max() < num_classes):
            raise ValueError(f"{name} must be class indices from 0 to {num_classes - 1}")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (references, predictions), 1)

    true_positives = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    scores = _per_class(true_positives, predicted - true_positives, support - true_positives)
    present = (support + predicted) > 0
    return {
        "accuracy": float(true_positives.sum() / max(1, len(references))),
        "macro_f1": float(scores["f1"][present].mean()) if present.any() else 0.0,
        **{name: values.tolist() for name, values in scores.items()},
        "support": support.tolist(),
        "confusion_matrix": confusion.tolist(),
    }


def _multi_label_report(predictions: np.ndarray, references: np.ndarray, num_classes: int) -> dict:
    for name, values in (("predictions", predictions), ("references", references)):
        if values.ndim != 2 or values.shape[1] != num_classes or not np.isin(values, (0, 1)).all():
            raise ValueError(f"{name} must be lists of {num_classes} values, each 0 or 1")
    predicted_positive = predictions == 1
    gold_positive = references == 1

    true_positives = (predicted_positive & gold_positive).sum(axis=0)
    false_positives = (predicted_positive & ~gold_positive).sum(axis=0)
    false_negatives = (~predicted_positive & gold_positive).sum(axis=0)
    scores = _per_class(true_positives, false_positives, false_negatives)
    micro = _per_class(true_positives.sum(), false_positives.sum(), false_negatives.sum())
    support = gold_positive.sum(axis=0)
    predicted = predicted_positive.sum(axis=0)
    return {
        "micro_precision": float(micro["precision"]),
        "micro_recall": float(micro["recall"]),
        "micro_f1": float(micro["f1"]),
        "macro_f1": float(scores["f1"].mean()),
        "exact_match": float((predicted_positive == gold_positive).all(axis=1).mean()) if len(references) else 0.0,
        **{name: values.tolist() for name, values in scores.items()},
        "support": support.tolist(),
        "predicted": predicted.tolist(),
    }
