"""The round core: a job's lifecycle, its rounds' common phases, and persistence.

The driver thread alone moves rounds from phase to phase; RPC handlers only record facts and
wake it. Every transition is written to the SchedulerStore first, so a restarted scheduler
resumes where the last one stopped. A round: INITIALIZING (round 0: one site draws the
initial model) or SELECTING -> the round protocol's phases (plaintext: TRAINING) ->
AGGREGATING (shards to the aggregators) -> EVALUATING -> the next round. The core knows
nothing of masks, ciphertexts or noise: the job's RoundProtocol does (fedsilo.scheduler
.protocols), and privacy accounting, shard leasing and status are collaborators.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import Any

from fedsilo.audit import AuditLog
from fedsilo.jobs import JobSpec
from fedsilo.rpc.errors import RpcRejection
from fedsilo.scheduler.aggregation import ShardQueue, pass_complete
from fedsilo.scheduler.declines import no_quorum_reason, quorum_out_of_reach
from fedsilo.scheduler.endings import (
    close_training,
    dispatch_evaluation,
    finish_aggregation,
    finish_round,
)
from fedsilo.scheduler.interfaces import (
    ArtifactStore,
    ClientDirectory,
    Job,
    KeyService,
    RoundKeyDirectory,
    RoundRuntime,
    SchedulerConfig,
    TaskInfo,
)
from fedsilo.scheduler.jobrows import excluded_sites, job_manifest, job_spec
from fedsilo.scheduler.planning import round_seed, select_clients
from fedsilo.scheduler.protocols import PROTOCOLS
from fedsilo.scheduler.protocols.base import RoundProtocol
from fedsilo.scheduler.store import JobState, Phase, SchedulerStore
from fedsilo.scheduler.tasks import TaskBoard
from fedsilo.telemetry import (
    CLIENTS_SELECTED,
    CURRENT_ROUND,
    JOB_RUNNING,
    JOBS,
    ROUND_PHASE_SECONDS,
    ROUNDS,
    SHARDS_PENDING,
)
from fedsilo.v1 import scheduler_pb2

log = logging.getLogger("fedsilo.scheduler")

# Phases whose tasks and answers live in memory: after a restart the round starts again.
RESTART_PHASES = frozenset({Phase.INITIALIZING, Phase.SELECTING, Phase.TRAINING})


class RoundCore:
    """Implements RoundControl for the round protocols; see the module's docstring."""

    def __init__(
        self,
        store: SchedulerStore,
        clients: ClientDirectory,
        artifacts: ArtifactStore,
        config: SchedulerConfig,
        clock: Callable[[], float],
        keys: KeyService | None,
        round_keys: RoundKeyDirectory | None,
        audit: AuditLog | None = None,
    ) -> None:
        self.store, self.clients, self.artifacts = store, clients, artifacts
        self.config, self.clock, self.keys, self.round_keys = config, clock, keys, round_keys
        self.audit = audit
        self.lock = threading.RLock()
        self.wake = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.board = TaskBoard(self.lock, self.stopping)
        self.runtimes: dict[str, RoundRuntime] = {}
        self.protocols = {name: protocol(self) for name, protocol in PROTOCOLS.items()}
        self.shards = ShardQueue(
            store, self.runtimes, self.protocol_of, self.wake, self.stopping, config, clock
        )
        self._times_selected: dict[str, dict[str, int]] = {}
        self._progressed = False

    def protocol_of(self, job: Mapping[str, Any]) -> RoundProtocol:
        return self.protocols[job_spec(job).protection]

    def runtime(self, job_id: str) -> RoundRuntime:
        return self.runtimes.setdefault(job_id, RoundRuntime(phase_started=self.clock()))

    # the driver ----------------------------------------------------------------------------
    def drive(self) -> None:
        while not self.stopping.is_set():
            with self.wake:
                self._progressed = False
                try:
                    self._advance_all()
                except Exception:  # a failing job must not stop the others
                    log.exception("round driver error")
                # After a transition the next one may already be possible: go again at once.
                if not self._progressed:
                    self.wake.wait(timeout=self.config.tick_s)

    def recover(self) -> None:
        for job in self.store.jobs(JobState.RUNNING):
            job_id, phase = job["job_id"], Phase(job["phase"])
            runtime = self.runtime(job_id)
            protocol = self.protocol_of(job)
            if phase in RESTART_PHASES | protocol.phases | protocol.restart_phases:
                # Tasks handed out before the restart are gone: run the round again, as a new
                # attempt so that late updates for the old one are refused.
                restart = Phase.INITIALIZING if job["round"] == 0 else Phase.SELECTING
                self.store.update_job(job_id, phase=restart, attempt=job["attempt"] + 1)
                log.info(
                    "job %s: resuming round %d as attempt %d",
                    job_id,
                    job["round"],
                    job["attempt"] + 1,
                )
            elif phase == Phase.AGGREGATING:
                self.plan_aggregation(self.store.job(job_id) or job, runtime)
                log.info("job %s: re-planning aggregation of round %d", job_id, job["round"])
            elif phase == Phase.EVALUATING:
                done = self.store.evaluations(job_id, job["round"]).get(job["round"], {})
                runtime.evaluated = set(done)
                dispatch_evaluation(self, job, runtime)
                log.info("job %s: re-dispatching evaluation of round %d", job_id, job["round"])

    def _advance_all(self) -> None:
        jobs = self.store.jobs()
        for state in JobState:
            JOBS.labels(state.value).set(sum(job["state"] == state for job in jobs))
        for job in (job for job in jobs if job["state"] == JobState.RUNNING):
            # Every tick, so that a job still initializing, or resumed after a restart, has
            # series too: "running but the round does not advance" is what alerts look for.
            JOB_RUNNING.labels(job["job_id"]).set(1)
            CURRENT_ROUND.labels(job["job_id"]).set(job["round"])
            try:
                self._advance(job)
            except RpcRejection as rejection:
                log.warning("job %s: %s; will retry", job["job_id"], rejection.message)
        SHARDS_PENDING.set(self.shards.pending())

    def _advance(self, job: Job) -> None:
        spec, runtime, protocol = job_spec(job), self.runtime(job["job_id"]), self.protocol_of(job)
        phase, now = Phase(job["phase"]), self.clock()
        if phase in DISPATCHED_PHASES and runtime.selected:
            quorum = 1 if phase == Phase.INITIALIZING else protocol.quorum(spec)
            declined = runtime.declines.in_attempt(job["attempt"])
            if quorum_out_of_reach(runtime.selected, declined, quorum):
                self._round_declined(job, spec, runtime, quorum)
                return
        if phase in protocol.phases:
            protocol.advance(job, spec, runtime, phase, now)
        elif phase == Phase.INITIALIZING:
            if not runtime.selected:
                self._dispatch_initialize(job, spec, runtime)
            elif runtime.finished or now > runtime.deadline:
                if job["model_version"]:
                    self.to_phase(job, Phase.EVALUATING, runtime)
                    dispatch_evaluation(self, self.store.job(job["job_id"]) or job, runtime)
                else:
                    self.retry_round(job, spec, runtime, "no initial model before the deadline")
        elif phase == Phase.SELECTING:
            self._select(job, spec, runtime, protocol)
        elif phase == Phase.TRAINING:
            self.drop_lost_clients(job, spec, runtime)
            if runtime.everyone_finished() or now > runtime.deadline:
                close_training(self, job, spec, runtime, protocol)
        elif phase == Phase.AGGREGATING:
            if pass_complete(runtime) and protocol.aggregation_done(job, spec, runtime):
                finish_aggregation(self, job, spec, runtime)
        elif phase == Phase.EVALUATING:
            self.drop_lost_clients(job, spec, runtime)
            if runtime.evaluated >= set(runtime.eval_expected.values()) or now > runtime.deadline:
                finish_round(self, job, spec, runtime)

    # RoundControl ------------------------------------------------------------------------------
    def to_phase(self, job: Job, phase: Phase, runtime: RoundRuntime) -> None:
        now = self.clock()
        elapsed, old = now - runtime.phase_started, job["phase"]
        ROUND_PHASE_SECONDS.labels(job["job_id"], old).observe(elapsed)
        current = self.store.round(job["job_id"], job["round"])
        if current is not None:
            phases = current["phases"]
            phases[old] = round(phases.get(old, 0.0) + elapsed, 6)
            self.store.update_round(job["job_id"], job["round"], phases=phases)
        self.store.update_job(job["job_id"], phase=phase)
        job["phase"] = phase
        runtime.phase_started = now
        self._progressed = True
        runtime.waiting_logged = False

    def dispatch(self, job: Job, kind: int, runtime: RoundRuntime, timeout_s: float) -> None:
        runtime.deadline = self.clock() + timeout_s
        for client_id, site in runtime.selected.items():
            self.new_task(job, kind, client_id, site, runtime.deadline)

    def new_task(self, job: Job, kind: int, client_id: str, site: str, deadline: float) -> None:
        task_id = secrets.token_hex(8)
        task = scheduler_pb2.Task(
            kind=scheduler_pb2.TaskKind.ValueType(kind),
            task_id=task_id,
            job_id=job["job_id"],
            round=job["round"],
            model_version=job["model_version"],
            job_spec_json=job["spec_json"],
            deadline_unix=deadline,
            manifest=job_manifest(job),
        )
        self.protocol_of(job).decorate(task, job, self.runtime(job["job_id"]), client_id)
        info = TaskInfo(task_id, job["job_id"], job["round"], job["attempt"], kind, client_id, site)
        self.board.post(info, task)

    def drop_tasks(self, job_id: str) -> None:
        self.board.drop_job(job_id)

    def drop_lost_clients(
        self, job: Mapping[str, Any], spec: JobSpec, runtime: RoundRuntime
    ) -> None:
        """A client whose heartbeat stopped will not answer: stop waiting for it now rather
        than at the deadline."""
        now = self.clock()
        if now - runtime.liveness_checked < self.config.liveness_check_s:
            return
        runtime.liveness_checked = now
        alive = self.clients.alive_clients(spec.dataset)
        evaluating = job["phase"] == Phase.EVALUATING
        waiting_on = runtime.eval_expected if evaluating else runtime.selected
        for client_id, site in waiting_on.items():
            done = site in runtime.evaluated if evaluating else client_id in runtime.finished
            if done or client_id in alive:
                continue
            (runtime.evaluated.add(site) if evaluating else runtime.finished.add(client_id))
            self.store.add_event(
                job["job_id"],
                job["round"],
                "lost",
                client_id,
                "heartbeat stopped; not waiting for this client",
            )
            log.warning(
                "job %s round %d: %s lost (no heartbeat)", job["job_id"], job["round"], client_id
            )

    def retry_round(self, job: Job, spec: JobSpec, runtime: RoundRuntime, reason: str) -> None:
        self.drop_tasks(job["job_id"])
        self.store.add_event(job["job_id"], job["round"], "round_failed", "", reason)
        ROUNDS.labels(job["job_id"], "retried").inc()
        if job["attempt"] + 1 >= spec.max_round_attempts:
            self.finish_job(
                job["job_id"],
                JobState.FAILED,
                f"round {job['round']} failed {spec.max_round_attempts} times: {reason}",
            )
            return
        log.warning("job %s round %d: %s; trying again", job["job_id"], job["round"], reason)
        restart = Phase.INITIALIZING if job["round"] == 0 else Phase.SELECTING
        self.to_phase(job, restart, runtime)
        self.store.update_job(job["job_id"], attempt=job["attempt"] + 1)
        runtime.selected, runtime.finished, runtime.secagg = {}, set(), None

    def aggregate(self, job: Job, runtime: RoundRuntime) -> None:
        self.to_phase(job, Phase.AGGREGATING, runtime)
        self.plan_aggregation(job, runtime)

    def plan_aggregation(self, job: Mapping[str, Any], runtime: RoundRuntime) -> None:
        self.shards.plan(job, runtime)

    def total_examples(self, spec: JobSpec, clients: list[str]) -> float:
        examples = self.clients.examples(spec.dataset)
        return float(sum(examples.get(c, 0) for c in clients)) or 1.0

    # the common phases -----------------------------------------------------------------------
    def _live_candidates(
        self, job: Mapping[str, Any], spec: JobSpec, runtime: RoundRuntime
    ) -> dict[str, str]:
        """Live sites holding the dataset that have not refused this round and that the
        operator has not excluded from the job."""
        refused = runtime.declines.refused()
        excluded = excluded_sites(job)
        alive = self.clients.alive_clients(spec.dataset)
        return {c: s for c, s in alive.items() if c not in refused and s not in excluded}

    def _dispatch_initialize(self, job: Job, spec: JobSpec, runtime: RoundRuntime) -> None:
        alive = self._live_candidates(job, spec, runtime)
        if not alive:
            self._log_waiting(job, runtime, f"no live client holds dataset {spec.dataset!r}")
            return
        self.store.open_round(job["job_id"], 0, job["attempt"], "")
        # Any client can draw the initial weights; rotate by attempt in case one fails.
        ordered = sorted(alive)
        client_id = ordered[job["attempt"] % len(ordered)]
        runtime.selected, runtime.finished = {client_id: alive[client_id]}, set()
        self.store.update_round(job["job_id"], 0, selected=runtime.selected)
        self.dispatch(job, scheduler_pb2.TASK_KIND_INITIALIZE, runtime, spec.round_timeout_s)
        log.info("job %s: %s draws the initial model", job["job_id"], client_id)

    def _select(
        self, job: Job, spec: JobSpec, runtime: RoundRuntime, protocol: RoundProtocol
    ) -> None:
        alive = self._live_candidates(job, spec, runtime)
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
        self.store.open_round(job["job_id"], job["round"], job["attempt"], job["model_version"])
        self.store.update_round(
            job["job_id"],
            job["round"],
            selected=runtime.selected,
            total_examples=runtime.total_examples,
        )
        protocol.open_round(job, spec, runtime)
        CLIENTS_SELECTED.labels(job["job_id"]).inc(len(chosen))
        log.info(
            "job %s round %d: selected %s",
            job["job_id"],
            job["round"],
            ", ".join(sorted(runtime.selected.values())),
        )

    def _round_declined(self, job: Job, spec: JobSpec, runtime: RoundRuntime, quorum: int) -> None:
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
        if len(self._live_candidates(job, spec, runtime)) >= quorum:
            self.retry_round(job, spec, runtime, reason)
            return
        self.drop_tasks(job["job_id"])
        self.store.add_event(job["job_id"], job["round"], "round_failed", "", reason)
        ROUNDS.labels(job["job_id"], "retried").inc()
        self.finish_job(job["job_id"], JobState.FAILED, reason)
        self._progressed = True

    def finish_job(self, job_id: str, state: JobState, error: str) -> None:
        self.drop_tasks(job_id)
        self.runtimes.pop(job_id, None)
        self._times_selected.pop(job_id, None)
        self.store.update_job(job_id, state=state, error=error)
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
