"""The round-protocol interface: how one round's updates are protected in transit and
combined. The round core (fedsilo.scheduler.core) selects sites, opens a round, waits
for what the protocol asks, aggregates, evaluates and checkpoints; a protocol adds only what
differs: its own phases, the fields of its tasks and shards, the checks of an upload, and
what happens between training and the new model.

A protocol is a subclass of RoundProtocol in its own module, listed by name in
fedsilo.scheduler.protocols (one line). A job names it in `protection`.

Hooks, in the order a round meets them (all called with the scheduler's lock held, except
`prepare_job` and `precheck`, which may call other services):

    prepare_job     at submission: job columns to store (Paillier: the job's public key)
    open_round      the sites are selected: the first phase and its tasks (default: train)
    advance         each driver tick in one of the protocol's own `phases`
    decorate        fill a task's protection fields before it is handed out
    precheck        before the lock: a remote check of an upload (Paillier's canary)
    check_update    refuse a malformed update (shape, dtype, size) with a clear RpcRejection
    training_closed the round's updates are in: aggregate them (default) or a further phase
    pass_layout     the coordinates the next aggregation pass shards (default: the model's)
    shard           fill a shard's protection fields for the aggregators
    aggregation_done  all shards of a pass are in: True when the model can be composed
    submit          a protocol's own client messages (secure aggregation's shares, reveals)
"""

from __future__ import annotations

from typing import Any, ClassVar

from fedsilo.jobs import JobSpec
from fedsilo.rpc.errors import failed_precondition, invalid_argument
from fedsilo.scheduler.interfaces import Job, RoundControl, RoundRuntime, TaskInfo
from fedsilo.scheduler.jobrows import job_manifest
from fedsilo.scheduler.store import AcceptedUpdate, Phase
from fedsilo.v1 import aggregator_pb2, modelstore_pb2, scheduler_pb2


class RoundProtocol:
    """The plaintext behaviour; protocols override what differs (see the module's docstring)."""

    name: ClassVar[str]
    phases: ClassVar[frozenset[Phase]] = frozenset()  # its own phases, advanced by `advance`
    # Phases whose state lives only in memory: after a restart the round starts again.
    restart_phases: ClassVar[frozenset[Phase]] = frozenset()
    update_dtype: ClassVar[str] = "float32"

    def __init__(self, control: RoundControl) -> None:
        self.control = control

    def quorum(self, spec: JobSpec) -> int:
        return spec.min_clients

    def prepare_job(self, job_id: str, spec: JobSpec) -> dict[str, Any]:
        return {}

    def open_round(self, job: Job, spec: JobSpec, runtime: RoundRuntime) -> None:
        self.control.to_phase(job, Phase.TRAINING, runtime)
        self.control.dispatch(job, scheduler_pb2.TASK_KIND_TRAIN, runtime, spec.round_timeout_s)

    def advance(
        self, job: Job, spec: JobSpec, runtime: RoundRuntime, phase: Phase, now: float
    ) -> None:
        raise AssertionError(f"{self.name} has no phase {phase}")

    def decorate(
        self, task: scheduler_pb2.Task, job: Job, runtime: RoundRuntime, client_id: str
    ) -> None:
        """Protection fields of a task about to be handed out."""

    def precheck(
        self,
        request: scheduler_pb2.SubmitUpdateRequest,
        job: Job | None,
        info: modelstore_pb2.BlobInfo | None,
    ) -> str | None:
        return None

    def check_update(
        self,
        job: Job,
        task: TaskInfo,
        request: scheduler_pb2.SubmitUpdateRequest,
        info: modelstore_pb2.BlobInfo,
        problem: str | None,
    ) -> None:
        check_vector(info, self.update_dtype, expected_parameters(job), request.num_examples)

    def training_closed(
        self, job: Job, spec: JobSpec, runtime: RoundRuntime, updates: list[AcceptedUpdate]
    ) -> None:
        self.control.aggregate(job, runtime)

    def pass_layout(
        self, job: Job, runtime: RoundRuntime, num_parameters: int, shard_parameters: int
    ) -> tuple[int, int, str]:
        """(coordinates, per shard, pass name) of the next aggregation pass."""
        return num_parameters, shard_parameters, "plaintext"

    def shard(
        self, message: aggregator_pb2.Shard, job: Job, spec: JobSpec, runtime: RoundRuntime
    ) -> None:
        """Protection fields of a shard; client-level DP's noise is added by the aggregator."""
        if spec.privacy is not None and spec.privacy.mode == "client":
            message.privacy_json = spec.privacy.model_dump_json()

    def aggregation_done(self, job: Job, spec: JobSpec, runtime: RoundRuntime) -> bool:
        return True

    def submit(
        self, request: scheduler_pb2.SecAggSubmitRequest, task: TaskInfo, runtime: RoundRuntime
    ) -> None:
        raise failed_precondition(f"a {self.name} round takes no secure-aggregation messages")


def expected_parameters(job: Job) -> int:
    return job_manifest(job).num_parameters


def check_vector(
    info: modelstore_pb2.BlobInfo, dtype: str, expected: int, num_examples: int
) -> None:
    """An uploaded vector of `expected` finite values of `dtype`, from a positive count."""
    if info.dtype != dtype:
        raise invalid_argument(f"update must be {dtype}, the stored blob is {info.dtype}")
    if info.num_elements != expected:
        raise invalid_argument(
            f"update has {info.num_elements} parameters, the model has {expected} (wrong shape)"
        )
    if info.num_nonfinite:
        raise invalid_argument(
            f"update contains {info.num_nonfinite} NaN/Inf values; it is not aggregated"
        )
    if num_examples <= 0:
        raise invalid_argument(f"num_examples must be positive, got {num_examples}")
