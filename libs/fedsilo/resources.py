"""How many CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota.

In a Kubernetes pod with `limits.cpu: 1` the affinity mask still lists every core of the
node; only the cgroup's quota tells that one core's worth of time is all there is. Threads
beyond the quota are throttled, not faster.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

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
