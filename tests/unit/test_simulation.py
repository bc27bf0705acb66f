from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from fedsilo.jobs import ModelSpec
from fedsilo.learning import build_model, manifest
from fedsilo.simulation.sites import PopulationStats, SimulationSettings, model_layout


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(),
        ModelSpec(name="mlp", hidden=[8, 4]),
        ModelSpec(name="mlp", hidden=[8], dropout=0.2),
    ],
)
def test_the_layout_is_the_model_zoos_without_building_the_model(spec: ModelSpec) -> None:
    built = [(entry.name, entry.shape) for entry in manifest(build_model(spec, 13))]

    assert model_layout(spec, 13) == built


def test_every_simulated_site_has_its_own_name(tmp_path: Path) -> None:
    settings = SimulationSettings(
        clients=1000,
        registry_address="127.0.0.1:1",
        registry_enroll_address="127.0.0.1:2",
        scheduler_address="127.0.0.1:3",
        modelstore_address="127.0.0.1:4",
        tls_ca=tmp_path / "ca.crt",
        api="https://127.0.0.1:5",
        operator_token_file=tmp_path / "token",
    )

    sites = settings.sites()

    assert [s.name for s in sites[:2]] == ["sim-000", "sim-001"] and sites[-1].name == "sim-999"
    assert len({s.name for s in sites}) == 1000
    (dataset,) = sites[0].capabilities().datasets
    assert (dataset.name, dataset.num_features) == ("heart-disease", 13)


class Refused(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection refused"


def test_failed_heartbeats_are_counted_by_status_code() -> None:
    stats = PopulationStats(clients=2)
    stats.heartbeats_ok = 5
    stats.heartbeat_latency_s.extend([0.01, 0.03, 0.02])

    stats.failure("heartbeat", Refused())
    stats.failure("heartbeat", Refused())
    stats.failure("wait-for-task", Refused())

    snapshot = stats.snapshot()
    assert snapshot["heartbeats"]["sent"] == 7 and snapshot["heartbeats"]["failed"] == 2
    assert snapshot["heartbeats"]["latency_s"]["median"] == pytest.approx(0.02)
    assert snapshot["failures"] == {"heartbeat:UNAVAILABLE": 2, "wait-for-task:UNAVAILABLE": 1}
