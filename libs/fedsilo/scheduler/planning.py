"""Pure planning decisions of a round: which clients, which coordinate ranges."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence


def select_clients(
    candidates: Sequence[str],
    count: int | None,
    times_selected: Mapping[str, int],
    seed: int,
) -> list[str]:
    """Pick `count` clients (all when None), least-often-selected first, ties broken by a seeded
    shuffle, so that over a job every client gets its turn and runs are reproducible."""
    if count is None or count >= len(candidates):
        return sorted(candidates)
    rng = random.Random(seed)
    tie_break = {client: rng.random() for client in sorted(candidates)}
    ranked = sorted(candidates, key=lambda c: (times_selected.get(c, 0), tie_break[c]))
    return sorted(ranked[:count])


def plan_shards(num_parameters: int, shard_parameters: int) -> list[tuple[int, int]]:
    """Split [0, P) into contiguous ranges of at most `shard_parameters` coordinates, balanced
    so that replicas get equal work."""
    if num_parameters <= 0:
        raise ValueError(f"a model needs parameters, got {num_parameters}")
    if shard_parameters <= 0:
        raise ValueError(f"shard size must be positive, got {shard_parameters}")
    count = -(-num_parameters // shard_parameters)
    base, extra = divmod(num_parameters, count)
    ranges, begin = [], 0
    for index in range(count):
        end = begin + base + (1 if index < extra else 0)
        ranges.append((begin, end))
        begin = end
    return ranges


def round_seed(job_seed: int, round_: int, attempt: int) -> int:
    return (job_seed * 1_000_003 + round_ * 1_009 + attempt) & 0x7FFFFFFF
