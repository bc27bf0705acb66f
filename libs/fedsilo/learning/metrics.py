"""The metrics a site reports on its test split, from scikit-learn and lifelines. A metric
that is not defined on a site's data (AUC when its test set holds one class, the C-index with
no comparable pairs) is reported as undefined, with the reason, never as a made-up number."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from sklearn import metrics

from fedsilo.tasks import LearningTask

Scores = NDArray[np.floating]


@dataclass(frozen=True)
class MetricReport:
    values: dict[str, float] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)  # metric -> why it is not defined


def task_metrics(task: LearningTask, targets: NDArray[np.floating], scores: Scores) -> MetricReport:
    """Every metric of `task` from the targets and the model's scores (fedsilo.learning
    .train.predict): the positive class's probability, class probabilities, predictions in
    the target's units, or risk scores."""
    if targets.shape[0] == 0 or scores.shape[0] != targets.shape[0]:
        raise ValueError(
            f"metrics need as many scores as targets (at least one): "
            f"{scores.shape}, {targets.shape}"
        )
    match task.name:
        case "binary":
            return binary_metrics(targets, scores)
        case "multiclass":
            return multiclass_metrics(targets, scores)
        case "regression":
            return regression_metrics(targets, scores)
        case "survival":
            return survival_metrics(targets, scores)
    raise ValueError(f"unknown task '{task.name}'")


def binary_metrics(labels: NDArray[np.floating], probabilities: Scores) -> MetricReport:
    """accuracy (threshold 0.5), macro_f1, log_loss, and where both classes occur
    balanced_accuracy, auc, average_precision, from the positive class's probabilities."""
    if labels.shape != probabilities.shape or labels.ndim != 1:
        raise ValueError(
            f"labels {labels.shape} and probabilities {probabilities.shape} must be equal 1-D"
        )
    if labels.size == 0:
        raise ValueError("metrics need at least one example")
    truth = labels.astype(np.int64)
    predicted = (probabilities >= 0.5).astype(np.int64)
    values = {
        "accuracy": float(metrics.accuracy_score(truth, predicted)),
        "macro_f1": float(
            metrics.f1_score(truth, predicted, labels=[0, 1], average="macro", zero_division=0)
        ),
        "log_loss": float(metrics.log_loss(truth, probabilities, labels=[0, 1])),
    }
    classes = np.unique(truth)
    if classes.size < 2:
        reason = (
            f"the test set holds one class only ({truth.size} examples of class {int(classes[0])})"
        )
        return MetricReport(
            values, {name: reason for name in ("auc", "average_precision", "balanced_accuracy")}
        )
    values["balanced_accuracy"] = float(metrics.balanced_accuracy_score(truth, predicted))
    values["auc"] = float(metrics.roc_auc_score(truth, probabilities))
    values["average_precision"] = float(metrics.average_precision_score(truth, probabilities))
    return MetricReport(values)


def multiclass_metrics(labels: NDArray[np.floating], probabilities: Scores) -> MetricReport:
    """accuracy, balanced_accuracy, macro_f1 (over all the job's classes), log_loss, and
    one-vs-rest macro AUC where every class occurs in the test set."""
    truth = labels.astype(np.int64)
    classes = list(range(probabilities.shape[1]))
    predicted = probabilities.argmax(axis=1)
    with warnings.catch_warnings():
        # Over the classes the test set holds: predicting an absent one is no warning here.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(metrics.balanced_accuracy_score(truth, predicted))
    values = {
        "accuracy": float(metrics.accuracy_score(truth, predicted)),
        "balanced_accuracy": balanced,
        "macro_f1": float(
            metrics.f1_score(truth, predicted, labels=classes, average="macro", zero_division=0)
        ),
        "log_loss": float(metrics.log_loss(truth, probabilities, labels=classes)),
    }
    absent = sorted(set(classes) - set(truth.tolist()))
    if absent:
        return MetricReport(
            values,
            {"auc": f"classes {absent} do not occur in the test set ({truth.size} examples)"},
        )
    values["auc"] = float(
        metrics.roc_auc_score(truth, probabilities, multi_class="ovr", labels=classes)
    )
    return MetricReport(values)


def regression_metrics(targets: NDArray[np.floating], predictions: Scores) -> MetricReport:
    values = {
        "mse": float(metrics.mean_squared_error(targets, predictions)),
        "mae": float(metrics.mean_absolute_error(targets, predictions)),
    }
    if targets.size < 2 or np.ptp(targets) == 0:
        return MetricReport(
            values, {"r2": f"the test set's target is constant ({targets.size} examples)"}
        )
    values["r2"] = float(metrics.r2_score(targets, predictions))
    return MetricReport(values)


def survival_metrics(targets: NDArray[np.floating], risk: Scores) -> MetricReport:
    """Harrell's C-index (lifelines): the share of comparable pairs whose risk scores order
    them as their event times do."""
    from lifelines.utils import concordance_index

    times, events = targets[:, 0], targets[:, 1]
    try:
        value = concordance_index(times, -risk, events)
    except ZeroDivisionError:
        return MetricReport(
            {},
            {
                "c_index": f"no comparable pairs in the test set ({times.size} examples, "
                f"{int(events.sum())} events)"
            },
        )
    return MetricReport({"c_index": float(value)})
