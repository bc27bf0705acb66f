"""The scheduler as its services call it: the operator API (jobs), the client API (tasks,
updates, evaluations, declines) and the aggregator API (shards), over the round core.

RPC handlers only record facts (an update arrived, a site declined, a shard finished) and wake
the driver; the round core (fedsilo.scheduler.core) alone moves rounds from phase to phase.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from fedsilo.aggregator.rules import check_rule
from fedsilo.audit import AuditLog
from fedsilo.jobs import JobSpec
from fedsilo.rpc.errors import (
    RpcRejection,
    failed_precondition,
    invalid_argument,
    not_found,
    permission_denied,
)
from fedsilo.scheduler.accounting import resolve_privacy
from fedsilo.scheduler.core import RoundCore
from fedsilo.scheduler.declines import Decline
from fedsilo.scheduler.endings import accept_initial_model
from fedsilo.scheduler.interfaces import (
    ArtifactStore,
    ClientDirectory,
    Job,
    KeyService,
    RoundKeyDirectory,
    SchedulerConfig,
    TaskInfo,
)
from fedsilo.scheduler.jobrows import excluded_sites
from fedsilo.scheduler.status import job_status, job_summary
from fedsilo.scheduler.store import AcceptedUpdate, JobState, SchedulerStore
from fedsilo.scheduler.submissions import check_initial_model, check_submission
from fedsilo.telemetry import CLIENTS_COMPLETED, UPDATES_REJECTED
from fedsilo.v1 import aggregator_pb2, modelstore_pb2, scheduler_pb2

SITE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # as a site config names itself
log = logging.getLogger("fedsilo.scheduler")


class Scheduler:
    def __init__(
        self,
        store: SchedulerStore,
        clients: ClientDirectory,
        artifacts: ArtifactStore,
        config: SchedulerConfig | None = None,
        clock: Callable[[], float] = time.time,
        keys: KeyService | None = None,
        round_keys: RoundKeyDirectory | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._core = RoundCore(
            store, clients, artifacts, config or SchedulerConfig(), clock, keys, round_keys, audit
        )
        self._store = store
        self._artifacts = artifacts
        self._wake = self._core.wake
        self._thread: threading.Thread | None = None
        with self._wake:
            self._core.recover()

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._core.drive, name="round-driver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._core.stopping.set()
        with self._wake:
            self._wake.notify_all()
            self._core.board.wake_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # operator API --------------------------------------------------------------------------
    def submit_job(self, spec: JobSpec) -> str:
        spec = resolve_privacy(spec)
        try:
            check_rule(spec)
        except ValueError as error:
            raise invalid_argument(f"aggregation: {error}") from None
        job_id = f"job-{secrets.token_hex(6)}"
        columns = self._core.protocols[spec.protection].prepare_job(job_id, spec)
        with self._wake:
            self._store.create_job(job_id, spec.name, spec.to_json())
            if columns:
                self._store.update_job(job_id, **columns)
            self._core.runtime(job_id)
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
            self._core.finish_job(job_id, JobState.CANCELLED, "cancelled by the operator")
            self._wake.notify_all()
        return self.job_status(job_id)

    def exclude_site(self, job_id: str, site: str, reason: str) -> dict[str, Any]:
        """Leave `site` out of the job's future rounds (the current one goes on with it)."""
        if not SITE_NAME.fullmatch(site):
            raise invalid_argument(f"{site!r} is not a site name")
        with self._wake:
            job = self._job_or_raise(job_id)
            if job["state"] != JobState.RUNNING:
                raise failed_precondition(f"job {job_id} is already {job['state']}")
            excluded = {**excluded_sites(job), site: reason}
            self._store.update_job(job_id, excluded=json.dumps(excluded, sort_keys=True))
            self._store.add_event(job_id, job["round"], "site_excluded", "", f"{site}: {reason}")
            self._wake.notify_all()
        log.warning("job %s: site %s excluded from future rounds: %s", job_id, site, reason)
        return self.job_status(job_id)

    # contributions -------------------------------------------------------------------------
    def contribution_inputs(self, job_id: str) -> dict[str, Any]:
        """What a contribution computation reads: for each trained round, its starting
        model and every accepted update (site, digest, examples)."""
        spec = self._plaintext_completed(job_id)
        rounds = []
        for row in self._store.rounds(job_id):
            updates = self._store.updates(job_id, row["round"], row["attempt"])
            if not row["new_version"] or not updates:
                continue
            rounds.append(
                {
                    "round": row["round"],
                    "base_version": row["base_version"],
                    "new_version": row["new_version"],
                    "updates": [
                        {"site": u.site, "digest": u.digest, "num_examples": u.num_examples}
                        for u in updates
                    ],
                }
            )
        return {"job_id": job_id, "spec": spec, "rounds": rounds}

    def job_blob(self, job_id: str, digest: str) -> None:
        """Raises unless `digest` is one of the job's models or accepted updates."""
        self._plaintext_completed(job_id)
        if not self._store.holds_blob(job_id, digest):
            raise not_found(f"{digest[:16]}... is neither a model nor an update of job {job_id}")

    def _plaintext_completed(self, job_id: str) -> dict[str, Any]:
        """The job's spec, if its per-site updates can be read: a completed plaintext job
        (secure aggregation and Paillier hide each site's update by design)."""
        job = self._job_or_raise(job_id)
        spec: dict[str, Any] = json.loads(job["spec_json"])
        if spec.get("protection", "none") != "none":
            raise failed_precondition(
                f"job {job_id} ran under {spec['protection']}: per-site contributions are not "
                "computable from masked updates (only their sum was ever decrypted or "
                "unmasked); the job's status shows the federation's figures, not the sites'"
            )
        if job["state"] != JobState.COMPLETED:
            raise failed_precondition(f"job {job_id} is {job['state']}, not completed")
        return spec

    def record_contributions(self, job_id: str, contributions: dict[str, Any]) -> dict[str, Any]:
        """Keep a contribution computation's result with the job (the latest replaces any
        earlier one) and in its events."""
        self._plaintext_completed(job_id)
        with self._wake:
            self._store.update_job(job_id, contributions=json.dumps(contributions, sort_keys=True))
            summary = ", ".join(
                f"{site} {value:.4f}"
                for site, value in sorted(contributions.get("shapley", {}).items())
            )
            job = self._job_or_raise(job_id)
            self._store.add_event(job_id, job["round"], "contributions", "", summary)
        return self.job_status(job_id)

    def list_jobs(self) -> list[dict[str, Any]]:
        return [job_summary(job) for job in self._store.jobs()]

    def job_status(self, job_id: str) -> dict[str, Any]:
        return job_status(self._store, self._job_or_raise(job_id))

    def _job_or_raise(self, job_id: str) -> Job:
        job = self._store.job(job_id)
        if job is None:
            raise not_found(f"no job {job_id!r}")
        return job

    # client API ----------------------------------------------------------------------------
    def wait_for_task(self, client_id: str, wait_s: float) -> scheduler_pb2.Task:
        return self._core.board.wait_for_task(client_id, wait_s)

    def submit_update(self, request: scheduler_pb2.SubmitUpdateRequest) -> None:
        # The blob's facts come from the model store, and a protocol's remote check (Paillier
        # asks the keymanager), before taking the lock.
        try:
            info = self._artifacts.stat(request.update.digest) if request.update.digest else None
        except RpcRejection:
            info = None
        job = self._store.job(request.job_id)
        problem = self._core.protocol_of(job).precheck(request, job, info) if job else None
        with self._wake:
            try:
                job, task = self._accept(request, info, problem)
            except RpcRejection as rejection:
                self._reject(request.job_id, request.round, request.client_id, rejection)
                raise
        log.info(
            "job %s round %d: accepted update from %s (%d examples)",
            job["job_id"],
            job["round"],
            task.client_id,
            request.num_examples,
        )

    def _accept(
        self,
        request: scheduler_pb2.SubmitUpdateRequest,
        info: modelstore_pb2.BlobInfo | None,
        problem: str | None,
    ) -> tuple[Job, TaskInfo]:
        core = self._core
        job, task, info = check_submission(
            request,
            self._store.job(request.job_id),
            core.board.open.get(request.task_id),
            core.runtimes.get(request.job_id),
            info,
        )
        runtime = core.runtime(job["job_id"])
        if task.kind == scheduler_pb2.TASK_KIND_INITIALIZE:
            check_initial_model(request, info)
            accept_initial_model(core, job, request, task)
        else:
            core.protocol_of(job).check_update(job, task, request, info, problem)
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
        core.board.close(task.task_id)
        self._wake.notify_all()
        return job, task

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
        job = self._store.job(job_id)
        if job is None:
            return
        self._store.add_event(job_id, round_, f"rejected:{reason}", client_id, rejection.message)
        # A rejected client is done for this round: the others go on without waiting for it.
        runtime = self._core.runtimes.get(job_id)
        if runtime is not None and client_id in runtime.selected and job["round"] == round_:
            runtime.finished.add(client_id)
            self._wake.notify_all()

    def report_evaluation(self, request: scheduler_pb2.ReportEvaluationRequest) -> None:
        with self._wake:
            task = self._core.board.open.get(request.task_id)
            if task is None or task.kind != scheduler_pb2.TASK_KIND_EVALUATE:
                raise failed_precondition(f"evaluation task {request.task_id} is not open")
            if task.client_id != request.client_id:
                raise permission_denied(f"task {request.task_id} belongs to another client")
            if request.num_examples <= 0 or not request.metrics:
                raise invalid_argument("an evaluation needs num_examples > 0 and its metrics")
            self._job_or_raise(task.job_id)
            self._store.add_evaluation(
                task.job_id,
                task.round,
                task.client_id,
                task.site,
                request.model_version,
                request.num_examples,
                dict(request.metrics),
                dict(request.undefined_metrics),
                request.primary_metric,
            )
            self._core.runtime(task.job_id).evaluated.add(task.site)
            self._core.board.close(task.task_id)
            self._wake.notify_all()
        log.info(
            "job %s round %d: %s evaluated (%s)",
            task.job_id,
            task.round,
            task.site,
            ", ".join(f"{name} {value:.3f}" for name, value in sorted(request.metrics.items())),
        )

    def decline_task(self, request: scheduler_pb2.DeclineTaskRequest) -> None:
        with self._wake:
            task = self._core.board.open.get(request.task_id)
            if task is None:
                raise failed_precondition(f"task {request.task_id} is not open")
            if task.client_id != request.client_id:
                raise permission_denied(f"task {request.task_id} belongs to another client")
            self._core.board.close(task.task_id)
            runtime = self._core.runtimes.get(task.job_id)
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

    def secagg_submit(self, request: scheduler_pb2.SecAggSubmitRequest) -> None:
        with self._wake:
            task = self._core.board.open.get(request.task_id)
            if task is None or task.kind not in (
                scheduler_pb2.TASK_KIND_SECAGG_SHARE,
                scheduler_pb2.TASK_KIND_SECAGG_UNMASK,
            ):
                raise failed_precondition(f"secure-aggregation task {request.task_id} is not open")
            if task.client_id != request.client_id:
                raise permission_denied(f"task {request.task_id} belongs to another client")
            job = self._job_or_raise(task.job_id)
            runtime = self._core.runtime(task.job_id)
            self._core.protocol_of(job).submit(request, task, runtime)
            runtime.finished.add(task.client_id)
            self._core.board.close(task.task_id)
            self._wake.notify_all()

    # aggregator API ------------------------------------------------------------------------
    def lease_shard(self, worker_id: str, wait_s: float) -> aggregator_pb2.Shard | None:
        return self._core.shards.lease(worker_id, wait_s)

    def renew_lease(self, shard_id: str, lease_id: str) -> float:
        return self._core.shards.renew(shard_id, lease_id)

    def complete_shard(self, request: aggregator_pb2.CompleteShardRequest) -> bool:
        return self._core.shards.complete(request)
