"""How many CPUs this process may really use, and work split across them by range.

The CPUs: the affinity mask, capped by a cgroup CPU quota. In a Kubernetes pod with
`limits.cpu: 1` the affinity mask still lists every core of the node; only the cgroup's quota
tells that one core's worth of time is all there is. Threads beyond it are throttled, not
faster.

The work: mask expansion (`cryptography`'s update_into), numpy's ufuncs and file or socket
reads release the GIL, so contiguous parts of a coordinate range are masked, unmasked,
quantized or folded by separate threads, with results bit-identical to a single pass.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Below this many coordinates per part a thread costs more than it saves.
MIN_PART_COORDINATES = 1 << 18
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cgroup_cpu_limit(
    cpu_max: Path = CGROUP_V2_CPU_MAX,
    v1_quota: Path = CGROUP_V1_QUOTA,
    v1_period: Path = CGROUP_V1_PERIOD,
) -> float | None:
    """The CPU quota in cores (quota / period), or None when there is none or it is unreadable."""
    try:
        quota, _, period = cpu_max.read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or 100_000)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(v1_quota.read_text())
        period_us = int(v1_period.read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus() -> int:
    """Cores this process can keep busy: at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def resolve_threads(requested: int) -> int:
    """A `threads` setting: 0 means every available CPU."""
    if requested < 0:
        raise ValueError(f"threads must be 0 (every available CPU) or positive, got {requested}")
    return requested or available_cpus()


def run_in_parts(length: int, threads: int | None, work: Callable[[int, int], None]) -> None:
    """Call work(start, stop) over contiguous parts of range(length), one thread per part.

    threads: at most this many parts; None for one per available CPU. Parts start at
    multiples of 16 coordinates, so that none starts inside a 64-byte keystream line.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1 (or None for every CPU), got {threads}")
    wanted = available_cpus() if threads is None else threads
    parts = max(1, min(wanted, length // MIN_PART_COORDINATES))
    if parts == 1:
        work(0, length)
        return
    bounds = [length * i // parts // 16 * 16 for i in range(parts)] + [length]
    with ThreadPoolExecutor(max_workers=parts, thread_name_prefix="parts") as pool:
        # list() re-raises the first exception of any part.
        list(pool.map(work, bounds[:-1], bounds[1:]))
