"""Differential privacy and site policy through the real services."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.policy import SitePolicy
from fedsilo.privacy import epsilon_after

from .conftest import FAST_LIVENESS, Federation, require_heart_data, small_job, start_federation

pytestmark = pytest.mark.slow


def test_client_level_dp_spends_the_target_epsilon_round_by_round(
    federation: Federation,
) -> None:
    spec = small_job(
        {"name": "fedavg"},
        rounds=3,
        privacy={"mode": "client", "clip_norm": 0.05, "target_epsilon": 4.0},
    )
    status = federation.run_job(spec)
    assert status["state"] == "completed", status["error"]
    privacy = status["spec"]["privacy"]
    noise = privacy["noise_multiplier"]  # resolved by the scheduler from the target
    assert privacy["target_epsilon"] is None and noise > 0
    spent = {h["round"]: h["epsilon"] for h in status["history"] if h["round"] > 0}
    for round_, epsilon in spent.items():
        assert epsilon == pytest.approx(epsilon_after(round_, noise, 1.0, 1e-5), rel=1e-6)
    assert spent[1] < spent[2] < spent[3] <= 4.0 and spent[3] > 3.95

    models = ModelStoreClient(federation.channel("modelstore"))
    lineage = models.get_model(status["job_id"], 3)
    assert lineage.metrics["epsilon"] == pytest.approx(spent[3])
    metrics = httpx.get(federation.plane.service("scheduler").metrics_url).text
    assert f'fedsilo_privacy_epsilon{{job_id="{status["job_id"]}"}}' in metrics


def test_dp_sgd_sites_account_for_their_own_records(federation: Federation) -> None:
    spec = small_job(
        {"name": "fedavg"},
        rounds=2,
        local_steps=20,
        privacy={"mode": "sample", "clip_norm": 1.0, "noise_multiplier": 1.2},
    )
    status = federation.run_job(spec)
    assert status["state"] == "completed", status["error"]
    ledgers = {
        path.parent.name: json.loads(path.read_text())
        for path in (federation.plane.state_dir / "clients").glob(
            f"*/privacy-{status['job_id']}.json"
        )
    }
    assert set(ledgers) == {"cleveland", "hungarian", "switzerland", "va"}
    final = status["history"][-1]["epsilon"]
    assert 0 < final < float("inf")


def test_a_site_refuses_jobs_outside_its_policy_and_the_federation_goes_on(
    tmp_path: Path,
) -> None:
    federation = start_federation(
        tmp_path / "state",
        require_heart_data(),
        aggregators=1,
        extra_env=FAST_LIVENESS,
        policies={"va": SitePolicy(max_epsilon=5.0)},
    )
    try:
        plain = federation.run_job(small_job({"name": "fedavg"}, rounds=2))
        private = federation.run_job(
            small_job(
                {"name": "fedavg"},
                rounds=2,
                privacy={"mode": "client", "clip_norm": 0.05, "target_epsilon": 4.0},
            )
        )
    finally:
        federation.plane.stop()
    assert plain["state"] == "completed", plain["error"]
    for round_ in (row for row in plain["history"] if row["round"] > 0):
        assert "va" not in round_["participants"] and round_["dropped"] == ["va"]
    declined = [e for e in plain["events"] if e["kind"] == "declined"]
    assert declined and all(
        "site policy" in e["detail"] and "epsilon 5" in e["detail"] for e in declined
    )
    assert private["state"] == "completed", private["error"]
    assert "va" in private["history"][-1]["participants"]
    audit = (federation.plane.state_dir / "audit" / "scheduler.jsonl").read_text()
    assert '"event": "task_declined"' in audit
