"""The kinds of task the scheduler hands a site, by name (for logs and metrics)."""

from __future__ import annotations

from fedsilo.v1 import scheduler_pb2

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
