"""What the operator sees of a job: its summary, its rounds with their evaluations, the
sites' declines and the events, read from the store."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fedsilo.scheduler.declines import latest_declines
from fedsilo.scheduler.store import SchedulerStore


def federated_metrics(per_site: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Each metric's example-weighted mean over the sites that defined it."""
    totals: dict[str, float] = {}
    counts: dict[str, float] = {}
    for reported in per_site.values():
        for name, value in reported.items():
            if name in ("num_examples", "undefined") or not isinstance(value, int | float):
                continue
            totals[name] = totals.get(name, 0.0) + value * reported["num_examples"]
            counts[name] = counts.get(name, 0.0) + reported["num_examples"]
    return {name: totals[name] / counts[name] for name in sorted(totals)}


def summarize_evaluations(per_site: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean over sites (each hospital counts once, as FLamby reports), example-weighted, and
    every metric's federated figure (`test_metrics`)."""
    if not per_site:
        return {
            "mean_test_accuracy": None,
            "mean_test_loss": None,
            "weighted_test_accuracy": None,
            "test_metrics": {},
        }
    accuracies = [m["accuracy"] for m in per_site.values()]
    losses = [m.get("loss", 0.0) for m in per_site.values()]
    counts = [m["num_examples"] for m in per_site.values()]
    return {
        "mean_test_accuracy": sum(accuracies) / len(accuracies),
        "mean_test_loss": sum(losses) / len(losses),
        "weighted_test_accuracy": sum(a * n for a, n in zip(accuracies, counts, strict=True))
        / sum(counts),
        "test_metrics": federated_metrics(per_site),
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
        "model_version": job["model_version"],
        "created_at": job["created_at"],
        "updated_at": job["updated_at"],
        "error": job["error"],
    }


def job_status(store: SchedulerStore, job: Mapping[str, Any]) -> dict[str, Any]:
    job_id = job["job_id"]
    evaluations = store.evaluations(job_id)
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
                "per_site": per_site,
                **summarize_evaluations(per_site),
            }
        )
    stored_events = store.events(job_id)
    return {
        **job_summary(job),
        "spec": json.loads(job["spec_json"]),
        "history": history,
        "events": [
            {k: e[k] for k in ("at", "round", "kind", "client_id", "detail")} for e in stored_events
        ],
        "declines": latest_declines(stored_events, job["round"], sites),
    }
