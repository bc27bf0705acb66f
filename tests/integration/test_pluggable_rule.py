"""A new aggregation rule is a function and one registration line. This test registers a toy
rule (the coordinate-wise maximum of the sites' deltas) in the test itself and runs a real
job with it: the real Scheduler and round core, a real model store process over gRPC, and a
real aggregator replica (AggregatorWorker, the service's own loop) in this process, where the
rule was registered; three sites answer their tasks over the scheduler's client API."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from fedsilo.aggregator.fold import fold_inputs
from fedsilo.aggregator.rules import RULES, register_rule
from fedsilo.aggregator.sources import BlobSource
from fedsilo.aggregator.worker import AggregatorWorker
from fedsilo.algorithms.aggregate import Vector
from fedsilo.cli.processes import spawn
from fedsilo.client.tasks import evaluation_request, update_request
from fedsilo.jobs import JobSpec
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.rpc.channels import connect
from fedsilo.rpc.errors import RpcRejection
from fedsilo.scheduler.engine import Scheduler
from fedsilo.scheduler.interfaces import SchedulerConfig
from fedsilo.scheduler.store import SchedulerStore
from fedsilo.v1 import aggregator_pb2, common_pb2, scheduler_pb2

pytestmark = pytest.mark.slow

PARAMETERS = 10
SITES = {"a-1": "a", "b-1": "b", "c-1": "c"}
DELTAS = {"a-1": 1.0, "b-1": 2.0, "c-1": 3.0}  # each site's delta, every coordinate, every round


def coordinate_max(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    weights: NDArray[Any],
    begin: int,
    end: int,
    threads: int,
    params: Mapping[str, Any],
) -> Vector:
    out = np.empty(end - begin, dtype=np.float32)

    def accumulate(index: int, values: NDArray[Any], block: NDArray[Any]) -> None:
        if index == 0:
            np.copyto(block, values)
        else:
            np.maximum(block, values, out=block)

    fold_inputs(source, inputs, begin, end, out, accumulate, threads)
    return out


class Sites:
    def alive_clients(self, dataset: str) -> dict[str, str]:
        return dict(SITES)

    def examples(self, dataset: str) -> dict[str, int]:
        return {"a-1": 100, "b-1": 10, "c-1": 1}


class InProcessQueue:
    """The aggregation queue's two RPCs, answered by the scheduler in this process."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def LeaseShard(self, request: aggregator_pb2.LeaseShardRequest, timeout: float) -> Any:
        shard = self._scheduler.lease_shard(request.worker_id, request.wait_s)
        return aggregator_pb2.LeaseShardResponse(has_shard=shard is not None, shard=shard)

    def CompleteShard(self, request: aggregator_pb2.CompleteShardRequest) -> Any:
        return aggregator_pb2.CompleteShardResponse(
            accepted=self._scheduler.complete_shard(request)
        )


def answer_tasks(
    scheduler: Scheduler, models: ModelStoreClient, client_id: str, stop: threading.Event
) -> None:
    """A site: the initial model (zeros), its fixed delta, an evaluation."""
    while not stop.is_set():
        task = scheduler.wait_for_task(client_id, wait_s=0.2)
        if task.kind == scheduler_pb2.TASK_KIND_INITIALIZE:
            info = models.upload(np.zeros(PARAMETERS, "<f4").tobytes(), dtype="float32")
            manifest = common_pb2.ModelManifest(
                tensors=[common_pb2.TensorEntry(name="w", shape=[PARAMETERS])],
                num_parameters=PARAMETERS,
            )
            scheduler.submit_update(update_request(client_id, task, info.ref, 1, manifest=manifest))
        elif task.kind == scheduler_pb2.TASK_KIND_TRAIN:
            delta = np.full(PARAMETERS, DELTAS[client_id], "<f4")
            info = models.upload(delta.tobytes(), dtype="float32")
            examples = int(Sites().examples("")[client_id])
            scheduler.submit_update(
                update_request(
                    client_id, task, info.ref, examples, model_version=task.model_version
                )
            )
        elif task.kind == scheduler_pb2.TASK_KIND_EVALUATE:
            metrics = {"accuracy": 0.5, "loss": 1.0}
            scheduler.report_evaluation(evaluation_request(client_id, task, 10, metrics))


@pytest.fixture
def model_store(tmp_path: Path) -> Iterator[ModelStoreClient]:
    process = spawn(
        "modelstore",
        "fedsilo_services.modelstore",
        {
            "FEDSILO_INSECURE": "true",
            "FEDSILO_AUDIT_DIR": str(tmp_path / "audit"),
            "FEDSILO_STORAGE_PATH": str(tmp_path / "objects"),
            "FEDSILO_KEYMANAGER_ADDRESS": "127.0.0.1:1",  # revocations: not needed here
        },
        tmp_path / "run",
    )
    process.wait_ready(60)
    yield ModelStoreClient(connect(process.grpc_address, None))
    process.terminate()
    assert process.wait_stopped(20) == 0


def test_a_rule_registered_in_one_line_runs_a_real_job(
    tmp_path: Path, model_store: ModelStoreClient
) -> None:
    register_rule("coordinate_max", coordinate_max)  # the one line
    store = SchedulerStore(tmp_path / "scheduler.db")
    scheduler = Scheduler(
        store, Sites(), model_store, SchedulerConfig(shard_parameters=4, tick_s=0.01)
    )
    worker = AggregatorWorker("aggregator-0", InProcessQueue(scheduler), model_store, poll_s=0.2)  # type: ignore[arg-type]
    stop = threading.Event()
    threads = [
        threading.Thread(target=answer_tasks, args=(scheduler, model_store, c, stop), daemon=True)
        for c in SITES
    ] + [threading.Thread(target=worker.run, args=(stop,), daemon=True)]
    scheduler.start()
    for thread in threads:
        thread.start()
    try:
        spec = JobSpec(
            dataset="toy", rounds=2, min_clients=3, aggregation={"rule": "coordinate_max"}
        )
        hidden = "'coordinate_max' needs each site's update, which secure aggregation hides"
        with pytest.raises(RpcRejection, match=hidden):
            scheduler.submit_job(spec.model_copy(update={"protection": "secagg"}))
        with pytest.raises(RpcRejection, match="unknown aggregation rule 'median_of_nothing'"):
            scheduler.submit_job(JobSpec(dataset="toy", aggregation={"rule": "median_of_nothing"}))
        job_id = scheduler.submit_job(spec)
        deadline = threading.Event()
        for _ in range(600):
            status = scheduler.job_status(job_id)
            if status["state"] != "running":
                break
            deadline.wait(0.05)
    finally:
        stop.set()
        scheduler.stop()
        for thread in threads:
            thread.join(timeout=10)
        del RULES["coordinate_max"]
        store.close()

    assert status["state"] == "completed", status["error"]
    final = np.frombuffer(model_store.download(status["model_version"]), "<f4")
    # FedAvg's server step adds the combined delta: the maximum, 3, twice. The example-
    # weighted mean would have been (100 * 1 + 10 * 2 + 1 * 3) / 111 per round.
    np.testing.assert_array_equal(final, np.full(PARAMETERS, 6.0, "<f4"))
    assert [sorted(h["participants"]) for h in status["history"][1:]] == [["a", "b", "c"]] * 2
