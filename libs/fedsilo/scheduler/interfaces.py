"""What the scheduler needs from the rest of the platform, what a round keeps in memory, and
what a round protocol may ask of the round core (RoundControl)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fedsilo.audit import AuditLog
from fedsilo.jobs import JobSpec
from fedsilo.scheduler.declines import RoundDeclines
from fedsilo.scheduler.secagg_round import SecAggState
from fedsilo.scheduler.shards import ShardState
from fedsilo.scheduler.store import JobState, Phase, SchedulerStore
from fedsilo.v1 import common_pb2, modelstore_pb2

Job = dict[str, Any]  # a row of the jobs table, as SchedulerStore returns it


class ClientDirectory(Protocol):
    """Who is alive and holds a dataset: client id -> site."""

    def alive_clients(self, dataset: str) -> dict[str, str]: ...

    def examples(self, dataset: str) -> dict[str, int]:
        """Training examples each live client declares for the dataset."""
        ...


class RoundKeyDirectory(Protocol):
    """The keymanager's directory of round keys (clients publish them authenticated)."""

    def round_keys(self, job_id: str, key_round: int) -> dict[str, bytes]: ...


class KeyService(Protocol):
    """The keymanager's Paillier side, as the scheduler uses it."""

    def create_job_key(self, job_id: str, spec: JobSpec) -> bytes: ...

    def upload_problem(self, job_id: str, digest: str) -> str | None: ...

    def decrypt_aggregate(
        self,
        job_id: str,
        round_: int,
        aggregate: str,
        uploads: list[tuple[str, str]],
        num_values: int,
    ) -> str: ...


class ArtifactStore(Protocol):
    def stat(self, digest: str) -> modelstore_pb2.BlobInfo: ...

    def compose(self, digests: list[str], dtype: str = "float32") -> common_pb2.BlobRef:
        """BlobsUnavailable when a part is missing or damaged."""
        ...

    def put_model(self, record: modelstore_pb2.ModelRecord) -> modelstore_pb2.ModelRecord: ...


@dataclass(frozen=True)
class SchedulerConfig:
    shard_parameters: int = 1 << 20
    lease_s: float = 30.0
    tick_s: float = 0.2
    liveness_check_s: float = 2.0
    # A site whose anomaly score (fedsilo.aggregator.anomaly) exceeds this is anomalous.
    anomaly_threshold: float = 2.0


@dataclass
class TaskInfo:
    task_id: str
    job_id: str
    round: int
    attempt: int
    kind: int
    client_id: str
    site: str


@dataclass
class RoundRuntime:
    """What only lives in memory while a round runs; rebuilt from the store after a restart."""

    phase_started: float
    deadline: float = 0.0
    selected: dict[str, str] = field(default_factory=dict)  # client id -> site
    finished: set[str] = field(default_factory=set)  # accepted, declined or rejected
    evaluated: set[str] = field(default_factory=set)  # sites that reported
    eval_expected: dict[str, str] = field(default_factory=dict)
    shards: list[ShardState] = field(default_factory=list)
    waiting_logged: bool = False
    liveness_checked: float = 0.0
    total_examples: float = 0.0  # of the selected clients (protected updates weight by it)
    pass_kind: str = "plaintext"  # "ciphertexts" first under Paillier
    sum_digest: str = ""  # the decrypted sum that the plaintext pass turns into a model
    input_scale: float = 1.0
    # A Gram rule's coefficients per client, for (round, attempt): the second pass's weights.
    coefficients: tuple[tuple[int, int], dict[str, float]] | None = None
    secagg: SecAggState | None = None
    lost_aggregations: int = 0  # aggregations of this round whose shard results were lost
    declines: RoundDeclines = field(default_factory=RoundDeclines)  # across the round's attempts

    def everyone_finished(self) -> bool:
        return self.finished >= set(self.selected)


class RoundControl(Protocol):
    """What the round core offers a round protocol: its collaborators, and the transitions
    every protocol shares. Called with the core's lock held, from the driver or an RPC."""

    store: SchedulerStore
    config: SchedulerConfig
    clients: ClientDirectory
    artifacts: ArtifactStore
    keys: KeyService | None
    round_keys: RoundKeyDirectory | None
    clock: Callable[[], float]
    audit: AuditLog | None  # the scheduler's audit log (anomaly scores go there)

    def to_phase(self, job: Job, phase: Phase, runtime: RoundRuntime) -> None:
        """Record the phase's time and move the job to `phase`."""
        ...

    def dispatch(self, job: Job, kind: int, runtime: RoundRuntime, timeout_s: float) -> None:
        """A task of `kind` to every selected site, with a fresh deadline."""
        ...

    def retry_round(self, job: Job, spec: JobSpec, runtime: RoundRuntime, reason: str) -> None:
        """This attempt failed: try the round again, or fail the job after its attempts."""
        ...

    def drop_tasks(self, job_id: str) -> None: ...

    def new_task(self, job: Job, kind: int, client_id: str, site: str, deadline: float) -> None:
        """One task for one site (evaluation asks every live site, not only the selected)."""
        ...

    def finish_job(self, job_id: str, state: JobState, error: str) -> None: ...

    def drop_lost_clients(
        self, job: Mapping[str, Any], spec: JobSpec, runtime: RoundRuntime
    ) -> None:
        """Stop waiting for selected sites whose heartbeat stopped."""
        ...

    def aggregate(self, job: Job, runtime: RoundRuntime) -> None:
        """To AGGREGATING, with the round's shards planned for the aggregators."""
        ...

    def plan_aggregation(self, job: Mapping[str, Any], runtime: RoundRuntime) -> None:
        """Shards for the next aggregation pass over the round's inputs."""
        ...

    def total_examples(self, spec: JobSpec, clients: list[str]) -> float:
        """The examples the given sites declare (protected updates are weighted by it)."""
        ...
