"""Contribution scores through real processes: `fedsilo job contributions` reads a completed
plaintext job's updates, scores every coalition on the operator's validation set, and the
result is kept with the job and audited; under secure aggregation it is refused, saying why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import require_heart_data, small_job, start_federation

pytestmark = pytest.mark.slow


def contributions(federation: Any, job_id: str, validation: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *(sys.executable, "-m", "fedsilo.cli.main", "--api", federation.plane.api_url),
            *("job", "contributions", job_id, "--validation", str(validation), "--json"),
        ],
        env=federation.cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_contributions_are_shapley_values_kept_with_the_job_and_refused_under_secagg(
    tmp_path: Path,
) -> None:
    federation = start_federation(tmp_path / "state", require_heart_data())
    try:
        job = {"rounds": 3, "local_steps": 50, "learning_rate": 0.01, "min_clients": 4}
        plain = federation.run_job(small_job({"name": "fedavg"}, **job))
        assert plain["state"] == "completed", plain["error"]
        # The operator's validation set: here, one hospital's declaration (both splits).
        validation = federation.plane.state_dir / "sites" / "cleveland.yaml"
        done = contributions(federation, plain["job_id"], validation)
        assert done.returncode == 0, done.stdout + done.stderr
        printed = json.loads(done.stdout)
        status = federation.api.job(plain["job_id"])
        result = status["contributions"]
        assert result == printed
        assert result["metric"] == status["metric"] == "auc"
        assert result["rounds"] == 3
        sites = set(status["history"][-1]["participants"])
        assert set(result["shapley"]) == set(result["leave_one_out"]) == sites
        # Efficiency: each round's values add up to its grand coalition's gain, and the
        # rounds chain (FedAvg's next model is the grand coalition's), so the sum is the
        # whole job's gain on the validation set.
        total = sum(result["shapley"].values())
        gain = result["grand_coalition"] - result["empty_coalition"]
        assert total == pytest.approx(gain, abs=0.01)
        for row in result["per_round"]:
            assert set(row) == sites | {"round"}
        audit = (federation.plane.state_dir / "audit" / "scheduler.jsonl").read_text()
        events = [json.loads(line)["event"] for line in audit.splitlines()]
        assert "updates_listed" in events and "contributions_recorded" in events

        masked = federation.run_job(small_job({"name": "fedavg"}, protection="secagg", **job))
        assert masked["state"] == "completed", masked["error"]
        refused = contributions(federation, masked["job_id"], validation)
        assert refused.returncode != 0
        assert "not computable from masked updates" in refused.stdout + refused.stderr
        assert federation.api.job(masked["job_id"])["contributions"] == {}
    finally:
        federation.plane.stop()
