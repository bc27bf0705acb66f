"""Medians of repeated runs: what every benchmark reports."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float


def timed(action: Callable[[], object], runs: int) -> Timing:
    """Medians over `runs` of the wall clock and of this process's CPU time."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return Timing(statistics.median(walls), statistics.median(cpus))


def median_seconds(action: Callable[[], object], runs: int) -> float:
    """Median wall-clock seconds of `runs` runs."""
    return timed(action, runs).wall_s
