"""The metrics a site reports on its test split, from scikit-learn. A metric that is not
defined on a site's data (AUC when its test set holds one class) is reported as undefined,
with the reason, never as a made-up number."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from sklearn import metrics

# Metrics that rank or calibrate scores: they need both classes among the labels.
RANKING = ("auc", "average_precision")


@dataclass(frozen=True)
class MetricReport:
    values: dict[str, float] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)  # metric -> why it is not defined


def binary_metrics(
    labels: NDArray[np.floating], probabilities: NDArray[np.floating]
) -> MetricReport:
    """accuracy (threshold 0.5), balanced_accuracy, log_loss, auc, average_precision for a
    binary task, from the positive class's probabilities."""
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
        "log_loss": float(metrics.log_loss(truth, probabilities, labels=[0, 1])),
    }
    classes = np.unique(truth)
    if classes.size < 2:
        reason = (
            f"the test set holds one class only ({truth.size} examples of class {int(classes[0])})"
        )
        return MetricReport(values, {name: reason for name in (*RANKING, "balanced_accuracy")})
    values["balanced_accuracy"] = float(metrics.balanced_accuracy_score(truth, predicted))
    values["auc"] = float(metrics.roc_auc_score(truth, probabilities))
    values["average_precision"] = float(metrics.average_precision_score(truth, probabilities))
    return MetricReport(values)
