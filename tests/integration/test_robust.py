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

import pytest

from .conftest import (
    FAST_LIVENESS,
    enroll_site,
    poisoning,
    require_heart_data,
    small_job,
    start_federation,
)

pytestmark = pytest.mark.slow

ROUNDS = 4


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
        poisoning(enroll_site(federation, tmp_path, "mallory", "heart-disease"), stop)
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
        # Every plaintext round's scores are in the audit log, mallory's named anomalous.
        scored = [e["details"] for e in entries if e["event"] == "anomaly_scores"]
        assert scored and all("mallory" in d["scores"] for d in scored if len(d["scores"]) == 5)
        assert any(d["anomalous"] == ["mallory"] for d in scored)
    finally:
        stop.set()
        federation.plane.stop()
