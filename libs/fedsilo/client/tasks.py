"""The kinds of task the scheduler hands a site, by name (for logs and metrics), and the
report of an update for one of them."""

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
