"""Contribution scores on a real 3-site round: each coalition's model is FedAvg of its members'
updates from the same start, its utility the test AUC over the three sites' test rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedsilo.contributions import exact_shapley, leave_one_out, permutation_shapley
from fedsilo.data import load_tabular
from fedsilo.federations import heart_disease
from fedsilo.jobs import ModelSpec
from fedsilo.learning import build_model, flatten, load_flat, predict, train_local
from fedsilo.learning.metrics import binary_metrics
from fedsilo.tasks import BINARY

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fed_heart_disease"
SITES = ("cleveland", "hungarian", "va")


@pytest.fixture(scope="module")
def round_utility() -> Callable[[frozenset[str]], float]:
    if not (DATA / "processed.cleveland.data").exists():
        pytest.fail(f"heart-disease data not found at {DATA}")
    sites = {
        s: load_tabular(heart_disease.site_config(s, DATA).dataset(heart_disease.DATASET))
        for s in SITES
    }
    start = build_model(ModelSpec(), 13, seed=0)
    base = flatten(start)
    deltas, sizes = {}, {}
    for index, (site, data) in enumerate(sites.items()):
        model = build_model(ModelSpec(), 13, seed=0)
        train_local(model, data, steps=150, batch_size=8, learning_rate=0.02, seed=index)
        deltas[site], sizes[site] = flatten(model) - base, data.num_train
    x = np.concatenate([d.x_test for d in sites.values()])
    y = np.concatenate([d.y_test for d in sites.values()]).astype(np.float64)
    scorer = build_model(ModelSpec(), 13, seed=0)

    def utility(coalition: frozenset[str]) -> float:
        total = sum(sizes[s] for s in coalition)
        vector = (
            base + sum((sizes[s] / total) * deltas[s] for s in coalition) if coalition else base
        )
        load_flat(scorer, np.asarray(vector, dtype=np.float32))
        return float(binary_metrics(y, predict(scorer, x, BINARY)).values["auc"])

    return utility


def test_the_permutation_estimate_matches_exact_shapley_and_is_efficient(
    round_utility: Callable[[frozenset[str]], float],
) -> None:
    exact = exact_shapley(SITES, round_utility)
    estimate = permutation_shapley(SITES, round_utility, permutations=30, seed=1)
    everyone, nobody = round_utility(frozenset(SITES)), round_utility(frozenset())
    assert sum(exact.values()) == pytest.approx(everyone - nobody, abs=1e-9)
    assert sum(estimate.values()) == pytest.approx(everyone - nobody, abs=1e-9)
    for site in SITES:
        assert estimate[site] == pytest.approx(exact[site], abs=0.01), (estimate, exact)
    assert everyone > nobody  # the round helped


def test_leave_one_out_and_truncation() -> None:
    # A toy utility: additive values plus one synergy.
    worth = {"a": 0.3, "b": 0.2, "c": 0.0}

    def utility(coalition: frozenset[str]) -> float:
        return sum(worth[p] for p in coalition) + (0.1 if {"a", "b"} <= coalition else 0.0)

    assert leave_one_out(list(worth), utility) == pytest.approx({"a": 0.4, "b": 0.3, "c": 0.0})
    exact = exact_shapley(list(worth), utility)
    assert exact == pytest.approx({"a": 0.35, "b": 0.25, "c": 0.0})
    # Truncated: once a prefix is within 0.05 of everyone's value, the rest count 0 and
    # their coalitions are never valued.
    alone = {"a": 0.6, "b": 0.0, "c": 0.0, "d": 0.0}
    calls: list[frozenset[str]] = []

    def counted(coalition: frozenset[str]) -> float:
        calls.append(coalition)
        return sum(alone[p] for p in coalition)

    truncated = permutation_shapley(list(alone), counted, permutations=12, truncation=0.05)
    assert truncated == pytest.approx(alone)
    assert len(set(calls)) < 2 ** len(alone)
    with pytest.raises(ValueError, match="at least 1"):
        permutation_shapley(list(worth), utility, permutations=0)
