"""Clients' long polls (WaitForTask) against a real Scheduler and SchedulerStore; the registry
and the model store are small in-memory stand-ins that no call here reaches beyond listing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedsilo.jobs import JobSpec
from fedsilo.scheduler.engine import Scheduler
from fedsilo.scheduler.interfaces import SchedulerConfig
from fedsilo.scheduler.store import SchedulerStore
from fedsilo.v1 import common_pb2, modelstore_pb2, scheduler_pb2

CLIENTS = {"a-1": "a", "b-1": "b", "c-1": "c"}


class Directory:
    def alive_clients(self, dataset: str) -> dict[str, str]:
        return dict(CLIENTS)

    def examples(self, dataset: str) -> dict[str, int]:
        return dict.fromkeys(CLIENTS, 10)


class NoArtifacts:
    """Nothing is uploaded in these tests."""

    def stat(self, digest: str) -> modelstore_pb2.BlobInfo:
        raise AssertionError("not expected")

    def compose(self, digests: list[str], dtype: str = "float32") -> common_pb2.BlobRef:
        raise AssertionError("not expected")

    def put_model(self, record: modelstore_pb2.ModelRecord) -> modelstore_pb2.ModelRecord:
        raise AssertionError("not expected")


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[Scheduler]:
    scheduler = Scheduler(
        SchedulerStore(tmp_path / "s.db"), Directory(), NoArtifacts(), SchedulerConfig(tick_s=0.01)
    )
    yield scheduler
    scheduler.stop()


class Poll:
    """One client's WaitForTask on its own thread, as a gRPC handler thread runs it."""

    def __init__(self, scheduler: Scheduler, client_id: str, wait_s: float) -> None:
        self.task: scheduler_pb2.Task | None = None
        self._thread = threading.Thread(
            target=lambda: setattr(self, "task", scheduler.wait_for_task(client_id, wait_s))
        )
        self._thread.start()

    def result(self, timeout_s: float = 30) -> scheduler_pb2.Task:
        self._thread.join(timeout_s)
        assert self.task is not None, "the long poll did not return"
        return self.task


def test_a_dispatched_task_reaches_the_waiting_client_and_no_other(scheduler: Scheduler) -> None:
    # The initial model is drawn by the first live client in order: a-1.
    first, other = Poll(scheduler, "a-1", 20), Poll(scheduler, "b-1", 0.5)

    scheduler.start()
    job_id = scheduler.submit_job(JobSpec(dataset="heart"))

    task = first.result()
    assert (task.kind, task.job_id) == (scheduler_pb2.TASK_KIND_INITIALIZE, job_id)
    assert other.result().kind == scheduler_pb2.TASK_KIND_NONE


def test_stopping_ends_every_long_poll(scheduler: Scheduler) -> None:
    polls = [Poll(scheduler, client_id, 60) for client_id in CLIENTS]

    scheduler.stop()

    assert [poll.result(10).kind for poll in polls] == [scheduler_pb2.TASK_KIND_NONE] * 3


def test_a_task_of_a_cancelled_job_is_never_handed_out(scheduler: Scheduler) -> None:
    scheduler.start()
    job_id = scheduler.submit_job(JobSpec(dataset="heart"))
    while scheduler.job_status(job_id)["history"] == []:  # until the initial task is out
        threading.Event().wait(0.01)

    scheduler.cancel_job(job_id)

    assert scheduler.wait_for_task("a-1", 0.2).kind == scheduler_pb2.TASK_KIND_NONE
