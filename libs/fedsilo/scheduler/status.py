"""What the operator sees of a job: its summary, its rounds with their evaluations, the
sites' declines and the events, read from the store."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fedsilo.scheduler.declines import latest_declines
from fedsilo.scheduler.store import SchedulerStore
from fedsilo.tasks import default_metric

# What a stored evaluation holds besides its metric values.
_NOT_METRICS = ("num_examples", "undefined", "primary_metric")


def federated_metrics(per_site: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Each metric's example-weighted mean over the sites that defined it."""
    totals: dict[str, float] = {}
    counts: dict[str, float] = {}
    for reported in per_site.values():
        for name, value in reported.items():
            if name in _NOT_METRICS or not isinstance(value, int | float):
                continue
            totals[name] = totals.get(name, 0.0) + value * reported["num_examples"]
            counts[name] = counts.get(name, 0.0) + reported["num_examples"]
    return {name: totals[name] / counts[name] for name in sorted(totals)}


def primary_metric(spec: Mapping[str, Any], per_site: Mapping[str, Mapping[str, Any]]) -> str:
    """The job's primary metric: the job's own, else its task's default, else the one most
    sites resolved from their labels (a job that leaves its task to them)."""
    if spec.get("metric"):
        return str(spec["metric"])
    if spec.get("task"):
        return default_metric(str(spec["task"]))
    named = [str(m["primary_metric"]) for m in per_site.values() if m.get("primary_metric")]
    return max(sorted(set(named)), key=named.count) if named else "accuracy"


def summarize_evaluations(
    per_site: Mapping[str, Mapping[str, Any]], metric: str = "accuracy"
) -> dict[str, Any]:
    """The primary `metric`'s federated figure (`test_metric`), every metric's
    (`test_metrics`), and accuracy's mean over the sites (each hospital once, as FLamby
    reports) and example-weighted, for the sites that report accuracy."""
    metrics = federated_metrics(per_site)
    accuracies = [(m["accuracy"], m["num_examples"]) for m in per_site.values() if "accuracy" in m]
    losses = [m["loss"] for m in per_site.values() if "loss" in m]
    return {
        "metric": metric,
        "test_metric": metrics.get(metric),
        "mean_test_accuracy": sum(a for a, _ in accuracies) / len(accuracies)
        if accuracies
        else None,
        "mean_test_loss": sum(losses) / len(losses) if losses else None,
        "weighted_test_accuracy": sum(a * n for a, n in accuracies) / sum(n for _, n in accuracies)
        if accuracies
        else None,
        "test_metrics": metrics,
    }


def job_summary(job: Mapping[str, Any]) -> dict[str, Any]:
    spec = json.loads(job["spec_json"])
    return {
        "job_id": job["job_id"],
        "name": job["name"],
        "state": job["state"],
        "round": job["round"],
        "rounds": spec["rounds"],
        "phase": job["phase"],
        "attempt": job["attempt"],
        "algorithm": spec["algorithm"]["name"],
        "dataset": spec["dataset"],
        "task": spec.get("task"),
        # Sites the operator left out of the job's future rounds, with the reasons.
        "excluded": json.loads(job.get("excluded") or "{}"),
        "model_version": job["model_version"],
        "created_at": job["created_at"],
        "updated_at": job["updated_at"],
        "error": job["error"],
    }


def job_status(store: SchedulerStore, job: Mapping[str, Any]) -> dict[str, Any]:
    job_id = job["job_id"]
    evaluations = store.evaluations(job_id)
    spec = json.loads(job["spec_json"])
    metric = primary_metric(spec, {k: v for e in evaluations.values() for k, v in e.items()})
    history, sites = [], {}
    for row in store.rounds(job_id):
        per_site = evaluations.get(row["round"], {})
        sites.update(row["selected"])
        history.append(
            {
                "round": row["round"],
                "attempt": row["attempt"],
                "model_version": row["new_version"] or row["base_version"],
                "participants": row["participants"],
                "dropped": row["dropped"],
                "selected": sorted(row["selected"].values()),
                "started_at": row["started_at"],
                "ended_at": row["ended_at"],
                "duration_s": (row["ended_at"] - row["started_at"]) if row["ended_at"] else None,
                "phase_seconds": row["phases"],
                "epsilon": row["epsilon"],
                # Plaintext rounds: site -> {score, norm_ratio, cosine} (fedsilo.aggregator
                # .anomaly); the higher the score, the further from the aggregate.
                "anomaly": row.get("anomaly", {}),
                "per_site": {
                    site: {k: v for k, v in m.items() if k != "primary_metric"}
                    for site, m in per_site.items()
                },
                **summarize_evaluations(per_site, metric),
            }
        )
    stored_events = store.events(job_id)
    return {
        **job_summary(job),
        # Per-site contribution scores, once computed (`fedsilo job contributions`).
        "contributions": json.loads(job.get("contributions") or "{}"),
        "metric": metric,
        "spec": spec,
        "history": history,
        "events": [
            {k: e[k] for k in ("at", "round", "kind", "client_id", "detail")} for e in stored_events
        ],
        "declines": latest_declines(stored_events, job["round"], sites),
    }
