"""The scheduler's round state machine.

RPC handlers only record facts (an update arrived, a shard finished) and wake the driver; the
driver thread alone moves rounds from phase to phase. Every transition is written to the
SchedulerStore first, so a restarted scheduler resumes where the last one stopped: a round that
was training restarts as a new attempt, an aggregation is re-planned from the stored updates, an
evaluation is re-dispatched to the sites that have not reported.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf import json_format

from fedsilo.algorithms.registry import server_optimizer
from fedsilo.jobs import JobSpec
from fedsilo.modelstore.client import BlobsUnavailable
from fedsilo.paillier import ciphertext_bytes, public_key_from_bytes
from fedsilo.privacy import PrivacyAccountant
from fedsilo.rpc.errors import (
    RpcRejection,
    failed_precondition,
    invalid_argument,
    not_found,
    permission_denied,
)
from fedsilo.scheduler.declines import (
    Decline,
    RoundDeclines,
    latest_declines,
    no_quorum_reason,
    quorum_out_of_reach,
)
from fedsilo.scheduler.planning import plan_shards, round_seed, select_clients
from fedsilo.scheduler.secagg_round import SecAggState, key_round, reveal_from_message
from fedsilo.scheduler.shards import (
    LeaseLost,
    ShardState,
    complete,
    lease_next,
    renew_lease,
)
from fedsilo.scheduler.store import AcceptedUpdate, JobState, Phase, SchedulerStore
from fedsilo.telemetry import (
    CLIENTS_COMPLETED,
    CLIENTS_DROPPED,
    CLIENTS_SELECTED,
    CURRENT_ROUND,
    JOB_RUNNING,
    JOBS,
    MODEL_ACCURACY,
    MODEL_LOSS,
    PRIVACY_EPSILON,
    ROUND_PHASE_SECONDS,
    ROUND_SECONDS,
    ROUNDS,
    SHARDS_PENDING,
    UPDATES_REJECTED,
)
from fedsilo.v1 import (
    aggregator_pb2,
    common_pb2,
    modelstore_pb2,
    scheduler_pb2,
)

log = logging.getLogger("fedsilo.scheduler")


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
    total_examples: float = 0.0  # of the selected clients (Paillier clients weight by it)
    pass_kind: str = "plaintext"  # "ciphertexts" first under Paillier
    sum_digest: str = ""  # the decrypted sum that the plaintext pass turns into a model
    input_scale: float = 1.0
    secagg: SecAggState | None = None
    lost_aggregations: int = 0  # aggregations of this round whose shard results were lost
    declines: RoundDeclines = field(default_factory=RoundDeclines)  # across the round's attempts


# Aggregations of one round whose shard results could not be composed before the round fails.
MAX_LOST_AGGREGATIONS = 2


@dataclass(frozen=True)
class SchedulerConfig:
    shard_parameters: int = 1 << 20
    lease_s: float = 30.0
    tick_s: float = 0.2
    liveness_check_s: float = 2.0


class Scheduler:
    def __init__(
        self,
        store: SchedulerStore,
        clients: ClientDirectory,
        artifacts: ArtifactStore,
        config: SchedulerConfig = SchedulerConfig(),
        clock: Callable[[], float] = time.time,
        keys: KeyService | None = None,
        round_keys: RoundKeyDirectory | None = None,
    ) -> None:
        self._keys = keys
        self._round_keys = round_keys
        self._store = store
        self._clients = clients
        self._artifacts = artifacts
        self._config = config
        self._clock = clock
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._tasks: dict[str, TaskInfo] = {}
        self._inbox: dict[str, deque[scheduler_pb2.Task]] = {}
        # Each long poll waits on its own condition: a new task wakes its client alone, and
        # the round's events wake only the driver and the aggregators (not every site).
        self._pollers: dict[str, list[threading.Condition]] = {}
        self._runtime: dict[str, RoundRuntime] = {}
        self._times_selected: dict[str, dict[str, int]] = {}
        self._times_evaluated: dict[str, dict[str, int]] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._progressed = False
        with self._wake:
            self._recover()

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._drive, name="round-driver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
            for pollers in self._pollers.values():
                for poller in pollers:
                    poller.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _drive(self) -> None:
        while not self._stopping.is_set():
            with self._wake:
                self._progressed = False
                try:
                    self._advance_all()
                except Exception:  # a failing job must not stop the others
                    log.exception("round driver error")
                # After a transition the next one may already be possible: go again at once.
                if not self._progressed:
                    self._wake.wait(timeout=self._config.tick_s)

    def _recover(self) -> None:
        for job in self._store.jobs(JobState.RUNNING):
            job_id, phase = job["job_id"], Phase(job["phase"])
            runtime = RoundRuntime(phase_started=self._clock())
            self._runtime[job_id] = runtime
            spec = JobSpec.from_json(job["spec_json"])
            # Secure aggregation's shares lived in memory: its rounds restart as new attempts.
            restart_phases = {
                Phase.INITIALIZING,
                Phase.SELECTING,
                Phase.TRAINING,
                Phase.ADVERTISING,
                Phase.SHARING,
                Phase.UNMASKING,
            }
            if spec.protection == "secagg":
                restart_phases.add(Phase.AGGREGATING)
            if phase in restart_phases:
                # Tasks handed out before the restart are gone: run the round again, as a new
                # attempt so that late updates for the old one are refused.
                restart = Phase.INITIALIZING if job["round"] == 0 else Phase.SELECTING
                self._store.update_job(job_id, phase=restart, attempt=job["attempt"] + 1)
                log.info(
                    "job %s: resuming round %d as attempt %d",
                    job_id,
                    job["round"],
                    job["attempt"] + 1,
                )
            elif phase == Phase.AGGREGATING:
                self._plan_aggregation(self._store.job(job_id) or job, runtime)
                log.info("job %s: re-planning aggregation of round %d", job_id, job["round"])
            elif phase == Phase.EVALUATING:
                done = self._store.evaluations(job_id, job["round"]).get(job["round"], {})
                runtime.evaluated = set(done)
                self._dispatch_evaluation(job, runtime)
                log.info("job %s: re-dispatching evaluation of round %d", job_id, job["round"])

    # operator API --------------------------------------------------------------------------
    def submit_job(self, spec: JobSpec) -> str:
        spec = resolve_privacy(spec)
        job_id = f"job-{secrets.token_hex(6)}"
        public_key = b""
        if spec.protection == "paillier":
            if self._keys is None:
                raise failed_precondition("this scheduler has no keymanager for 'paillier'")
            public_key = self._keys.create_job_key(job_id, spec)
        with self._wake:
            self._store.create_job(job_id, spec.name, spec.to_json())
            if public_key:
                self._store.update_job(job_id, public_key=public_key.hex())
            self._runtime[job_id] = RoundRuntime(phase_started=self._clock())
            self._wake.notify_all()
        log.info(
            "job %s submitted: %s on %s, %d rounds",
            job_id,
            spec.algorithm.name,
            spec.dataset,
            spec.rounds,
        )
        return job_id

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        with self._wake:
            job = self._job_or_raise(job_id)
            if job["state"] != JobState.RUNNING:
                raise failed_precondition(f"job {job_id} is already {job['state']}")
            self._finish_job(job_id, JobState.CANCELLED, "cancelled by the operator")
            self._wake.notify_all()
        return self.job_status(job_id)

    def list_jobs(self) -> list[dict[str, Any]]:
        return [self._summary(job) for job in self._store.jobs()]

    def job_status(self, job_id: str) -> dict[str, Any]:
        job = self._job_or_raise(job_id)
        evaluations = self._store.evaluations(job_id)
        history = []
        for row in self._store.rounds(job_id):
            per_site = evaluations.get(row["round"], {})
            history.append(
                {
                    "round": row["round"],
                    "attempt": row["attempt"],
                    "model_version": row["new_version"] or row["base_version"],
                    "participants": row["participants"],
                    "dropped": row["dropped"],
                    "selected": sorted(row["selected"].values()),
                    "started_at": row["started_at"],
                    "ended_at": row["ended_at"],
                    "duration_s": (row["ended_at"] - row["started_at"])
                    if row["ended_at"]
                    else None,
                    "phase_seconds": row["phases"],
                    "epsilon": row["epsilon"],
                    "per_site": per_site,
                    **summarize_evaluations(per_site),
                }
            )
        stored_events = self._store.events(job_id)
        events = [
            {k: e[k] for k in ("at", "round", "kind", "client_id", "detail")} for e in stored_events
        ]
        sites = {c: s for row in history for c, s in self._store_selected(job_id, row["round"])}
        return {
            **self._summary(job),
            "spec": json.loads(job["spec_json"]),
            "history": history,
            "events": events,
            "declines": latest_declines(stored_events, job["round"], sites),
        }

    def _store_selected(self, job_id: str, round_: int) -> list[tuple[str, str]]:
        row = self._store.round(job_id, round_)
        return list(row["selected"].items()) if row else []

    def _summary(self, job: Mapping[str, Any]) -> dict[str, Any]:
        spec = json.loads(job["spec_json"])
        return {
            "job_id": job["job_id"],
            "name": job["name"],
            "state": job["state"],
            "round": job["round"],
            "rounds": spec["rounds"],
            "phase": job["phase"],
            "attempt": job["attempt"],
            "algorithm": spec["algorithm"]["name"],
            "dataset": spec["dataset"],
            "model_version": job["model_version"],
            "created_at": job["created_at"],
            "updated_at": job["updated_at"],
            "error": job["error"],
        }

    def _job_or_raise(self, job_id: str) -> dict[str, Any]:
        job = self._store.job(job_id)
        if job is None:
            raise not_found(f"no job {job_id!r}")
        return job

    # client API ----------------------------------------------------------------------------
    def wait_for_task(self, client_id: str, wait_s: float) -> scheduler_pb2.Task:
        deadline = time.monotonic() + max(0.0, min(wait_s, 60.0))
        with self._wake:
            poller = threading.Condition(self._lock)
            self._pollers.setdefault(client_id, []).append(poller)
            try:
                while True:
                    task = self._next_task(client_id)
                    if task is not None:
                        return task
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping.is_set():
                        return scheduler_pb2.Task(kind=scheduler_pb2.TASK_KIND_NONE)
                    poller.wait(timeout=remaining)
            finally:
                pollers = self._pollers[client_id]
                pollers.remove(poller)
                if not pollers:
                    del self._pollers[client_id]

    def _next_task(self, client_id: str) -> scheduler_pb2.Task | None:
        """The client's oldest task that is still open; tasks of closed phases are skipped."""
        inbox = self._inbox.get(client_id)
        while inbox:
            task = inbox.popleft()
            if task.task_id in self._tasks:
                return task
        self._inbox.pop(client_id, None)
        return None

    def submit_update(self, request: scheduler_pb2.SubmitUpdateRequest) -> None:
        # The blob's facts come from the model store before taking the lock.
        try:
            info = self._artifacts.stat(request.update.digest) if request.update.digest else None
        except RpcRejection:
            info = None
        canary = self._encrypted_upload_problem(request, info)
        with self._wake:
            try:
                task, job, _spec = self._validate_submission(request, info, canary)
            except RpcRejection as rejection:
                self._reject(request.job_id, request.round, request.client_id, rejection)
                raise
            runtime = self._runtime[job["job_id"]]
            if task.kind == scheduler_pb2.TASK_KIND_INITIALIZE:
                self._accept_initial_model(job, request, task)
            else:
                self._store.add_update(
                    job["job_id"],
                    job["round"],
                    job["attempt"],
                    AcceptedUpdate(
                        task.client_id,
                        task.site,
                        request.update.digest,
                        request.num_examples,
                        dict(request.metrics),
                    ),
                )
                CLIENTS_COMPLETED.labels(job["job_id"]).inc()
            runtime.finished.add(task.client_id)
            del self._tasks[task.task_id]
            self._wake.notify_all()
        log.info(
            "job %s round %d: accepted update from %s (%d examples)",
            job["job_id"],
            job["round"],
            task.client_id,
            request.num_examples,
        )

    def _encrypted_upload_problem(
        self, request: scheduler_pb2.SubmitUpdateRequest, info: modelstore_pb2.BlobInfo | None
    ) -> str | None:
        """Under Paillier, ask the keymanager whether the upload's canary decrypts under the
        job's key (a right-sized upload only; before taking the lock: it is a remote call)."""
        job = self._store.job(request.job_id)
        if (
            job is None
            or not job["public_key"]
            or self._keys is None
            or info is None
            or request.round < 1
            or info.ref.size != encrypted_update_bytes(job)
        ):
            return None
        return self._keys.upload_problem(request.job_id, request.update.digest)

    def _validate_submission(
        self,
        request: scheduler_pb2.SubmitUpdateRequest,
        info: modelstore_pb2.BlobInfo | None,
        canary_problem: str | None = None,
    ) -> tuple[TaskInfo, dict[str, Any], JobSpec]:
        job = self._store.job(request.job_id)
        if job is None:
            raise not_found(f"no job {request.job_id!r}")
        task = self._tasks.get(request.task_id)
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
        runtime = self._runtime[request.job_id]
        if request.client_id not in runtime.selected:
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
        if job["public_key"] and task.kind == scheduler_pb2.TASK_KIND_TRAIN:
            expected_bytes = encrypted_update_bytes(job)
            if info.ref.size != expected_bytes:
                raise invalid_argument(
                    f"encrypted update has {info.ref.size} bytes; this job's key and model "
                    f"need exactly {expected_bytes}"
                )
            if canary_problem is not None:
                raise invalid_argument(f"encrypted update refused: {canary_problem}")
            if request.num_examples <= 0:
                raise invalid_argument(f"num_examples must be positive, got {request.num_examples}")
            return task, job, JobSpec.from_json(job["spec_json"])
        masked = (
            task.kind == scheduler_pb2.TASK_KIND_TRAIN
            and JobSpec.from_json(job["spec_json"]).protection == "secagg"
        )
        expected_dtype = "uint32" if masked else "float32"  # masked inputs live in the ring
        if info.dtype != expected_dtype:
            raise invalid_argument(
                f"update must be {expected_dtype}, the stored blob is {info.dtype}"
            )
        if task.kind == scheduler_pb2.TASK_KIND_INITIALIZE:
            expected = request.manifest.num_parameters
            layout = sum(_numel(t.shape) for t in request.manifest.tensors)
            if expected <= 0 or layout != expected:
                raise invalid_argument(
                    f"initial model manifest is inconsistent: tensors hold {layout} "
                    f"parameters, num_parameters says {expected}"
                )
        else:
            expected = job_manifest(job).num_parameters
        if info.num_elements != expected:
            raise invalid_argument(
                f"update has {info.num_elements} parameters, the model has {expected} (wrong shape)"
            )
        if info.num_nonfinite:
            raise invalid_argument(
                f"update contains {info.num_nonfinite} NaN/Inf values; it is not aggregated"
            )
        if request.num_examples <= 0:
            raise invalid_argument(f"num_examples must be positive, got {request.num_examples}")
        return task, job, JobSpec.from_json(job["spec_json"])

    def _reject(self, job_id: str, round_: int, client_id: str, rejection: RpcRejection) -> None:
        reason = rejection.code.name.lower()
        UPDATES_REJECTED.labels(reason).inc()
        log.warning(
            "job %s round %d: rejected update from %s: %s",
            job_id,
            round_,
            client_id,
            rejection.message,
        )
        if self._store.job(job_id) is not None:
            self._store.add_event(
                job_id, round_, f"rejected:{reason}", client_id, rejection.message
            )
        # A rejected client is done for this round: the others go on without waiting for it.
        runtime = self._runtime.get(job_id)
        if runtime is not None and client_id in runtime.selected:
            job = self._store.job(job_id)
            if job is not None and job["round"] == round_:
                runtime.finished.add(client_id)
                self._wake.notify_all()

    def report_evaluation(self, request: scheduler_pb2.ReportEvaluationRequest) -> None:
        with self._wake:
            task = self._tasks.get(request.task_id)
            if task is None or task.kind != scheduler_pb2.TASK_KIND_EVALUATE:
                raise failed_precondition(f"evaluation task {request.task_id} is not open")
            if task.client_id != request.client_id:
                raise permission_denied(f"task {request.task_id} belongs to another client")
            if request.num_examples <= 0 or "accuracy" not in request.metrics:
                raise invalid_argument("an evaluation needs num_examples > 0 and 'accuracy'")
            job = self._job_or_raise(task.job_id)
            self._store.add_evaluation(
                task.job_id,
                task.round,
                task.client_id,
                task.site,
                request.model_version,
                request.num_examples,
                dict(request.metrics),
            )
            self._runtime[task.job_id].evaluated.add(task.site)
            del self._tasks[task.task_id]
            self._wake.notify_all()
        log.info(
            "job %s round %d: %s accuracy %.3f",
            job["job_id"],
            task.round,
            task.site,
            request.metrics["accuracy"],
        )

    def decline_task(self, request: scheduler_pb2.DeclineTaskRequest) -> None:
        with self._wake:
            task = self._tasks.get(request.task_id)
            if task is None:
                raise failed_precondition(f"task {request.task_id} is not open")
            if task.client_id != request.client_id:
                raise permission_denied(f"task {request.task_id} belongs to another client")
            del self._tasks[task.task_id]
            runtime = self._runtime.get(task.job_id)
            if runtime is not None:
                runtime.finished.add(task.client_id)
                if task.kind == scheduler_pb2.TASK_KIND_EVALUATE:
                    runtime.evaluated.add(task.site)
                else:
                    runtime.declines.record(
                        Decline(
                            task.client_id,
                            task.site,
                            request.reason,
                            request.transient,
                            task.attempt,
                        )
                    )
            kind = "declined:transient" if request.transient else "declined"
            self._store.add_event(task.job_id, task.round, kind, task.client_id, request.reason)
            self._wake.notify_all()
        log.warning(
            "job %s round %d: %s declined: %s",
            task.job_id,
            task.round,
            task.client_id,
            request.reason,
        )

    # aggregator API ------------------------------------------------------------------------
    def lease_shard(self, worker_id: str, wait_s: float) -> aggregator_pb2.Shard | None:
        deadline = time.monotonic() + max(0.0, min(wait_s, 60.0))
        with self._wake:
            while True:
                shard = self._next_shard(worker_id)
                if shard is not None:
                    return shard
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return None
                self._wake.wait(timeout=remaining)

    def _next_shard(self, worker_id: str) -> aggregator_pb2.Shard | None:
        now = self._clock()
        for job_id, runtime in self._runtime.items():
            shard = lease_next(runtime.shards, worker_id, now, self._config.lease_s)
            if shard is not None:
                return self._shard_message(job_id, shard)
        return None

    def _shard_message(self, job_id: str, shard: ShardState) -> aggregator_pb2.Shard:
        job = self._job_or_raise(job_id)
        spec = JobSpec.from_json(job["spec_json"])
        updates = self._store.updates(job_id, job["round"], job["attempt"])
        runtime = self._runtime[job_id]
        inputs = [
            aggregator_pb2.ShardInput(
                client_id=u.client_id, digest=u.digest, num_examples=u.num_examples
            )
            for u in updates
        ]
        if runtime.sum_digest:  # Paillier's second pass: the decrypted, weighted sum
            inputs = [
                aggregator_pb2.ShardInput(
                    client_id="decrypted-sum", digest=runtime.sum_digest, num_examples=1
                )
            ]
        secagg = runtime.secagg
        protection = "paillier" if runtime.pass_kind == "ciphertexts" else ""
        if secagg is not None and secagg.unmasking is not None:
            protection = "secagg"
        return aggregator_pb2.Shard(
            protection=protection,
            secagg_json=(
                secagg.shard_json(len(updates))
                if secagg is not None and protection == "secagg"
                else ""
            ),
            public_key=bytes.fromhex(job["public_key"]) if job["public_key"] else b"",
            input_scale=runtime.input_scale,
            shard_id=shard.shard_id,
            lease_id=shard.lease_id,
            job_id=job_id,
            round=job["round"],
            begin=shard.begin,
            end=shard.end,
            base_digest=job["model_version"],
            inputs=inputs,
            algorithm_json=spec.algorithm.model_dump_json(),
            server_state=json.loads(job["server_state"]),
            lease_expires_unix=shard.lease_expires,
            # Under secure aggregation the sites already added their shares of the noise.
            privacy_json=(
                spec.privacy.model_dump_json()
                if spec.privacy is not None
                and spec.privacy.mode == "client"
                and protection != "secagg"
                else ""
            ),
        )

    def _find_shard(self, shard_id: str) -> ShardState:
        for runtime in self._runtime.values():
            for shard in runtime.shards:
                if shard.shard_id == shard_id:
                    return shard
        raise not_found(f"no shard {shard_id!r} is being aggregated (round over or cancelled)")

    def renew_lease(self, shard_id: str, lease_id: str) -> float:
        with self._wake:
            try:
                return renew_lease(
                    self._find_shard(shard_id), lease_id, self._clock(), self._config.lease_s
                )
            except LeaseLost as lost:
                raise failed_precondition(str(lost)) from None

    def complete_shard(self, request: aggregator_pb2.CompleteShardRequest) -> bool:
        """First completion under the current lease wins; anything else is ignored."""
        with self._wake:
            try:
                shard = self._find_shard(request.shard_id)
            except RpcRejection:
                return False
            accepted = complete(
                shard,
                request.lease_id,
                request.worker_id,
                request.weights.digest,
                dict(request.server_state),
            )
            if accepted:
                self._wake.notify_all()
            return accepted

    # the driver ----------------------------------------------------------------------------
    def _advance_all(self) -> None:
        jobs = self._store.jobs()
        for state in JobState:
            JOBS.labels(state.value).set(sum(job["state"] == state for job in jobs))
        running = [job for job in jobs if job["state"] == JobState.RUNNING]
        pending = 0
        for job in running:
            # Every tick, so that a job still initializing, or resumed after a restart, has
            # series too: "running but the round does not advance" is what alerts look for.
            JOB_RUNNING.labels(job["job_id"]).set(1)
            CURRENT_ROUND.labels(job["job_id"]).set(job["round"])
            try:
                self._advance(job)
            except RpcRejection as rejection:
                log.warning("job %s: %s; will retry", job["job_id"], rejection.message)
            runtime = self._runtime.get(job["job_id"])
            if runtime is not None:
                pending += sum(not s.done for s in runtime.shards)
        SHARDS_PENDING.set(pending)

    def _advance(self, job: dict[str, Any]) -> None:
        job_id = job["job_id"]
        spec = JobSpec.from_json(job["spec_json"])
        runtime = self._runtime.setdefault(job_id, RoundRuntime(phase_started=self._clock()))
        phase = Phase(job["phase"])
        now = self._clock()
        if phase in DISPATCHED_PHASES and runtime.selected:
            quorum = 1 if phase == Phase.INITIALIZING else round_quorum(spec)
            declined = runtime.declines.in_attempt(job["attempt"])
            if quorum_out_of_reach(runtime.selected, declined, quorum):
                self._round_declined(job, spec, runtime, quorum)
                return
        if phase == Phase.INITIALIZING:
            if not runtime.selected:
                self._dispatch_initialize(job, spec, runtime)
            elif runtime.finished or now > runtime.deadline:
                if job["model_version"]:
                    self._to_phase(job, Phase.EVALUATING, runtime)
                    self._dispatch_evaluation(self._store.job(job_id) or job, runtime)
                else:
                    self._retry_round(job, spec, runtime, "no initial model before the deadline")
        elif phase == Phase.SELECTING:
            self._select(job, spec, runtime)
        elif phase == Phase.ADVERTISING:
            self._advance_advertising(job, spec, runtime, now)
        elif phase == Phase.SHARING:
            self._drop_lost_clients(job, spec, runtime)
            if runtime.finished >= set(runtime.selected) or now > runtime.deadline:
                self._close_sharing(job, spec, runtime)
        elif phase == Phase.UNMASKING:
            self._drop_lost_clients(job, spec, runtime)
            if runtime.finished >= set(runtime.selected) or now > runtime.deadline:
                self._close_unmasking(job, spec, runtime)
        elif phase == Phase.TRAINING:
            self._drop_lost_clients(job, spec, runtime)
            if runtime.finished >= set(runtime.selected) or now > runtime.deadline:
                self._close_training(job, spec, runtime)
        elif phase == Phase.AGGREGATING:
            if runtime.shards and all(shard.done for shard in runtime.shards):
                if runtime.pass_kind == "ciphertexts":
                    self._decrypt_and_replan(job, spec, runtime)
                else:
                    self._finish_aggregation(job, spec, runtime)
        elif phase == Phase.EVALUATING:
            self._drop_lost_clients(job, spec, runtime)
            if runtime.evaluated >= set(runtime.eval_expected.values()) or now > runtime.deadline:
                self._finish_round(job, spec, runtime)

    def _to_phase(self, job: dict[str, Any], phase: Phase, runtime: RoundRuntime) -> None:
        now = self._clock()
        elapsed = now - runtime.phase_started
        old = job["phase"]
        ROUND_PHASE_SECONDS.labels(job["job_id"], old).observe(elapsed)
        current = self._store.round(job["job_id"], job["round"])
        if current is not None:
            phases = current["phases"]
            phases[old] = round(phases.get(old, 0.0) + elapsed, 6)
            self._store.update_round(job["job_id"], job["round"], phases=phases)
        self._store.update_job(job["job_id"], phase=phase)
        job["phase"] = phase
        runtime.phase_started = now
        self._progressed = True
        runtime.waiting_logged = False

    def _new_task(
        self, job: Mapping[str, Any], kind: int, client_id: str, site: str, deadline: float
    ) -> None:
        task_id = secrets.token_hex(8)
        self._tasks[task_id] = TaskInfo(
            task_id, job["job_id"], job["round"], job["attempt"], kind, client_id, site
        )
        manifest = job_manifest(job)
        task = scheduler_pb2.Task(
            kind=scheduler_pb2.TaskKind.ValueType(kind),
            task_id=task_id,
            job_id=job["job_id"],
            round=job["round"],
            model_version=job["model_version"],
            job_spec_json=job["spec_json"],
            deadline_unix=deadline,
            manifest=manifest,
        )
        state = self._runtime[job["job_id"]].secagg
        if state is not None:
            runtime = self._runtime[job["job_id"]]
            task.protection = "secagg"
            task.total_examples = runtime.total_examples
            if kind == scheduler_pb2.TASK_KIND_SECAGG_UNMASK:
                task.secagg.CopyFrom(
                    state.message(
                        survivors=sorted(runtime.selected),
                        dropped=sorted(set(state.shared) - set(runtime.selected)),
                        shares_for_you=state.shares_for(client_id),
                    )
                )
            else:
                task.secagg.CopyFrom(state.message())
        if job["public_key"]:
            spec = JobSpec.from_json(job["spec_json"])
            task.protection = spec.protection
            task.public_key = bytes.fromhex(job["public_key"])
            task.packing_json = spec.paillier.model_dump_json()
            task.total_examples = self._runtime[job["job_id"]].total_examples
        self._inbox.setdefault(client_id, deque()).append(task)
        for poller in self._pollers.get(client_id, []):
            poller.notify()

    def _drop_tasks(self, job_id: str) -> None:
        for task_id in [t for t, info in self._tasks.items() if info.job_id == job_id]:
            del self._tasks[task_id]
        # Inboxes of clients that stopped polling would otherwise keep closed tasks forever.
        for client_id in list(self._inbox):
            inbox = deque(task for task in self._inbox[client_id] if task.task_id in self._tasks)
            if inbox:
                self._inbox[client_id] = inbox
            else:
                del self._inbox[client_id]

    def _drop_lost_clients(
        self, job: Mapping[str, Any], spec: JobSpec, runtime: RoundRuntime
    ) -> None:
        """A client whose heartbeat stopped will not answer: stop waiting for it now rather
        than at the deadline."""
        now = self._clock()
        if now - runtime.liveness_checked < self._config.liveness_check_s:
            return
        runtime.liveness_checked = now
        alive = self._clients.alive_clients(spec.dataset)
        evaluating = job["phase"] == Phase.EVALUATING
        waiting_on = runtime.eval_expected if evaluating else runtime.selected
        for client_id, site in waiting_on.items():
            done = site in runtime.evaluated if evaluating else client_id in runtime.finished
            if done or client_id in alive:
                continue
            if evaluating:
                runtime.evaluated.add(site)
            else:
                runtime.finished.add(client_id)
            self._store.add_event(
                job["job_id"],
                job["round"],
                "lost",
                client_id,
                "heartbeat stopped; not waiting for this client",
            )
            log.warning(
                "job %s round %d: %s lost (no heartbeat)", job["job_id"], job["round"], client_id
            )

    def _dispatch_initialize(
        self, job: dict[str, Any], spec: JobSpec, runtime: RoundRuntime
    ) -> None:
        refused = runtime.declines.refused()
        alive = {
            c: s for c, s in self._clients.alive_clients(spec.dataset).items() if c not in refused
        }
        if not alive:
            self._log_waiting(job, runtime, f"no live client holds dataset {spec.dataset!r}")
            return
        self._store.open_round(job["job_id"], 0, job["attempt"], "")
        # Any client can draw the initial weights; rotate by attempt in case one fails.
        ordered = sorted(alive)
        client_id = ordered[job["attempt"] % len(ordered)]
        runtime.selected = {client_id: alive[client_id]}
        runtime.finished = set()
        self._store.update_round(job["job_id"], 0, selected=runtime.selected)
        runtime.deadline = self._clock() + spec.round_timeout_s
        self._new_task(
            job, scheduler_pb2.TASK_KIND_INITIALIZE, client_id, alive[client_id], runtime.deadline
        )
        log.info("job %s: %s draws the initial model", job["job_id"], client_id)

    def _accept_initial_model(
        self, job: dict[str, Any], request: scheduler_pb2.SubmitUpdateRequest, task: TaskInfo
    ) -> None:
        spec = JobSpec.from_json(job["spec_json"])
        record = self._artifacts.put_model(
            modelstore_pb2.ModelRecord(
                job_id=job["job_id"],
                round=0,
                participants=[task.site],
                manifest=request.manifest,
                blob=request.update,
                algorithm=spec.algorithm.name,
            )
        )
        self._store.update_job(
            job["job_id"],
            model_version=record.version,
            manifest_json=json_format.MessageToJson(request.manifest),
        )
        self._store.update_round(
            job["job_id"], 0, new_version=record.version, participants=[task.site]
        )
        job["model_version"] = record.version

    def _select(self, job: dict[str, Any], spec: JobSpec, runtime: RoundRuntime) -> None:
        refused = runtime.declines.refused()
        alive = {
            c: s for c, s in self._clients.alive_clients(spec.dataset).items() if c not in refused
        }
        if len(alive) < spec.min_clients:
            self._log_waiting(
                job,
                runtime,
                f"{len(alive)} live clients hold {spec.dataset!r}, "
                f"min_clients is {spec.min_clients}",
            )
            return
        history = self._times_selected.setdefault(job["job_id"], {})
        chosen = select_clients(
            sorted(alive),
            spec.clients_per_round,
            history,
            round_seed(spec.seed, job["round"], job["attempt"]),
        )
        for client_id in chosen:
            history[client_id] = history.get(client_id, 0) + 1
        runtime.selected = {client_id: alive[client_id] for client_id in chosen}
        runtime.finished = set()
        self._store.open_round(job["job_id"], job["round"], job["attempt"], job["model_version"])
        if spec.protection == "paillier":
            runtime.total_examples = self._total_examples(spec, chosen)
        self._store.update_round(
            job["job_id"],
            job["round"],
            selected=runtime.selected,
            total_examples=runtime.total_examples,
        )
        runtime.deadline = self._clock() + spec.round_timeout_s
        if spec.protection == "secagg":
            runtime.secagg = SecAggState(
                job["job_id"], key_round(job["round"], job["attempt"]), spec.secagg.clip
            )
            self._to_phase(job, Phase.ADVERTISING, runtime)
            kind = scheduler_pb2.TASK_KIND_SECAGG_ADVERTISE
        else:
            self._to_phase(job, Phase.TRAINING, runtime)
            kind = scheduler_pb2.TASK_KIND_TRAIN
        for client_id, site in runtime.selected.items():
            self._new_task(job, kind, client_id, site, runtime.deadline)
        CLIENTS_SELECTED.labels(job["job_id"]).inc(len(chosen))
        log.info(
            "job %s round %d: selected %s",
            job["job_id"],
            job["round"],
            ", ".join(sorted(runtime.selected.values())),
        )

    def _close_training(self, job: dict[str, Any], spec: JobSpec, runtime: RoundRuntime) -> None:
        updates = self._store.updates(job["job_id"], job["round"], job["attempt"])
        received = {u.client_id for u in updates}
        dropped = sorted(runtime.selected[c] for c in set(runtime.selected) - received)
        for client_id in set(runtime.selected) - received:
            self._store.add_event(
                job["job_id"],
                job["round"],
                "dropped",
                client_id,
                "no accepted update before the round closed",
            )
        CLIENTS_DROPPED.labels(job["job_id"]).inc(len(dropped))
        self._drop_tasks(job["job_id"])
        if len(updates) < spec.min_clients:
            self._retry_round(
                job,
                spec,
                runtime,
                f"{len(updates)} updates, fewer than min_clients={spec.min_clients}",
            )
            return
        self._store.update_round(
            job["job_id"],
            job["round"],
            participants=sorted(u.site for u in updates),
            dropped=dropped,
        )
        if runtime.secagg is not None:
            self._open_unmasking(job, spec, runtime, [u.client_id for u in updates])
            return
        self._to_phase(job, Phase.AGGREGATING, runtime)
        self._plan_aggregation(job, runtime)

    # secure aggregation ------------------------------------------------------------------------
    def _advance_advertising(
        self, job: dict[str, Any], spec: JobSpec, runtime: RoundRuntime, now: float
    ) -> None:
        """Clients publish their round keys to the keymanager; the round goes on with those
        that did (U1) once all have, or at the deadline."""
        state = runtime.secagg
        assert state is not None and self._round_keys is not None
        published = set(self._round_keys.round_keys(job["job_id"], state.key_round))
        runtime.finished |= published & set(runtime.selected)  # declines are finished too
        self._drop_lost_clients(job, spec, runtime)
        if not (runtime.finished >= set(runtime.selected) or now > runtime.deadline):
            return
        advertised = sorted(published & set(runtime.selected))
        if len(advertised) < round_quorum(spec):
            self._retry_round(job, spec, runtime, f"{len(advertised)} clients published round keys")
            return
        self._drop_tasks(job["job_id"])
        state.fix_graph(advertised, spec)
        runtime.selected = {c: runtime.selected[c] for c in advertised}
        runtime.finished = set()
        self._to_phase(job, Phase.SHARING, runtime)
        runtime.deadline = now + spec.round_timeout_s
        for client_id, site in runtime.selected.items():
            self._new_task(
                job, scheduler_pb2.TASK_KIND_SECAGG_SHARE, client_id, site, runtime.deadline
            )

    def _total_examples(self, spec: JobSpec, clients: list[str]) -> float:
        """The selection's examples: protected updates are weighted by n_k / this total."""
        examples = self._clients.examples(spec.dataset)
        return float(sum(examples.get(c, 0) for c in clients)) or 1.0

    def _close_sharing(self, job: dict[str, Any], spec: JobSpec, runtime: RoundRuntime) -> None:
        state = runtime.secagg
        assert state is not None
        self._drop_tasks(job["job_id"])
        shared = sorted(runtime.finished & set(runtime.selected))
        if len(shared) < max(spec.min_clients, state.threshold):
            self._retry_round(
                job,
                spec,
                runtime,
                f"{len(shared)} clients shared their keys; threshold {state.threshold}",
            )
            return
        state.shared = shared
        state.shares = [s for s in state.shares if s.owner in shared and s.holder in shared]
        runtime.selected = {c: runtime.selected[c] for c in shared}
        runtime.total_examples = self._total_examples(spec, shared)
        if client_level_dp(spec):  # sites count equally: each weighs 1 / |U2|
            runtime.total_examples = float(len(shared))
        self._store.update_round(job["job_id"], job["round"], total_examples=runtime.total_examples)
        runtime.finished = set()
        self._to_phase(job, Phase.TRAINING, runtime)
        runtime.deadline = self._clock() + spec.round_timeout_s
        for client_id, site in runtime.selected.items():
            self._new_task(job, scheduler_pb2.TASK_KIND_TRAIN, client_id, site, runtime.deadline)

    def _open_unmasking(
        self, job: dict[str, Any], spec: JobSpec, runtime: RoundRuntime, survivors: list[str]
    ) -> None:
        runtime.selected = {c: runtime.selected[c] for c in survivors if c in runtime.selected}
        runtime.finished = set()
        self._to_phase(job, Phase.UNMASKING, runtime)
        runtime.deadline = self._clock() + spec.round_timeout_s
        for client_id, site in runtime.selected.items():
            self._new_task(
                job, scheduler_pb2.TASK_KIND_SECAGG_UNMASK, client_id, site, runtime.deadline
            )

    def _close_unmasking(self, job: dict[str, Any], spec: JobSpec, runtime: RoundRuntime) -> None:
        state = runtime.secagg
        assert state is not None and self._round_keys is not None
        self._drop_tasks(job["job_id"])
        survivors = sorted(runtime.selected)
        try:
            state.reconstruct(
                self._round_keys.round_keys(job["job_id"], state.key_round), survivors
            )
        except ValueError as error:  # ProtocolError: too few reveals, bad shares
            self._retry_round(job, spec, runtime, f"unmasking failed: {error}")
            return
        updates = self._store.updates(job["job_id"], job["round"], job["attempt"])
        weights = len(updates) if client_level_dp(spec) else sum(u.num_examples for u in updates)
        runtime.input_scale = runtime.total_examples / weights
        self._to_phase(job, Phase.AGGREGATING, runtime)
        self._plan_aggregation(job, runtime)

    def secagg_submit(self, request: scheduler_pb2.SecAggSubmitRequest) -> None:
        with self._wake:
            task = self._tasks.get(request.task_id)
            if task is None or task.kind not in (
                scheduler_pb2.TASK_KIND_SECAGG_SHARE,
                scheduler_pb2.TASK_KIND_SECAGG_UNMASK,
            ):
                raise failed_precondition(f"secure-aggregation task {request.task_id} is not open")
            if task.client_id != request.client_id:
                raise permission_denied(f"task {request.task_id} belongs to another client")
            runtime = self._runtime[task.job_id]
            state = runtime.secagg
            assert state is not None
            if task.kind == scheduler_pb2.TASK_KIND_SECAGG_SHARE:
                for share in request.shares:
                    if share.owner != request.client_id or share.holder not in state.advertised:
                        raise invalid_argument(
                            "a share must be the sender's own, for an advertised client"
                        )
                state.shares.extend(request.shares)
            else:
                try:
                    state.reveals.extend(reveal_from_message(r) for r in request.reveals)
                except ValueError as error:
                    raise invalid_argument(str(error)) from None
            runtime.finished.add(task.client_id)
            del self._tasks[task.task_id]
            self._wake.notify_all()

    def _round_declined(
        self, job: dict[str, Any], spec: JobSpec, runtime: RoundRuntime, quorum: int
    ) -> None:
        """Too many selected sites declined for this attempt to reach quorum: end it now. If
        the sites that refused leave too few others to ever reach it, the job fails with their
        reasons; otherwise the round is tried again without them."""
        attempt = job["attempt"]
        declines = [
            d
            for c, d in runtime.declines.by_client.items()
            if c in runtime.selected and (d.attempt == attempt or not d.transient)
        ]
        reason = no_quorum_reason(job["round"], declines, len(runtime.selected), quorum)
        refused = runtime.declines.refused()
        others = set(self._clients.alive_clients(spec.dataset)) - refused
        if len(others) < quorum:
            self._drop_tasks(job["job_id"])
            self._store.add_event(job["job_id"], job["round"], "round_failed", "", reason)
            ROUNDS.labels(job["job_id"], "retried").inc()
            self._finish_job(job["job_id"], JobState.FAILED, reason)
            self._progressed = True
            return
        self._retry_round(job, spec, runtime, reason)

    def _retry_round(
        self, job: dict[str, Any], spec: JobSpec, runtime: RoundRuntime, reason: str
    ) -> None:
        self._drop_tasks(job["job_id"])
        self._store.add_event(job["job_id"], job["round"], "round_failed", "", reason)
        ROUNDS.labels(job["job_id"], "retried").inc()
        if job["attempt"] + 1 >= spec.max_round_attempts:
            self._finish_job(
                job["job_id"],
                JobState.FAILED,
                f"round {job['round']} failed {spec.max_round_attempts} times: {reason}",
            )
            return
        log.warning("job %s round %d: %s; trying again", job["job_id"], job["round"], reason)
        restart = Phase.INITIALIZING if job["round"] == 0 else Phase.SELECTING
        self._to_phase(job, restart, runtime)
        self._store.update_job(job["job_id"], attempt=job["attempt"] + 1)
        runtime.selected, runtime.finished, runtime.secagg = {}, set(), None

    def _plan_aggregation(self, job: Mapping[str, Any], runtime: RoundRuntime) -> None:
        """Shards over coordinates; under Paillier, first over ciphertexts (their products are
        decrypted by the keymanager), then over the coordinates of the decrypted sum."""
        num_parameters = job_manifest(job).num_parameters
        size, width, runtime.pass_kind = num_parameters, self._config.shard_parameters, "plaintext"
        if job["public_key"] and not runtime.sum_digest:
            packing = JobSpec.from_json(job["spec_json"]).paillier.packing()
            size = packing.num_ciphertexts(num_parameters)
            width = max(1, self._config.shard_parameters // packing.slots_per_plaintext)
            runtime.pass_kind = "ciphertexts"
            row = self._store.round(job["job_id"], job["round"])
            runtime.total_examples = float(row["total_examples"] if row else 0) or 1.0
        runtime.shards = [
            ShardState(
                f"{job['job_id']}-r{job['round']}a{job['attempt']}-{runtime.pass_kind}-s{index}",
                begin,
                end,
            )
            for index, (begin, end) in enumerate(plan_shards(size, width))
        ]
        self._wake.notify_all()

    def _decrypt_and_replan(
        self, job: dict[str, Any], spec: JobSpec, runtime: RoundRuntime
    ) -> None:
        """The products of all shards are the encrypted sum; the keymanager checks and
        decrypts it, and the optimizer pass starts from the plaintext sum."""
        assert self._keys is not None
        aggregate = self._artifacts.compose([s.weights for s in runtime.shards], dtype="bytes")
        updates = self._store.updates(job["job_id"], job["round"], job["attempt"])
        try:
            runtime.sum_digest = self._keys.decrypt_aggregate(
                job["job_id"],
                job["round"],
                aggregate.digest,
                [(u.client_id, u.digest) for u in updates],
                job_manifest(job).num_parameters,
            )
        except RpcRejection as rejection:
            runtime.shards = []
            self._retry_round(job, spec, runtime, f"decryption refused: {rejection.message}")
            return
        # Clients weighted by n_k / (examples of all selected); dropouts change the total.
        survivors = sum(u.num_examples for u in updates)
        runtime.input_scale = runtime.total_examples / survivors
        self._plan_aggregation(job, runtime)

    def _finish_aggregation(
        self, job: dict[str, Any], spec: JobSpec, runtime: RoundRuntime
    ) -> None:
        shards = runtime.shards
        try:
            weights = self._artifacts.compose([s.weights for s in shards])
            state = {
                name: self._artifacts.compose([s.server_state[name] for s in shards]).digest
                for name in server_optimizer(spec.algorithm).state_names
            }
        except BlobsUnavailable as error:
            # Shard results are not written durably (they can be computed again): one lost
            # or torn by a crash sends the round through aggregation again; results that keep
            # failing (a broken store) fail the round instead.
            runtime.lost_aggregations += 1
            if runtime.lost_aggregations > MAX_LOST_AGGREGATIONS:
                runtime.lost_aggregations = 0
                self._retry_round(job, spec, runtime, f"shard results unavailable: {error}")
                return
            log.warning(
                "job %s round %d: shard results unavailable (%s); aggregating again",
                job["job_id"],
                job["round"],
                error,
            )
            self._plan_aggregation(job, runtime)
            return
        runtime.lost_aggregations = 0
        updates = self._store.updates(job["job_id"], job["round"], job["attempt"])
        privacy = self._account_privacy(job, spec, updates)
        record = self._artifacts.put_model(
            modelstore_pb2.ModelRecord(
                job_id=job["job_id"],
                round=job["round"],
                parent_version=job["model_version"],
                participants=sorted(u.site for u in updates),
                manifest=job_manifest(job),
                blob=weights,
                algorithm=spec.algorithm.name,
                server_state=state,
                metrics=privacy,
            )
        )
        runtime.shards, runtime.sum_digest, runtime.input_scale = [], "", 1.0
        runtime.secagg = None
        self._store.update_job(
            job["job_id"], model_version=record.version, server_state=json.dumps(state)
        )
        self._store.update_round(
            job["job_id"],
            job["round"],
            new_version=record.version,
            epsilon=privacy.get("epsilon"),
        )
        job["model_version"] = record.version
        log.info(
            "job %s round %d: new global model %s", job["job_id"], job["round"], record.version[:12]
        )
        self._to_phase(job, Phase.EVALUATING, runtime)
        self._dispatch_evaluation(job, runtime)

    def _account_privacy(
        self, job: Mapping[str, Any], spec: JobSpec, updates: list[AcceptedUpdate]
    ) -> dict[str, float]:
        """ε spent so far. Client-level DP: the job's RDP accountant, one Gaussian event per
        round with q = 1 (selection is deterministic, so no amplification by sampling is
        claimed). DP-SGD: each site accounts for its own examples; the job reports the largest.
        Recorded before the model is stored: a crash in between counts a round twice, never
        zero times."""
        if spec.privacy is None:
            return {}
        if spec.privacy.mode == "client":
            history = json.loads(job["privacy"] or "{}")
            accountant = (
                PrivacyAccountant.from_dict(history)
                if history
                else PrivacyAccountant(spec.privacy.delta)
            )
            accountant.record_round(spec.privacy.require_noise_multiplier(), 1.0)
            self._store.update_job(job["job_id"], privacy=json.dumps(accountant.to_dict()))
            epsilon = accountant.epsilon()
        else:
            reported = [u.metrics["epsilon"] for u in updates if "epsilon" in u.metrics]
            epsilon = max(reported) if reported else math.inf
        if not math.isfinite(epsilon):
            return {"delta": spec.privacy.delta}
        PRIVACY_EPSILON.labels(job["job_id"]).set(epsilon)
        log.info(
            "job %s round %d: privacy spent epsilon=%.3f at delta=%g",
            job["job_id"],
            job["round"],
            epsilon,
            spec.privacy.delta,
        )
        return {"epsilon": epsilon, "delta": spec.privacy.delta}

    def _dispatch_evaluation(self, job: Mapping[str, Any], runtime: RoundRuntime) -> None:
        spec = JobSpec.from_json(job["spec_json"])
        alive = self._clients.alive_clients(spec.dataset)
        runtime.eval_expected = {c: s for c, s in alive.items() if s not in runtime.evaluated}
        runtime.deadline = self._clock() + spec.evaluation_timeout_s
        for client_id, site in runtime.eval_expected.items():
            self._new_task(job, scheduler_pb2.TASK_KIND_EVALUATE, client_id, site, runtime.deadline)

    def _finish_round(self, job: dict[str, Any], spec: JobSpec, runtime: RoundRuntime) -> None:
        self._drop_tasks(job["job_id"])
        self._to_phase(job, Phase.DONE, runtime)
        now = self._clock()
        self._store.update_round(job["job_id"], job["round"], ended_at=now)
        row = self._store.round(job["job_id"], job["round"])
        if row is not None:
            ROUND_SECONDS.labels(job["job_id"]).observe(now - row["started_at"])
        summary = summarize_evaluations(
            self._store.evaluations(job["job_id"], job["round"]).get(job["round"], {})
        )
        if summary["mean_test_accuracy"] is not None:
            MODEL_ACCURACY.labels(job["job_id"]).set(summary["mean_test_accuracy"])
            MODEL_LOSS.labels(job["job_id"]).set(summary["mean_test_loss"] or 0.0)
            log.info(
                "job %s round %d done: mean test accuracy %.3f",
                job["job_id"],
                job["round"],
                summary["mean_test_accuracy"],
            )
        ROUNDS.labels(job["job_id"], "completed").inc()
        runtime.evaluated, runtime.eval_expected = set(), {}
        runtime.declines.clear()
        if job["round"] >= spec.rounds:
            self._finish_job(job["job_id"], JobState.COMPLETED, "")
            return
        self._store.update_job(
            job["job_id"], round=job["round"] + 1, attempt=0, phase=Phase.SELECTING
        )
        runtime.selected, runtime.finished = {}, set()

    def _finish_job(self, job_id: str, state: JobState, error: str) -> None:
        self._drop_tasks(job_id)
        self._runtime.pop(job_id, None)
        self._times_selected.pop(job_id, None)
        self._times_evaluated.pop(job_id, None)
        self._store.update_job(job_id, state=state, error=error)
        JOB_RUNNING.labels(job_id).set(0)
        log.info("job %s %s%s", job_id, state.value, f": {error}" if error else "")

    def _log_waiting(self, job: Mapping[str, Any], runtime: RoundRuntime, why: str) -> None:
        if not runtime.waiting_logged:
            log.info("job %s round %d waiting: %s", job["job_id"], job["round"], why)
            runtime.waiting_logged = True


# Phases with tasks out to the selected sites, whose declines can leave a round short.
DISPATCHED_PHASES = frozenset(
    {Phase.INITIALIZING, Phase.ADVERTISING, Phase.SHARING, Phase.TRAINING, Phase.UNMASKING}
)


def round_quorum(spec: JobSpec) -> int:
    """Sites a training round needs: min_clients, and two at least under secure aggregation
    (a sum of one is that site's update)."""
    return max(spec.min_clients, 2) if spec.protection == "secagg" else spec.min_clients


def encrypted_update_bytes(job: Mapping[str, Any]) -> int:
    """Size of a well-formed encrypted update: ciphertexts (canary included) x their width."""
    spec = JobSpec.from_json(job["spec_json"])
    public_key = public_key_from_bytes(bytes.fromhex(job["public_key"]))
    count = spec.paillier.packing().num_ciphertexts(job_manifest(job).num_parameters)
    return int(count * ciphertext_bytes(public_key))


def client_level_dp(spec: JobSpec) -> bool:
    return spec.privacy is not None and spec.privacy.mode == "client"


def resolve_privacy(spec: JobSpec) -> JobSpec:
    """Turn a client-level `target_epsilon` into the noise multiplier that spends it over the
    job's rounds (q = 1), so every party works with one concrete setting."""
    if spec.privacy is None or spec.privacy.mode != "client" or spec.privacy.target_epsilon is None:
        return spec
    try:
        resolved = spec.privacy.resolved(rounds=spec.rounds, sampling_probability=1.0)
    except ValueError as error:
        raise invalid_argument(f"privacy.target_epsilon: {error}") from None
    return spec.model_copy(update={"privacy": resolved})


def job_manifest(job: Mapping[str, Any]) -> common_pb2.ModelManifest:
    """The model layout fixed when the initial model was accepted (empty before)."""
    manifest = common_pb2.ModelManifest()
    if job["manifest_json"]:
        json_format.Parse(job["manifest_json"], manifest)
    return manifest


def _numel(shape: Any) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def summarize_evaluations(per_site: Mapping[str, Mapping[str, float]]) -> dict[str, float | None]:
    """Mean over sites (each hospital counts once, as FLamby reports) and example-weighted."""
    if not per_site:
        return {"mean_test_accuracy": None, "mean_test_loss": None, "weighted_test_accuracy": None}
    accuracies = [m["accuracy"] for m in per_site.values()]
    losses = [m.get("loss", 0.0) for m in per_site.values()]
    counts = [m["num_examples"] for m in per_site.values()]
    return {
        "mean_test_accuracy": sum(accuracies) / len(accuracies),
        "mean_test_loss": sum(losses) / len(losses),
        "weighted_test_accuracy": sum(a * n for a, n in zip(accuracies, counts, strict=True))
        / sum(counts),
    }
