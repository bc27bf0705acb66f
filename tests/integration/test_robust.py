"""Robust aggregation through real processes: a fifth site that uploads a huge update every
round wrecks FedAvg, not the coordinate-wise median, the trimmed mean, multi-Krum, centered
clipping or norm-bounded FedAvg (the last three through their Gram pass), and its anomaly
score is the highest of the round every time, in the job's status."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.v1 import registry_pb2, scheduler_pb2

from .conftest import (
    FAST_LIVENESS,
    Site,
    enroll_site,
    require_heart_data,
    small_job,
    start_federation,
    submit_update,
)

pytestmark = pytest.mark.slow

ROUNDS = 4


def attack(site: Site, stop: threading.Event) -> None:
    """Mallory: heartbeats, declines all but training, and trains by uploading noise of
    standard deviation 5 in every coordinate (a fresh draw each round), claiming as many
    examples as a real hospital."""
    rng = np.random.default_rng(7)
    while not stop.is_set():
        site.registry.Heartbeat(registry_pb2.HeartbeatRequest(client_id=site.client_id))
        task = site.scheduler.WaitForTask(
            scheduler_pb2.WaitForTaskRequest(client_id=site.client_id, wait_s=0.5)
        )
        if task.kind == scheduler_pb2.TASK_KIND_NONE:
            continue
        if task.kind != scheduler_pb2.TASK_KIND_TRAIN:
            site.scheduler.DeclineTask(
                scheduler_pb2.DeclineTaskRequest(
                    client_id=site.client_id, task_id=task.task_id, reason="mallory: no"
                )
            )
            continue
        poison = rng.normal(0.0, 5.0, task.manifest.num_parameters).astype("<f4")
        blob = site.models.upload(poison.tobytes(), dtype="float32").ref
        submit_update(site, task, blob, num_examples=150)


def final_auc(status: dict[str, Any]) -> float:
    assert status["state"] == "completed", status["error"]
    honest = {site: m["accuracy"] for site, m in status["history"][-1]["per_site"].items()}
    return sum(honest.values()) / len(honest)


def test_robust_rules_resist_a_poisoning_site_that_scores_highest_and_can_be_excluded(
    tmp_path: Path,
) -> None:
    federation = start_federation(
        tmp_path / "state", require_heart_data(), aggregators=2, extra_env=FAST_LIVENESS
    )
    stop = threading.Event()
    try:
        job = {
            "rounds": ROUNDS,
            "local_steps": 100,
            "learning_rate": 0.01,
            "min_clients": 4,
            "round_timeout_s": 60,
        }
        clean = final_auc(
            federation.run_job(small_job({"name": "fedavg"}, **job, aggregation={"rule": "median"}))
        )
        mallory = enroll_site(federation, tmp_path, "mallory", "heart-disease")
        attacker = threading.Thread(target=attack, args=(mallory, stop), daemon=True)
        attacker.start()
        results = {}
        for rule in (
            {"rule": "weighted_mean"},
            {"rule": "median"},
            {"rule": "trimmed_mean", "beta": 0.2},
            {"rule": "krum", "f": 1, "m": 3},
            {"rule": "centered_clipping", "tau": 0.5},
            {"rule": "norm_bounded_mean"},
        ):
            # Krum tolerates f = 1 attacker among more than 2f + 2 = 4 updates.
            quorum = {"min_clients": 5} if rule["rule"] == "krum" else {}
            status = federation.run_job(
                small_job({"name": "fedavg"}, **{**job, **quorum}, aggregation=rule)
            )
            results[rule["rule"]] = final_auc(status)
            for row in status["history"][1:]:
                assert "mallory" in row["participants"]
                scores = {site: s["score"] for site, s in row["anomaly"].items()}
                assert max(scores, key=scores.__getitem__) == "mallory", scores
                assert scores["mallory"] > 2 * max(v for s, v in scores.items() if s != "mallory")
        print(f"test AUC clean {clean:.3f}; with the poisoning site: {results}")
        assert results["weighted_mean"] < clean - 0.1, (clean, results)
        robust = ("median", "trimmed_mean", "krum", "centered_clipping", "norm_bounded_mean")
        assert all(results[rule] > clean - 0.05 for rule in robust), (clean, results)

        # The operator leaves mallory out of a running job's later rounds, audited.
        longer = small_job({"name": "fedavg"}, **{**job, "rounds": 30})
        submitted = federation.api.submit_job(longer)
        job_id = submitted["job_id"]
        while not any(
            h["round"] >= 1 and h["ended_at"] for h in federation.api.job(job_id)["history"]
        ):
            time.sleep(0.1)
        excluded = subprocess.run(
            [
                *(sys.executable, "-m", "fedsilo.cli.main", "--api", federation.plane.api_url),
                *("job", "exclude-site", job_id, "mallory", "--reason", "anomalous updates"),
            ],
            env=federation.cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert excluded.returncode == 0, excluded.stdout + excluded.stderr
        status = federation.wait_for_job(job_id)
        assert status["state"] == "completed" and status["excluded"] == {
            "mallory": "anomalous updates"
        }
        assert "mallory" not in status["history"][-1]["participants"]
        assert "mallory" in status["history"][1]["participants"]
        audit = (federation.plane.state_dir / "audit" / "scheduler.jsonl").read_text()
        entries = [json.loads(line) for line in audit.splitlines()]
        assert any(
            e["event"] == "site_excluded" and e["details"]["site"] == "mallory" for e in entries
        )
    finally:
        stop.set()
        federation.plane.stop()
