"""Whether a site's reported update may enter its round: the checks every protocol shares
(the right job, round, attempt, phase, site and base model, an uploaded blob) and those of the
initial model; a protocol then checks the update's own form (RoundProtocol.check_update)."""

from __future__ import annotations

from fedsilo.rpc.errors import failed_precondition, invalid_argument, not_found, permission_denied
from fedsilo.scheduler.interfaces import Job, RoundRuntime, TaskInfo
from fedsilo.scheduler.jobrows import numel
from fedsilo.scheduler.protocols.base import check_vector
from fedsilo.scheduler.store import JobState, Phase
from fedsilo.v1 import modelstore_pb2, scheduler_pb2


def check_submission(
    request: scheduler_pb2.SubmitUpdateRequest,
    job: Job | None,
    task: TaskInfo | None,
    runtime: RoundRuntime | None,
    info: modelstore_pb2.BlobInfo | None,
) -> tuple[Job, TaskInfo, modelstore_pb2.BlobInfo]:
    """RpcRejection naming what is wrong: late, stale, someone else's, not uploaded."""
    if job is None:
        raise not_found(f"no job {request.job_id!r}")
    if task is not None and task.client_id != request.client_id:
        raise permission_denied(
            f"task {request.task_id} belongs to another client; {request.client_id} "
            "may only submit its own work"
        )
    if job["state"] != JobState.RUNNING:
        raise failed_precondition(f"job {request.job_id} is {job['state']}")
    if request.round != job["round"]:
        raise failed_precondition(
            f"update is for round {request.round} but job {request.job_id} is in round "
            f"{job['round']}; stale updates are not aggregated"
        )
    if runtime is None or request.client_id not in runtime.selected:
        raise permission_denied(
            f"client {request.client_id} was not selected for job {request.job_id} "
            f"round {request.round}"
        )
    if task is None or task.attempt != job["attempt"]:
        raise failed_precondition(
            f"task {request.task_id} is no longer open (round {job['round']} is "
            f"{job['phase']}, attempt {job['attempt']}); the update arrived too late"
        )
    if job["phase"] not in (Phase.TRAINING, Phase.INITIALIZING):
        raise failed_precondition(f"round {job['round']} is {job['phase']}, not training")
    if request.model_version != job["model_version"]:
        raise failed_precondition(
            f"update was computed from model {request.model_version[:12] or '(none)'} but "
            f"round {job['round']} started from {job['model_version'][:12] or '(none)'}"
        )
    if info is None:
        raise invalid_argument(
            f"update blob {request.update.digest[:12] or '(empty)'} is not in the model "
            "store; upload it first"
        )
    return job, task, info


def check_initial_model(
    request: scheduler_pb2.SubmitUpdateRequest, info: modelstore_pb2.BlobInfo
) -> None:
    """The initial model: float32 values matching the layout its manifest declares."""
    expected = request.manifest.num_parameters
    layout = sum(numel(t.shape) for t in request.manifest.tensors)
    if expected <= 0 or layout != expected:
        raise invalid_argument(
            f"initial model manifest is inconsistent: tensors hold {layout} "
            f"parameters, num_parameters says {expected}"
        )
    check_vector(info, "float32", expected, request.num_examples)
