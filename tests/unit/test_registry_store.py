from __future__ import annotations

from pathlib import Path

import pytest

from fedsilo.registry.store import RegistryStore, UnknownClient
from fedsilo.v1 import registry_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def caps(*datasets: str) -> registry_pb2.Capabilities:
    return registry_pb2.Capabilities(
        cores=2, datasets=[registry_pb2.DatasetInfo(name=d, num_train=10) for d in datasets]
    )


def test_liveness_follows_heartbeats(tmp_path: Path) -> None:
    clock = Clock()
    store = RegistryStore(tmp_path / "r.db", liveness_timeout_s=10, clock=clock)
    client = store.enroll("cleveland", caps("heart"))
    clock.now += 11
    assert store.list(alive_only=True) == []
    store.heartbeat(client, None)
    assert [r.client_id for r in store.list(alive_only=True)] == [client]


def test_filter_by_dataset_and_persistence(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "r.db", liveness_timeout_s=10)
    a = store.enroll("a", caps("heart"))
    store.enroll("b", caps("other"))
    store.close()
    reopened = RegistryStore(tmp_path / "r.db", liveness_timeout_s=10)
    assert [r.client_id for r in reopened.list(dataset="heart")] == [a]


def test_reenrolling_supersedes_the_sites_old_agent(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "r.db", liveness_timeout_s=10)
    old = store.enroll("va", caps("heart"))
    new = store.enroll("va", caps("heart"))
    assert [r.client_id for r in store.list()] == [new]
    with pytest.raises(UnknownClient, match="enroll again"):
        store.heartbeat(old, None)
