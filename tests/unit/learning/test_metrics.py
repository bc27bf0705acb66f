from __future__ import annotations

import numpy as np
import pytest

from fedsilo.data import TabularData
from fedsilo.jobs import ModelSpec
from fedsilo.learning import build_model, evaluate
from fedsilo.learning.metrics import binary_metrics


def test_binary_metrics_follow_their_definitions() -> None:
    labels = np.array([0, 0, 1, 1], dtype=np.float64)
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    report = binary_metrics(labels, scores)
    # Of the four (positive, negative) pairs, the positive scores higher in three.
    assert report.values["auc"] == pytest.approx(0.75)
    # Precision at each positive, ranked: 0.8 -> 1/1, 0.35 -> 2/3.
    assert report.values["average_precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert report.values["accuracy"] == pytest.approx(0.75)  # 0.35 is called negative
    assert report.values["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    expected_loss = -np.mean(np.log([0.9, 0.6, 0.35, 0.8]))
    assert report.values["log_loss"] == pytest.approx(expected_loss)
    assert report.undefined == {}


def test_a_test_set_of_one_class_reports_auc_as_undefined_with_the_reason() -> None:
    report = binary_metrics(np.ones(5), np.array([0.9, 0.2, 0.7, 0.6, 0.8]))
    assert "auc" not in report.values and "average_precision" not in report.values
    assert report.undefined["auc"] == "the test set holds one class only (5 examples of class 1)"
    assert report.values["accuracy"] == pytest.approx(0.8)


def test_evaluation_reports_the_metrics_of_a_binary_model() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    one_class = TabularData(("a", "b", "c"), x, np.ones(40, np.float32), x, np.ones(40, np.float32))
    model = build_model(ModelSpec(), 3, seed=0)
    result = evaluate(model, one_class.x_test, one_class.y_test)
    assert set(result.undefined) == {"auc", "average_precision", "balanced_accuracy"}
    mixed = evaluate(model, x, (x[:, 0] > 0).astype(np.float32))
    assert {"auc", "average_precision", "balanced_accuracy", "log_loss"} <= set(mixed.metrics)
    assert 0.0 <= mixed.metrics["auc"] <= 1.0 and mixed.undefined == {}


def test_multiclass_metrics_and_auc_undefined_when_a_class_is_absent() -> None:
    from fedsilo.learning.metrics import multiclass_metrics

    labels = np.array([0, 1, 2, 2], dtype=np.float64)
    probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3]])
    report = multiclass_metrics(labels, probabilities)
    assert report.values["accuracy"] == pytest.approx(0.75)
    # F1 per class: 1, 2/3 (one false positive), 2/3 (one miss): macro mean 7/9.
    assert report.values["macro_f1"] == pytest.approx(7 / 9)
    # One-vs-rest: classes 0 and 1 rank perfectly; class 2's positive scored 0.3 ties a
    # negative's 0.3 (half a pair) and beats the rest: 3.5 of 4 pairs.
    assert report.values["auc"] == pytest.approx(np.mean([1.0, 1.0, 3.5 / 4]))
    absent = multiclass_metrics(np.array([0.0, 0.0, 1.0]), probabilities[:3])
    assert "auc" not in absent.values
    assert absent.undefined["auc"] == "classes [2] do not occur in the test set (3 examples)"


def test_regression_metrics_and_r2_undefined_on_a_constant_target() -> None:
    from fedsilo.learning.metrics import regression_metrics

    report = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert report.values["mse"] == pytest.approx(1 / 3) and report.values["mae"] == pytest.approx(
        1 / 3
    )
    assert report.values["r2"] == pytest.approx(1 - 1 / 2)
    constant = regression_metrics(np.array([5.0, 5.0]), np.array([4.0, 6.0]))
    assert "r2" in constant.undefined and constant.values["mse"] == pytest.approx(1.0)


def test_the_c_index_counts_concordant_pairs_and_is_undefined_without_them() -> None:
    from fedsilo.learning.metrics import survival_metrics

    # Times 1 (event), 2 (event), 3 (censored): comparable pairs (1,2), (1,3), (2,3).
    targets = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 0.0]])
    assert survival_metrics(targets, np.array([3.0, 2.0, 1.0])).values["c_index"] == 1.0
    assert survival_metrics(targets, np.array([3.0, 1.0, 2.0])).values["c_index"] == pytest.approx(
        2 / 3
    )
    censored = survival_metrics(np.array([[1.0, 0.0], [2.0, 0.0]]), np.array([1.0, 2.0]))
    assert censored.values == {} and "no comparable pairs" in censored.undefined["c_index"]
