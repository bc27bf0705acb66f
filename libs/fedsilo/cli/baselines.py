"""The demo's baselines and its scoring on the union of the test sets, computed where the data
is (the demo plays every site here; a real federation never gathers test sets).

local: each site's model trained alone with the federated job's steps; pooled: one model on
the union of the train splits (the federation's epochs, or the federated job's total steps).
Each is scored per site on its test split, as the example-weighted mean of each metric over
the sites that define it, and on the union of the test sets (for local, each site's rows
scored by that site's own model).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedsilo.data import TabularData, load_tabular, resolve_task
from fedsilo.federations import Federation
from fedsilo.jobs import JobSpec


def load_sites(federation: Federation, data_dir: Path, spec: JobSpec) -> dict[str, TabularData]:
    sites = {}
    for site in federation.sites:
        declared = federation.site_config(site, data_dir).dataset(federation.dataset)
        sites[site] = load_tabular(declared, resolve_task(spec, declared.label))
    return sites


def weighted_metrics(
    per_site: Mapping[str, Mapping[str, float | None]], counts: Mapping[str, int]
) -> dict[str, float]:
    """Each metric's example-weighted mean over the sites where it is defined."""
    names = sorted({name for metrics in per_site.values() for name in metrics})
    out = {}
    for name in names:
        defined = [(m[name], counts[s]) for s, m in per_site.items() if m.get(name) is not None]
        if defined:
            out[name] = sum(v * n for v, n in defined if v is not None) / sum(n for _, n in defined)
    return out


def score(models: Mapping[str, Any], sites: Mapping[str, TabularData]) -> dict[str, Any]:
    """Per-site metrics (undefined ones as None, their reasons under `undefined`), the
    weighted means and the union-of-test-sets metrics; `models` maps each site to the model
    that scores its test rows."""
    from fedsilo.learning import evaluate, predict
    from fedsilo.learning.metrics import task_metrics

    per_site: dict[str, dict[str, float | None]] = {}
    undefined: dict[str, dict[str, str]] = {}
    scores: list[NDArray[np.float64]] = []
    for site, data in sites.items():
        result = evaluate(models[site], data.x_test, data.y_test, data.task)
        per_site[site] = {**result.metrics, **{name: None for name in result.undefined}}
        if result.undefined:
            undefined[site] = result.undefined
        scores.append(predict(models[site], data.x_test, data.task))
    task = next(iter(sites.values())).task
    targets = np.concatenate([data.y_test for data in sites.values()]).astype(np.float64)
    union = task_metrics(task, targets, np.concatenate(scores))
    return {
        "task": task.name,
        "metrics": weighted_metrics(per_site, {s: d.num_test for s, d in sites.items()}),
        "per_site_metrics": per_site,
        "undefined": undefined,
        "union_test_metrics": union.values,
    }


def compute_baselines(federation: Federation, data_dir: Path, spec: JobSpec) -> dict[str, Any]:
    from fedsilo.learning import build_model, train_centralized, train_local

    sites = load_sites(federation, data_dir, spec)
    steps = spec.rounds * spec.local_steps
    local_models = {}
    for site, data in sites.items():
        model = build_model(
            spec.model, data.num_features, num_outputs=data.task.num_outputs, seed=spec.seed
        )
        train_local(
            model,
            data,
            steps=steps,
            batch_size=spec.batch_size,
            learning_rate=spec.learning_rate,
            optimizer=spec.optimizer,
            seed=spec.seed,
        )
        local_models[site] = model
    budget: dict[str, Any] = (
        {"epochs": federation.pooled_epochs}
        if federation.pooled_epochs is not None
        else {"steps": steps * len(sites)}
    )
    pooled_model = train_centralized(
        list(sites.values()),
        model_spec=spec.model,
        batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        seed=spec.seed,
        optimizer=spec.optimizer,
        **budget,
    )
    local = score(local_models, sites)
    pooled = score({site: pooled_model for site in sites}, sites)
    return {
        "local": {
            **local,
            **_accuracy_view(local_models, sites),
            "steps": steps,
        },
        "pooled": {
            **pooled,
            **_mean_accuracy(pooled["per_site_metrics"]),
            **budget,
        },
    }


def federated_scores(
    federation: Federation, data_dir: Path, spec: JobSpec, weights: NDArray[np.float32]
) -> dict[str, Any]:
    """The final federated model, scored like the baselines (for its union-of-test-sets
    figures: the per-site ones come from the sites' own reports)."""
    from fedsilo.learning import build_model, load_flat

    sites = load_sites(federation, data_dir, spec)
    first = next(iter(sites.values()))
    model = build_model(
        spec.model, first.num_features, num_outputs=first.task.num_outputs, seed=spec.seed
    )
    load_flat(model, weights)
    return score({site: model for site in sites}, sites)


def _mean_accuracy(per_site: Mapping[str, Mapping[str, float | None]]) -> dict[str, Any]:
    accuracy: dict[str, float] = {}
    for site, metrics in per_site.items():
        value = metrics.get("accuracy")
        if value is not None:
            accuracy[site] = value
    if not accuracy:
        return {"mean_test_accuracy": None, "per_site": {}}
    return {"mean_test_accuracy": sum(accuracy.values()) / len(accuracy), "per_site": accuracy}


def _accuracy_view(models: Mapping[str, Any], sites: Mapping[str, TabularData]) -> dict[str, Any]:
    """Accuracy on the site's own test set and, FLamby's view of a local model, on every
    site's (for tasks with an accuracy)."""
    from fedsilo.learning import evaluate

    view = _mean_accuracy(
        {s: evaluate(models[s], d.x_test, d.y_test, d.task).metrics for s, d in sites.items()}
    )
    if view["mean_test_accuracy"] is None:
        return {**view, "per_site_on_all_test_sets": {}, "mean_on_all_test_sets": None}
    everywhere = {
        site: _mean(
            evaluate(model, other.x_test, other.y_test, other.task).metrics["accuracy"]
            for other in sites.values()
        )
        for site, model in models.items()
    }
    return {
        **view,
        "per_site_on_all_test_sets": everywhere,
        "mean_on_all_test_sets": _mean(everywhere.values()),
    }


def _mean(values: Sequence[float] | Any) -> float:
    items = list(values)
    return math.fsum(items) / len(items)
