"""The control plane under a simulated population (many enrolled sites in one process, no
torch): what bench/control_plane.py runs with 1,000 sites, scaled down."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fedsilo.cli.simulation import load_job, start_population, stop_population
from fedsilo.cli.up import start_control_plane

pytestmark = pytest.mark.slow

SITES, PER_ROUND, ROUNDS = 100, 10, 5


def test_a_simulated_population_completes_every_round_and_loses_no_heartbeat(
    tmp_path: Path,
) -> None:
    plane = start_control_plane(tmp_path, aggregators=2)
    try:
        population = start_population(plane, SITES, timeout_s=120)
        api = plane.api()
        job_id = api.submit_job(load_job(PER_ROUND, ROUNDS))["job_id"]
        deadline = time.monotonic() + 120
        while (status := api.job(job_id))["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        stats = stop_population(population)
    finally:
        codes = plane.stop()

    assert status["state"] == "completed", status["error"]
    training = [row for row in status["history"] if row["round"] >= 1]
    assert [row["round"] for row in training] == list(range(1, ROUNDS + 1))
    assert all(len(row["participants"]) == PER_ROUND for row in training)
    assert stats["enrolled"] == SITES and stats["enrollment_failures"] == 0
    assert stats["heartbeats"]["ok"] > 0 and stats["heartbeats"]["failed"] == 0
    assert stats["tasks"]["train:done"] == PER_ROUND * ROUNDS
    assert stats["failures"] == {}
    assert all(code == 0 for code in codes.values()), codes
