"""Service lifecycle with real processes: graceful SIGTERM, and a scheduler killed mid-job that
resumes from its SQLite state without losing any stored model."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedsilo.cli.processes import spawn
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.pki.bootstrap import bootstrap_local_trust

from .conftest import FAST_LIVENESS, require_heart_data, small_job, start_federation

pytestmark = pytest.mark.slow


def test_sigterm_reports_not_serving_then_exits_cleanly(tmp_path: Path) -> None:
    trust = bootstrap_local_trust(tmp_path)
    registry = spawn(
        "registry",
        "fedsilo_services.registry",
        {
            **trust.service("registry").env(),
            "FEDSILO_REGISTRY_DB": str(tmp_path / "registry.db"),
            "FEDSILO_KEYMANAGER_ADDRESS": "127.0.0.1:1",  # revocations: not needed here
            "FEDSILO_GRACE_S": "2",
        },
        tmp_path,
    )
    registry.wait_ready(30)
    # the plaintext health port, as a Kubernetes probe sees it
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(registry.health_address))
    watch = health.Watch(health_pb2.HealthCheckRequest(service="fedsilo.v1.Registry"))
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

    registry.terminate()

    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert registry.wait_stopped(30) == 0
    assert "stopped" in registry.log_path.read_text()


def test_a_killed_scheduler_resumes_the_job_and_keeps_every_model(tmp_path: Path) -> None:
    federation = start_federation(
        tmp_path / "state", require_heart_data(), aggregators=1, extra_env=FAST_LIVENESS
    )
    plane = federation.plane
    try:
        job_id = federation.api.submit_job(
            small_job({"name": "fedadam"}, rounds=8, local_steps=200)
        )["job_id"]
        while federation.api.job(job_id)["round"] < 3:
            time.sleep(0.05)
        models = ModelStoreClient(federation.channel("modelstore"))
        before = {m.round: m.version for m in models.list_models(job_id)}
        old = plane.service("scheduler")
        os.kill(old.pid, signal.SIGKILL)
        old.wait_stopped(10)

        # Same database, same ports: clients and aggregators reconnect on their own.
        restarted = spawn(
            "scheduler",
            "fedsilo_services.scheduler",
            {
                **old.env,
                "FEDSILO_GRPC_PORT": str(old.info["grpc_port"]),
                "FEDSILO_HTTP_PORT": str(old.info["http_port"]),
            },
            plane.state_dir / "run-restarted",
        )
        plane.processes[plane.processes.index(old)] = restarted
        restarted.wait_ready(30)

        status = federation.wait_for_job(job_id, timeout_s=120)
        assert status["state"] == "completed", status["error"]
        after = {m.round: m.version for m in models.list_models(job_id)}
        assert sorted(after) == list(range(9))
        assert {r: after[r] for r in before} == before  # nothing stored was lost or replaced
        history = {h["round"]: h for h in status["history"]}
        assert all(history[r]["mean_test_accuracy"] is not None for r in range(1, 9))
    finally:
        codes = plane.stop()
    assert all(code == 0 for code in codes.values()), codes
