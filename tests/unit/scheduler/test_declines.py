"""Sites that decline: the round stops waiting for them at once, a refusal is not asked again
in the round, and a job that too many sites refuse fails at once with their reasons. A real
Scheduler and SchedulerStore; the directory, key directory and model store are stand-ins."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedsilo.jobs import JobSpec
from fedsilo.rpc.errors import RpcRejection
from fedsilo.scheduler.declines import Decline, RoundDeclines, no_quorum_reason
from fedsilo.scheduler.engine import Scheduler
from fedsilo.scheduler.interfaces import SchedulerConfig
from fedsilo.scheduler.store import Phase, SchedulerStore
from fedsilo.v1 import scheduler_pb2

SITES = {f"{site}-1": site for site in ("cleveland", "hungarian", "switzerland", "va")}


class Directory:
    def alive_clients(self, dataset: str) -> dict[str, str]:
        return dict(SITES)

    def examples(self, dataset: str) -> dict[str, int]:
        return {client: 10 for client in SITES}


class NoRoundKeys:
    def round_keys(self, job_id: str, key_round: int) -> dict[str, bytes]:
        return {}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SchedulerStore]:
    store = SchedulerStore(tmp_path / "s.db")
    yield store
    store.close()


def _running(store: SchedulerStore, **spec: object) -> Scheduler:
    """A job past its initial model, about to select sites for round 1 (in attempt 1: a
    scheduler that finds a job selecting starts the round as a new attempt)."""
    store.create_job("job-1", "declines", JobSpec(dataset="heart", rounds=2, **spec).to_json())  # type: ignore[arg-type]
    store.update_job(
        "job-1",
        phase=Phase.SELECTING,
        round=1,
        model_version="m0",
        manifest_json=json.dumps({"numParameters": 4}),
    )
    scheduler = Scheduler(
        store,
        Directory(),
        artifacts=None,  # type: ignore[arg-type]
        config=SchedulerConfig(tick_s=0.01),
        round_keys=NoRoundKeys(),
    )
    scheduler.start()
    return scheduler


def _decline(scheduler: Scheduler, client_id: str, task: scheduler_pb2.Task, reason: str) -> None:
    """Decline; a task the round already closed (the job failed meanwhile) is refused."""
    try:
        scheduler.decline_task(
            scheduler_pb2.DeclineTaskRequest(
                client_id=client_id, task_id=task.task_id, reason=f"{SITES[client_id]}: {reason}"
            )
        )
    except RpcRejection as rejection:
        assert "is not open" in rejection.message


def _tasks(scheduler: Scheduler, wait_s: float) -> dict[str, scheduler_pb2.Task]:
    """Every site polls once: the tasks of those selected."""
    tasks = {c: scheduler.wait_for_task(c, wait_s=wait_s) for c in sorted(SITES)}
    return {c: t for c, t in tasks.items() if t.kind != scheduler_pb2.TASK_KIND_NONE}


def _until(condition: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def test_a_job_every_site_refuses_fails_in_its_first_attempt_naming_why(
    store: SchedulerStore,
) -> None:
    # round_timeout_s is far away: the job must not wait for it.
    scheduler = _running(store, protection="secagg", round_timeout_s=3600)
    try:
        tasks = _tasks(scheduler, wait_s=5)
        for client_id, task in tasks.items():
            _decline(scheduler, client_id, task, "secure aggregation needs the key manager")
        _until(lambda: (store.job("job-1") or {})["state"] == "failed")
        status = scheduler.job_status("job-1")
    finally:
        scheduler.stop()
    assert {t.kind for t in tasks.values()} == {scheduler_pb2.TASK_KIND_SECAGG_ADVERTISE}
    assert len(tasks) == 4 and status["attempt"] == 1  # the attempt it started in
    # The round ends once quorum is out of reach: after three refusals of four, or four.
    assert status["error"].startswith("no quorum in round 1: ")
    assert "of 4 sites declined (quorum 2): cleveland, hungarian, switzerland" in status["error"]
    assert status["error"].endswith(": secure aggregation needs the key manager")
    assert [d["site"] for d in status["declines"]][:3] == ["cleveland", "hungarian", "switzerland"]
    assert {d["reason"] for d in status["declines"]} == {"secure aggregation needs the key manager"}


def test_one_refusal_is_shown_at_once_and_the_round_goes_on(store: SchedulerStore) -> None:
    scheduler = _running(store, round_timeout_s=3600)
    try:
        tasks = _tasks(scheduler, wait_s=5)
        _decline(scheduler, "va-1", tasks["va-1"], "site policy: the job's protection is 'none'")
        status = scheduler.job_status("job-1")
        time.sleep(0.1)  # driver ticks: the round stays open for the three others
        job = store.job("job-1") or {}
    finally:
        scheduler.stop()
    assert job["state"] == "running" and job["phase"] == "training"
    assert status["declines"] == [
        {
            "client_id": "va-1",
            "site": "va",
            "reason": "site policy: the job's protection is 'none'",
            "transient": False,
            "at": status["declines"][0]["at"],
        }
    ]
    assert {t.kind for t in tasks.values()} == {scheduler_pb2.TASK_KIND_TRAIN}


def test_refusing_sites_are_replaced_in_the_next_attempt(store: SchedulerStore) -> None:
    scheduler = _running(store, clients_per_round=2, min_clients=2, round_timeout_s=3600)
    try:
        first = _refuse_what_comes(scheduler)
        _until(lambda: (store.job("job-1") or {})["attempt"] == 2)
        second = _refuse_what_comes(scheduler)
        _until(lambda: (store.job("job-1") or {})["state"] == "failed")
        status = scheduler.job_status("job-1")
    finally:
        scheduler.stop()
    assert len(first) == 2 and len(second) == 2
    assert not set(first) & set(second)
    # Once every site has refused, no further attempt is made.
    assert status["attempt"] == 2
    assert status["error"].startswith("no quorum in round 1: ")


def _refuse_what_comes(scheduler: Scheduler) -> list[str]:
    """Every site polls once; those that were selected refuse their task."""
    tasks = _tasks(scheduler, wait_s=0.3)
    for client_id, task in tasks.items():
        _decline(scheduler, client_id, task, "site policy: no")
    return sorted(tasks)


def test_a_transient_failure_is_asked_again() -> None:
    declines = RoundDeclines()
    declines.record(Decline("a", "a", "a: OSError: disk", transient=True, attempt=0))
    declines.record(Decline("b", "b", "b: site policy: no", transient=False, attempt=0))
    assert declines.refused() == {"b"}
    assert declines.in_attempt(1) == {"b"}  # a's failure was in attempt 0 only
    # A refusal stands for the round: a later transient failure does not replace it.
    declines.record(Decline("b", "b", "b: timeout", transient=True, attempt=1))
    assert declines.refused() == {"b"}
    reason = no_quorum_reason(1, declines.by_client.values(), asked=3, quorum=2)
    assert (
        reason == "no quorum in round 1: 2 of 3 sites declined (quorum 2): "
        "a: OSError: disk; b: site policy: no"
    )
