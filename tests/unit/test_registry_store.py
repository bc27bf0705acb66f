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


def last_seen_on_disk(path: Path, client_id: str) -> float:
    """What a restarted registry would read (a second store on the same file)."""
    reopened = RegistryStore(path, liveness_timeout_s=10)
    try:
        return reopened.get(client_id).last_seen
    finally:
        reopened.close()


def test_heartbeats_stay_in_memory_until_persisted(tmp_path: Path) -> None:
    clock = Clock()
    store = RegistryStore(tmp_path / "r.db", liveness_timeout_s=10, clock=clock)
    client = store.enroll("cleveland", caps("heart"))
    clock.now += 5

    store.heartbeat(client, None)

    assert store.get(client).last_seen == 1005.0
    assert last_seen_on_disk(tmp_path / "r.db", client) == 1000.0
    assert store.persist_liveness() == 1
    assert last_seen_on_disk(tmp_path / "r.db", client) == 1005.0
    assert store.persist_liveness() == 0  # nothing changed since


def test_closing_writes_the_last_heartbeats(tmp_path: Path) -> None:
    clock = Clock()
    store = RegistryStore(tmp_path / "r.db", liveness_timeout_s=10, clock=clock)
    client = store.enroll("va", caps("heart"))
    clock.now += 7
    store.heartbeat(client, None)

    store.close()

    assert last_seen_on_disk(tmp_path / "r.db", client) == 1007.0


def test_new_capabilities_in_a_heartbeat_are_written_at_once(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "r.db", liveness_timeout_s=10)
    client = store.enroll("va", caps("heart"))

    store.heartbeat(client, caps("heart", "mnist"))

    reopened = RegistryStore(tmp_path / "r.db", liveness_timeout_s=10)
    assert [r.client_id for r in reopened.list(dataset="mnist")] == [client]


def test_a_superseded_agents_unsaved_beat_is_dropped_with_it(tmp_path: Path) -> None:
    clock = Clock()
    store = RegistryStore(tmp_path / "r.db", liveness_timeout_s=10, clock=clock)
    old = store.enroll("va", caps("heart"))
    clock.now += 3
    store.heartbeat(old, None)

    new = store.enroll("va", caps("heart"))

    assert store.persist_liveness() == 0
    assert [r.client_id for r in store.list()] == [new]
    assert store.counts() == (1, 1)


def test_an_agent_back_with_its_certificate_keeps_its_enrollment_time(tmp_path: Path) -> None:
    clock = Clock()
    store = RegistryStore(tmp_path / "r.db", liveness_timeout_s=10, clock=clock)
    client = store.enroll("va", caps("heart"))
    clock.now += 60

    assert store.enroll("va", caps("heart"), client) == client

    record = store.get(client)
    assert (record.enrolled_at, record.last_seen, record.alive) == (1000.0, 1060.0, True)


def test_counts_enrolled_and_alive_agents(tmp_path: Path) -> None:
    clock = Clock()
    store = RegistryStore(tmp_path / "r.db", liveness_timeout_s=10, clock=clock)
    quiet = store.enroll("a", caps("heart"))
    beating = store.enroll("b", caps("heart"))
    clock.now += 11
    store.heartbeat(beating, None)

    assert store.counts() == (2, 1)
    assert [r.client_id for r in store.list(alive_only=True)] == [beating]
    assert store.get(quiet).alive is False
