from __future__ import annotations

import pytest

from fedsilo.scheduler.shards import LeaseLost, ShardState, complete, lease_next, renew_lease


def shards(count: int) -> list[ShardState]:
    return [ShardState(f"s{i}", i * 10, (i + 1) * 10) for i in range(count)]


def test_each_shard_is_leased_to_one_worker_at_a_time() -> None:
    queue = shards(2)
    first = lease_next(queue, "a", now=0.0, lease_s=5)
    second = lease_next(queue, "b", now=1.0, lease_s=5)
    assert first is not None and second is not None
    assert (first.shard_id, second.shard_id) == ("s0", "s1")
    assert lease_next(queue, "c", now=2.0, lease_s=5) is None


def test_an_expired_lease_goes_to_the_next_worker_and_the_old_completion_is_ignored() -> None:
    queue = shards(1)
    stalled = lease_next(queue, "a", now=0.0, lease_s=5)
    assert stalled is not None
    old_lease = stalled.lease_id

    taken = lease_next(queue, "b", now=6.0, lease_s=5)

    assert taken is stalled and taken.worker_id == "b" and taken.lease_id != old_lease
    assert not complete(taken, old_lease, "a", "late", {})
    assert complete(taken, taken.lease_id, "b", "digest-b", {"m": "x"})
    assert taken.done and taken.weights == "digest-b" and taken.server_state == {"m": "x"}
    assert not complete(taken, taken.lease_id, "b", "again", {}), "reduced exactly once"
    assert lease_next(queue, "c", now=20.0, lease_s=5) is None


def test_renewing_keeps_the_lease_only_for_its_holder() -> None:
    queue = shards(1)
    shard = lease_next(queue, "a", now=0.0, lease_s=5)
    assert shard is not None
    assert renew_lease(shard, shard.lease_id, now=4.0, lease_s=5) == 9.0
    assert lease_next(queue, "b", now=8.0, lease_s=5) is None
    with pytest.raises(LeaseLost):
        renew_lease(shard, "someone-else", now=8.0, lease_s=5)
