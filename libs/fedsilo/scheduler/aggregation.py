"""A round's aggregation as the aggregators see it: the shards of each pass, leased to
replicas, re-leased when a lease expires, and completed once. Each shard carries what a
replica needs to combine its coordinate range: the inputs, the base model, the algorithm and
its server state, the aggregation rule, and the protocol's protection fields."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from fedsilo.aggregator.anomaly import ShardStatistics
from fedsilo.rpc.errors import RpcRejection, failed_precondition, not_found
from fedsilo.scheduler.interfaces import RoundRuntime, SchedulerConfig
from fedsilo.scheduler.jobrows import job_manifest, job_spec
from fedsilo.scheduler.planning import plan_shards
from fedsilo.scheduler.protocols.base import RoundProtocol
from fedsilo.scheduler.shards import LeaseLost, ShardState, complete, lease_next, renew_lease
from fedsilo.scheduler.store import SchedulerStore
from fedsilo.v1 import aggregator_pb2

MAX_WAIT_S = 60.0


class ShardQueue:
    """Guarded by the scheduler's condition (`wake`): a new plan wakes waiting replicas, a
    completed shard wakes the driver."""

    def __init__(
        self,
        store: SchedulerStore,
        runtimes: dict[str, RoundRuntime],
        protocol_of: Callable[[Mapping[str, Any]], RoundProtocol],
        wake: threading.Condition,
        stopping: threading.Event,
        config: SchedulerConfig,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._runtimes = runtimes
        self._protocol_of = protocol_of
        self._wake = wake
        self._stopping = stopping
        self._config = config
        self._clock = clock

    def plan(self, job: Mapping[str, Any], runtime: RoundRuntime) -> None:
        """Shards over the pass's coordinates (the protocol decides which: Paillier first
        shards ciphertexts, then the decrypted sum's coordinates)."""
        size, width, runtime.pass_kind = self._protocol_of(job).pass_layout(
            dict(job), runtime, job_manifest(job).num_parameters, self._config.shard_parameters
        )
        runtime.shards = [
            ShardState(
                f"{job['job_id']}-r{job['round']}a{job['attempt']}-{runtime.pass_kind}-s{index}",
                begin,
                end,
            )
            for index, (begin, end) in enumerate(plan_shards(size, width))
        ]
        self._wake.notify_all()

    def lease(self, worker_id: str, wait_s: float) -> aggregator_pb2.Shard | None:
        deadline = time.monotonic() + max(0.0, min(wait_s, MAX_WAIT_S))
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
        for job_id, runtime in self._runtimes.items():
            shard = lease_next(runtime.shards, worker_id, now, self._config.lease_s)
            if shard is not None:
                return self._message(job_id, shard)
        return None

    def _message(self, job_id: str, shard: ShardState) -> aggregator_pb2.Shard:
        job = self._store.job(job_id)
        if job is None:
            raise not_found(f"no job {job_id!r}")
        spec = job_spec(job)
        updates = self._store.updates(job_id, job["round"], job["attempt"])
        runtime = self._runtimes[job_id]
        message = aggregator_pb2.Shard(
            input_scale=runtime.input_scale,
            shard_id=shard.shard_id,
            lease_id=shard.lease_id,
            job_id=job_id,
            round=job["round"],
            begin=shard.begin,
            end=shard.end,
            base_digest=job["model_version"],
            inputs=[
                aggregator_pb2.ShardInput(
                    client_id=u.client_id, digest=u.digest, num_examples=u.num_examples
                )
                for u in updates
            ],
            algorithm_json=spec.algorithm.model_dump_json(),
            aggregation_json=spec.aggregation.model_dump_json(),
            server_state=json.loads(job["server_state"]),
            lease_expires_unix=shard.lease_expires,
        )
        self._protocol_of(job).shard(message, job, spec, runtime)
        return message

    def _find(self, shard_id: str) -> ShardState:
        for runtime in self._runtimes.values():
            for shard in runtime.shards:
                if shard.shard_id == shard_id:
                    return shard
        raise not_found(f"no shard {shard_id!r} is being aggregated (round over or cancelled)")

    def renew(self, shard_id: str, lease_id: str) -> float:
        with self._wake:
            try:
                return renew_lease(
                    self._find(shard_id), lease_id, self._clock(), self._config.lease_s
                )
            except LeaseLost as lost:
                raise failed_precondition(str(lost)) from None

    def complete(self, request: aggregator_pb2.CompleteShardRequest) -> bool:
        """First completion under the current lease wins; anything else is ignored."""
        with self._wake:
            try:
                shard = self._find(request.shard_id)
            except RpcRejection:
                return False
            accepted = complete(
                shard,
                request.lease_id,
                request.worker_id,
                request.weights.digest,
                dict(request.server_state),
                received_statistics(request),
                tuple(request.gram) if request.gram else None,
            )
            if accepted:
                self._wake.notify_all()
            return accepted

    def pending(self) -> int:
        return sum(not s.done for r in self._runtimes.values() for s in r.shards)


def received_statistics(request: aggregator_pb2.CompleteShardRequest) -> ShardStatistics | None:
    count = len(request.stat_clients)
    if not count or not (len(request.stat_squared_norms) == len(request.stat_dots) == count):
        return None
    return ShardStatistics(
        clients=tuple(request.stat_clients),
        squared_norms=tuple(request.stat_squared_norms),
        dots=tuple(request.stat_dots),
        aggregate_squared_norm=request.stat_aggregate_squared_norm,
    )


def pass_complete(runtime: RoundRuntime) -> bool:
    return bool(runtime.shards) and all(shard.done for shard in runtime.shards)
