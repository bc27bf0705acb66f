"""Shard results are written without waiting for the disk; one that a crash lost or tore is
found when the round's model is composed, and the round is aggregated again. A real Scheduler
and SchedulerStore; the model store is a stand-in that fails composition as the real one does
(BlobsUnavailable) until the shards are computed again."""

from __future__ import annotations

import json
from pathlib import Path

from fedsilo.jobs import JobSpec
from fedsilo.modelstore.client import BlobsUnavailable
from fedsilo.scheduler.endings import MAX_LOST_AGGREGATIONS
from fedsilo.scheduler.engine import Scheduler
from fedsilo.scheduler.interfaces import SchedulerConfig
from fedsilo.scheduler.store import Phase, SchedulerStore
from fedsilo.v1 import aggregator_pb2, common_pb2, modelstore_pb2

PARAMETERS = 10


class Directory:
    def alive_clients(self, dataset: str) -> dict[str, str]:
        return {}

    def examples(self, dataset: str) -> dict[str, int]:
        return {}


class Artifacts:
    """Composition fails for the first results handed in, as if a crash had torn one."""

    def __init__(self, lost: str) -> None:
        self.lost = lost
        self.composed: list[list[str]] = []
        self.models: list[modelstore_pb2.ModelRecord] = []

    def stat(self, digest: str) -> modelstore_pb2.BlobInfo:
        raise AssertionError("not expected")

    def compose(self, digests: list[str], dtype: str = "float32") -> common_pb2.BlobRef:
        self.composed.append(digests)
        if self.lost in digests:
            raise BlobsUnavailable(f"blob {self.lost} is corrupt: its content hashes to 00")
        return common_pb2.BlobRef(digest="model-" + "-".join(digests), size=4 * PARAMETERS)

    def put_model(self, record: modelstore_pb2.ModelRecord) -> modelstore_pb2.ModelRecord:
        self.models.append(record)
        stored = modelstore_pb2.ModelRecord()
        stored.CopyFrom(record)
        stored.version = record.blob.digest
        return stored


def _reduce_all(scheduler: Scheduler, prefix: str) -> list[str]:
    """Lease every shard of the round and complete it with a result named after it."""
    names = []
    while (shard := scheduler.lease_shard("aggregator-0", wait_s=2.0)) is not None:
        name = f"{prefix}{shard.begin}"
        request = aggregator_pb2.CompleteShardRequest(
            shard_id=shard.shard_id,
            lease_id=shard.lease_id,
            worker_id="aggregator-0",
            weights=common_pb2.BlobRef(digest=name),
        )
        assert scheduler.complete_shard(request)
        names.append(name)
        if len(names) == 2:  # both shards of the round
            break
    return names


def _aggregating(tmp_path: Path, artifacts: Artifacts) -> tuple[SchedulerStore, Scheduler]:
    store = SchedulerStore(tmp_path / "s.db")
    store.create_job("job-1", "lost", JobSpec(dataset="heart", rounds=3).to_json())
    manifest = json.dumps({"numParameters": PARAMETERS})
    # As a scheduler restarted during aggregation finds it.
    store.update_job("job-1", phase=Phase.AGGREGATING, round=1, manifest_json=manifest)
    scheduler = Scheduler(
        store, Directory(), artifacts, SchedulerConfig(shard_parameters=5, tick_s=0.01)
    )
    return store, scheduler


def test_a_lost_shard_result_sends_the_round_through_aggregation_again(tmp_path: Path) -> None:
    artifacts = Artifacts(lost="torn-5")
    store, scheduler = _aggregating(tmp_path, artifacts)
    scheduler.start()
    try:
        first = _reduce_all(scheduler, "torn-")
        # Composition failed on the torn result: the same shards are offered again.
        again = _reduce_all(scheduler, "whole-")
        deadline = 200
        while not artifacts.models and deadline:
            scheduler.lease_shard("aggregator-0", wait_s=0.05)
            deadline -= 1
    finally:
        scheduler.stop()

    assert first == ["torn-0", "torn-5"]
    assert again == ["whole-0", "whole-5"]
    assert artifacts.composed == [first, again]
    assert [model.blob.digest for model in artifacts.models] == ["model-whole-0-whole-5"]
    job = store.job("job-1")
    assert job is not None and job["model_version"] == "model-whole-0-whole-5"


def test_shard_results_that_keep_failing_fail_the_round_instead(tmp_path: Path) -> None:
    artifacts = Artifacts(lost="torn-5")
    store, scheduler = _aggregating(tmp_path, artifacts)
    scheduler.start()
    try:
        for _ in range(MAX_LOST_AGGREGATIONS + 1):
            assert _reduce_all(scheduler, "torn-") == ["torn-0", "torn-5"]
        waited = 0
        while (store.job("job-1") or {}).get("attempt") == 0 and waited < 200:
            scheduler.lease_shard("aggregator-0", wait_s=0.05)
            waited += 1
    finally:
        scheduler.stop()

    job = store.job("job-1")
    assert job is not None and job["attempt"] == 1  # the round runs again, freshly trained
    assert job["phase"] == Phase.SELECTING
    assert len(artifacts.composed) == MAX_LOST_AGGREGATIONS + 1
    assert artifacts.models == []
