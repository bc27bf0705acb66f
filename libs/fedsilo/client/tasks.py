"""What the client agent and the simulated sites share about tasks: the kinds by name (for
logs and metrics), declining one, and the reports of an update and of an evaluation."""

from __future__ import annotations

from typing import Any

from fedsilo.v1 import common_pb2, scheduler_pb2

TASK_KIND_NAMES: dict[int, str] = {
    scheduler_pb2.TASK_KIND_INITIALIZE: "initialize",
    scheduler_pb2.TASK_KIND_TRAIN: "train",
    scheduler_pb2.TASK_KIND_EVALUATE: "evaluate",
    scheduler_pb2.TASK_KIND_SECAGG_ADVERTISE: "secagg-advertise",
    scheduler_pb2.TASK_KIND_SECAGG_SHARE: "secagg-share",
    scheduler_pb2.TASK_KIND_SECAGG_UNMASK: "secagg-unmask",
}


def task_kind_name(kind: int) -> str:
    return TASK_KIND_NAMES.get(kind, "unknown")


def update_request(
    client_id: str,
    task: scheduler_pb2.Task,
    update: common_pb2.BlobRef,
    num_examples: int,
    **fields: Any,
) -> scheduler_pb2.SubmitUpdateRequest:
    """The report of an uploaded update (or initial model) for `task`; `fields` add the rest
    (model version, metrics, manifest, ...)."""
    return scheduler_pb2.SubmitUpdateRequest(
        client_id=client_id,
        task_id=task.task_id,
        job_id=task.job_id,
        round=task.round,
        update=update,
        num_examples=num_examples,
        **fields,
    )


class TaskDeclined(Exception):
    """This site cannot or will not do the task; the reason goes to the operator. `transient`:
    asking again may succeed (the round's state at the site was lost); otherwise asking again
    gets the same answer (policy, data, configuration) and the round stops waiting for it."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


def decline_request(
    client_id: str, task: scheduler_pb2.Task, reason: str, *, transient: bool = False
) -> scheduler_pb2.DeclineTaskRequest:
    return scheduler_pb2.DeclineTaskRequest(
        client_id=client_id, task_id=task.task_id, reason=reason, transient=transient
    )


def failure_reason(error: Exception) -> str:
    """What a site says when a task failed at the site (a bug, bad data): asked again, it
    may not fail."""
    return f"the task failed at the site: {type(error).__name__}: {error}"


def evaluation_request(
    client_id: str,
    task: scheduler_pb2.Task,
    num_examples: int,
    metrics: dict[str, float],
    undefined: dict[str, str] | None = None,
    primary_metric: str = "",
) -> scheduler_pb2.ReportEvaluationRequest:
    return scheduler_pb2.ReportEvaluationRequest(
        undefined_metrics=undefined or {},
        primary_metric=primary_metric,
        client_id=client_id,
        task_id=task.task_id,
        job_id=task.job_id,
        round=task.round,
        model_version=task.model_version,
        num_examples=num_examples,
        metrics=metrics,
    )
