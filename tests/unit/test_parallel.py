from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from fedsilo.parallel import (
    MIN_PART_COORDINATES,
    available_cpus,
    cgroup_cpu_limit,
    resolve_threads,
    run_in_parts,
)


def _parts(length: int, threads: int | None) -> list[tuple[int, int]]:
    parts: list[tuple[int, int]] = []
    lock = threading.Lock()

    def record(start: int, stop: int) -> None:
        with lock:
            parts.append((start, stop))

    run_in_parts(length, threads, record)
    return sorted(parts)


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_parts_cover_the_range_once_and_start_on_16_coordinates(threads: int) -> None:
    length = 5 * MIN_PART_COORDINATES + 123

    parts = _parts(length, threads)

    assert len(parts) == min(threads, 5)  # parts of at least MIN_PART_COORDINATES
    assert parts[0][0] == 0 and parts[-1][1] == length
    assert all(stop == start for (_, stop), (start, _) in itertools.pairwise(parts))
    assert all(start % 16 == 0 for start, _ in parts)


def test_a_short_range_is_not_split() -> None:
    assert _parts(MIN_PART_COORDINATES + 5, 8) == [(0, MIN_PART_COORDINATES + 5)]
    assert _parts(0, None) == [(0, 0)]


def test_none_means_one_part_per_core() -> None:
    length = 64 * MIN_PART_COORDINATES
    assert len(_parts(length, None)) == min(available_cpus(), 64)


def test_an_error_in_a_part_is_raised() -> None:
    def fail(start: int, stop: int) -> None:
        if start:
            raise RuntimeError(f"part at {start} failed")

    with pytest.raises(RuntimeError, match="failed"):
        run_in_parts(4 * MIN_PART_COORDINATES, 4, fail)


def test_fewer_than_one_thread_is_refused() -> None:
    with pytest.raises(ValueError, match="threads must be at least 1"):
        run_in_parts(10, 0, lambda start, stop: None)


def test_a_cgroup_cpu_quota_caps_the_cpus(tmp_path: Path) -> None:
    v2, quota, period = tmp_path / "cpu.max", tmp_path / "quota", tmp_path / "period"
    v2.write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2, quota, period) == 1.5
    v2.write_text("max 100000\n")
    assert cgroup_cpu_limit(v2, quota, period) is None
    v2.unlink()  # cgroup v1
    quota.write_text("50000\n")
    period.write_text("100000\n")
    assert cgroup_cpu_limit(v2, quota, period) == 0.5
    quota.write_text("-1\n")
    assert cgroup_cpu_limit(v2, quota, period) is None
    period.unlink()
    assert cgroup_cpu_limit(v2, quota, period) is None


def test_threads_zero_means_every_available_cpu() -> None:
    assert resolve_threads(0) == available_cpus() >= 1
    assert resolve_threads(3) == 3
    with pytest.raises(ValueError, match="threads must be 0"):
        resolve_threads(-1)
