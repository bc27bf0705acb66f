"""protection: secagg — secure aggregation (Bonawitz et al. 2017, SecAgg+'s sparse graph).

Its phases, each a round of tasks to the sites still in:
    ADVERTISING  sites publish two fresh X25519 keys to the keymanager's directory (U1)
    SHARING      sites Shamir-share their seeds among their neighbours; the scheduler relays
                 the sealed shares (U2)
    TRAINING     sites upload masked updates in the uint32 ring (U3: the survivors)
    UNMASKING    survivors reveal, per owner, a self-seed share or a mask-key share
Then the aggregators sum the ring, remove the masks and turn the sum back into floats. The
key material lives in memory only: a restarted scheduler starts the round again with fresh
keys."""

from __future__ import annotations

from typing import ClassVar

from fedsilo.jobs import JobSpec
from fedsilo.rpc.errors import invalid_argument
from fedsilo.scheduler.interfaces import Job, RoundRuntime, TaskInfo
from fedsilo.scheduler.jobrows import client_level_dp
from fedsilo.scheduler.protocols.base import RoundProtocol
from fedsilo.scheduler.secagg_round import SecAggState, key_round, reveal_from_message
from fedsilo.scheduler.store import AcceptedUpdate, Phase
from fedsilo.v1 import aggregator_pb2, scheduler_pb2


class SecAggProtocol(RoundProtocol):
    name = "secagg"
    phases: ClassVar[frozenset[Phase]] = frozenset(
        {Phase.ADVERTISING, Phase.SHARING, Phase.UNMASKING}
    )
    restart_phases: ClassVar[frozenset[Phase]] = phases | {Phase.AGGREGATING}
    update_dtype = "uint32"  # masked inputs live in the ring

    def quorum(self, spec: JobSpec) -> int:
        return max(spec.min_clients, 2)  # a sum of one is that site's update

    def open_round(self, job: Job, spec: JobSpec, runtime: RoundRuntime) -> None:
        runtime.secagg = SecAggState(
            job["job_id"], key_round(job["round"], job["attempt"]), spec.secagg.clip
        )
        self.control.to_phase(job, Phase.ADVERTISING, runtime)
        self.control.dispatch(
            job, scheduler_pb2.TASK_KIND_SECAGG_ADVERTISE, runtime, spec.round_timeout_s
        )

    def advance(
        self, job: Job, spec: JobSpec, runtime: RoundRuntime, phase: Phase, now: float
    ) -> None:
        if phase == Phase.ADVERTISING:
            self._advance_advertising(job, spec, runtime, now)
            return
        self.control.drop_lost_clients(job, spec, runtime)
        if not (runtime.everyone_finished() or now > runtime.deadline):
            return
        if phase == Phase.SHARING:
            self._close_sharing(job, spec, runtime)
        else:
            self._close_unmasking(job, spec, runtime)

    def _state(self, runtime: RoundRuntime) -> SecAggState:
        assert runtime.secagg is not None
        return runtime.secagg

    def _advance_advertising(
        self, job: Job, spec: JobSpec, runtime: RoundRuntime, now: float
    ) -> None:
        """Clients publish their round keys to the keymanager; the round goes on with those
        that did (U1) once all have answered, or at the deadline."""
        state = self._state(runtime)
        assert self.control.round_keys is not None
        published = set(self.control.round_keys.round_keys(job["job_id"], state.key_round))
        runtime.finished |= published & set(runtime.selected)  # declines are finished too
        self.control.drop_lost_clients(job, spec, runtime)
        if not (runtime.everyone_finished() or now > runtime.deadline):
            return
        advertised = sorted(published & set(runtime.selected))
        if len(advertised) < self.quorum(spec):
            self.control.retry_round(
                job, spec, runtime, f"{len(advertised)} clients published round keys"
            )
            return
        self.control.drop_tasks(job["job_id"])
        state.fix_graph(advertised, spec)
        runtime.selected = {c: runtime.selected[c] for c in advertised}
        self._next_phase(job, spec, runtime, Phase.SHARING, scheduler_pb2.TASK_KIND_SECAGG_SHARE)

    def _next_phase(
        self, job: Job, spec: JobSpec, runtime: RoundRuntime, phase: Phase, kind: int
    ) -> None:
        runtime.finished = set()
        self.control.to_phase(job, phase, runtime)
        self.control.dispatch(job, kind, runtime, spec.round_timeout_s)

    def _close_sharing(self, job: Job, spec: JobSpec, runtime: RoundRuntime) -> None:
        state = self._state(runtime)
        self.control.drop_tasks(job["job_id"])
        shared = sorted(runtime.finished & set(runtime.selected))
        if len(shared) < max(spec.min_clients, state.threshold):
            self.control.retry_round(
                job,
                spec,
                runtime,
                f"{len(shared)} clients shared their keys; threshold {state.threshold}",
            )
            return
        state.shared = shared
        state.shares = [s for s in state.shares if s.owner in shared and s.holder in shared]
        runtime.selected = {c: runtime.selected[c] for c in shared}
        runtime.total_examples = self.control.total_examples(spec, shared)
        if client_level_dp(spec):  # sites count equally: each weighs 1 / |U2|
            runtime.total_examples = float(len(shared))
        self.control.store.update_round(
            job["job_id"], job["round"], total_examples=runtime.total_examples
        )
        self._next_phase(job, spec, runtime, Phase.TRAINING, scheduler_pb2.TASK_KIND_TRAIN)

    def training_closed(
        self, job: Job, spec: JobSpec, runtime: RoundRuntime, updates: list[AcceptedUpdate]
    ) -> None:
        survivors = [u.client_id for u in updates]
        runtime.selected = {c: runtime.selected[c] for c in survivors if c in runtime.selected}
        self._next_phase(job, spec, runtime, Phase.UNMASKING, scheduler_pb2.TASK_KIND_SECAGG_UNMASK)

    def _close_unmasking(self, job: Job, spec: JobSpec, runtime: RoundRuntime) -> None:
        state = self._state(runtime)
        assert self.control.round_keys is not None
        self.control.drop_tasks(job["job_id"])
        try:
            state.reconstruct(
                self.control.round_keys.round_keys(job["job_id"], state.key_round),
                sorted(runtime.selected),
            )
        except ValueError as error:  # ProtocolError: too few reveals, bad shares
            self.control.retry_round(job, spec, runtime, f"unmasking failed: {error}")
            return
        updates = self.control.store.updates(job["job_id"], job["round"], job["attempt"])
        weights = len(updates) if client_level_dp(spec) else sum(u.num_examples for u in updates)
        runtime.input_scale = runtime.total_examples / weights
        self.control.aggregate(job, runtime)

    def decorate(
        self, task: scheduler_pb2.Task, job: Job, runtime: RoundRuntime, client_id: str
    ) -> None:
        state = runtime.secagg
        if state is None:  # round 0: the initial model is not protected
            return
        task.protection = "secagg"
        task.total_examples = runtime.total_examples
        if task.kind == scheduler_pb2.TASK_KIND_SECAGG_UNMASK:
            task.secagg.CopyFrom(
                state.message(
                    survivors=sorted(runtime.selected),
                    dropped=sorted(set(state.shared) - set(runtime.selected)),
                    shares_for_you=state.shares_for(client_id),
                )
            )
        else:
            task.secagg.CopyFrom(state.message())

    def shard(
        self, message: aggregator_pb2.Shard, job: Job, spec: JobSpec, runtime: RoundRuntime
    ) -> None:
        # The sites already added their shares of any client-level DP noise.
        state = self._state(runtime)
        if state.unmasking is not None:
            message.protection = "secagg"
            message.secagg_json = state.shard_json(len(message.inputs))

    def submit(
        self, request: scheduler_pb2.SecAggSubmitRequest, task: TaskInfo, runtime: RoundRuntime
    ) -> None:
        state = self._state(runtime)
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
