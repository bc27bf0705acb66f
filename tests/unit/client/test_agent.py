from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from fedsilo.client.agent import ClientAgent, ControlPlane
from fedsilo.data import SiteConfig
from fedsilo.policy import SitePolicy
from fedsilo.secagg import MASK_GENERATOR
from fedsilo.v1 import scheduler_pb2


class RecordingScheduler:
    """Stands in for the scheduler service: records what the agent reports."""

    def __init__(self) -> None:
        self.declined: list[scheduler_pb2.DeclineTaskRequest] = []

    def DeclineTask(self, request: scheduler_pb2.DeclineTaskRequest) -> Any:
        self.declined.append(request)
        return scheduler_pb2.DeclineTaskResponse()


CLEVELAND = SiteConfig(site="cleveland")


def _agent(
    tmp_path: Path, config: SiteConfig = CLEVELAND
) -> tuple[ClientAgent, RecordingScheduler]:
    scheduler = RecordingScheduler()
    plane = ControlPlane(registry=None, scheduler=scheduler, models=None)  # type: ignore[arg-type]
    agent = ClientAgent(config, plane, state_dir=tmp_path)
    agent.client_id = "cleveland-1"
    return agent, scheduler


def test_a_task_that_fails_at_the_site_is_declined_with_the_reason(tmp_path: Path) -> None:
    agent, scheduler = _agent(tmp_path)
    task = scheduler_pb2.Task(
        kind=scheduler_pb2.TASK_KIND_TRAIN, task_id="t1", job_id="j", job_spec_json="{not json"
    )
    agent.handle(task)  # must not raise: the agent keeps serving other tasks
    assert [r.task_id for r in scheduler.declined] == ["t1"]
    assert scheduler.declined[0].reason.startswith("cleveland: the task failed at the site")


def test_an_undeclared_dataset_is_declined_with_the_declared_ones(tmp_path: Path) -> None:
    agent, scheduler = _agent(tmp_path)
    task = scheduler_pb2.Task(
        kind=scheduler_pb2.TASK_KIND_EVALUATE,
        task_id="t2",
        job_id="j",
        job_spec_json='{"dataset": "x-rays"}',
    )
    agent.handle(task)
    assert "declares no dataset 'x-rays'" in scheduler.declined[0].reason


def test_the_site_exports_its_policy_cap_for_the_epsilon_alert(tmp_path: Path) -> None:
    _agent(tmp_path, SiteConfig(site="capped", policy=SitePolicy(max_epsilon=3.5)))
    cap = REGISTRY.get_sample_value("fedsilo_site_privacy_max_epsilon", {"site": "capped"})
    assert cap == 3.5


def test_a_secure_aggregation_round_with_other_masks_is_declined(tmp_path: Path) -> None:
    """Masks this agent could not cancel with the aggregators' would sum to garbage."""
    agent, scheduler = _agent(tmp_path)
    for task_id, generator in (("t3", "chacha20/v0"), ("t4", "")):
        task = scheduler_pb2.Task(
            kind=scheduler_pb2.TASK_KIND_SECAGG_ADVERTISE,
            task_id=task_id,
            job_id="j",
            job_spec_json='{"dataset": "heart-disease", "protection": "secagg"}',
            secagg=scheduler_pb2.SecAggRound(key_round=1, mask_generator=generator),
        )
        agent.handle(task)
    assert [r.task_id for r in scheduler.declined] == ["t3", "t4"]
    assert "mask generator 'chacha20/v0'" in scheduler.declined[0].reason
    assert f"masks with {MASK_GENERATOR!r}: upgrade the older side" in scheduler.declined[0].reason
    assert "'(unnamed, older)'" in scheduler.declined[1].reason
    assert agent.secagg.rounds == {}  # no keys were made for either round
