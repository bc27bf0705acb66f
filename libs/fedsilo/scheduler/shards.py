"""Coordinate-range shards of a round being aggregated, leased to aggregator replicas.

A replica leases a shard for `lease_s` seconds and renews while it works; a lease that runs
out (the replica died or stalled) goes to the next replica that asks, and only the first
completion under the current lease counts, so every shard is reduced exactly once.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from fedsilo.aggregator.anomaly import ShardStatistics

log = logging.getLogger("fedsilo.scheduler")


@dataclass
class ShardState:
    shard_id: str
    begin: int
    end: int
    lease_id: str = ""
    worker_id: str = ""
    lease_expires: float = 0.0
    weights: str = ""
    server_state: dict[str, str] = field(default_factory=dict)
    stats: ShardStatistics | None = None  # plaintext rounds: what the range saw of each input
    gram: tuple[float, ...] | None = None  # a "gram" pass: the inputs' Gram matrix, row-major

    @property
    def done(self) -> bool:
        return bool(self.weights) or self.gram is not None


class LeaseLost(Exception):
    """The lease is not (or no longer) the shard's current one."""


def lease_next(
    shards: Iterable[ShardState], worker_id: str, now: float, lease_s: float
) -> ShardState | None:
    """Lease the first shard that is neither done nor under a live lease."""
    for shard in shards:
        if shard.done or (shard.lease_id and shard.lease_expires > now):
            continue
        if shard.lease_id:
            log.warning(
                "shard %s: lease of %s expired; leasing again", shard.shard_id, shard.worker_id
            )
        shard.lease_id = secrets.token_hex(8)
        shard.worker_id = worker_id
        shard.lease_expires = now + lease_s
        return shard
    return None


def renew_lease(shard: ShardState, lease_id: str, now: float, lease_s: float) -> float:
    if shard.lease_id != lease_id or shard.done:
        raise LeaseLost(f"lease on shard {shard.shard_id} is no longer held")
    shard.lease_expires = now + lease_s
    return shard.lease_expires


def complete(
    shard: ShardState,
    lease_id: str,
    worker_id: str,
    weights: str,
    server_state: dict[str, str],
    stats: ShardStatistics | None = None,
    gram: tuple[float, ...] | None = None,
) -> bool:
    """Record the result if `lease_id` is the shard's current lease and it is not done yet."""
    if shard.done or shard.lease_id != lease_id:
        log.info(
            "shard %s: ignoring completion by %s (lease %s)",
            shard.shard_id,
            worker_id,
            "done" if shard.done else "re-leased",
        )
        return False
    shard.weights = weights
    shard.server_state = dict(server_state)
    shard.stats = stats
    shard.gram = gram
    return True
