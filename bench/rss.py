"""Resident memory of local processes, read from /proc (Linux): VmRSS, what `ps` calls RSS,
and PSS, which divides each shared page among the processes that map it.

Summed over several processes, RSS counts the pages of shared libraries (grpc, numpy, the
interpreter) once per process; PSS sums to the memory the group really occupies. A
`RssSampler` polls named groups of processes on a thread while a job runs, and keeps each
group's peak and its last reading of both; a group's figure is the sum over its processes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    """VmRSS of one process; 0 once it has exited (or for a zombie, which holds no memory)."""
    return _proc_kib(pid, "status", "VmRSS:") * 1024


def pss_bytes(pid: int) -> int:
    """Pss of one process (from smaps_rollup); 0 once it has exited."""
    return _proc_kib(pid, "smaps_rollup", "Pss:") * 1024


def _proc_kib(pid: int, name: str, field: str) -> int:
    """A `field: <n> kB` line of /proc/<pid>/<name>; 0 when the process or the line is gone."""
    try:
        text = Path(f"/proc/{pid}/{name}").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"/proc/{pid}/{name} reports {field} in {unit}, expected kB")
            return int(value)
    return 0


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren, ...), from /proc/*/stat."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name in parentheses may contain spaces: the fields after it split.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found += children
        frontier += children
    return found


def total_rss(pids: Iterable[int]) -> int:
    return sum(rss_bytes(pid) for pid in pids)


def total_pss(pids: Iterable[int]) -> int:
    return sum(pss_bytes(pid) for pid in pids)


Groups = Callable[[], Mapping[str, Iterable[int]]]


class RssSampler:
    """Samples `groups()` (name -> pids, asked afresh each time, so processes that come and go
    count while they live) every `interval_s` until stopped, then once more."""

    def __init__(self, groups: Groups, interval_s: float = 0.5) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._groups = groups
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.pss_peak: dict[str, int] = {}
        self.pss_last: dict[str, int] = {}

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        groups = {name: list(pids) for name, pids in self._groups().items()}
        self.last = {name: total_rss(pids) for name, pids in groups.items()}
        self.pss_last = {name: total_pss(pids) for name, pids in groups.items()}
        for name in groups:
            self.peak[name] = max(self.peak.get(name, 0), self.last[name])
            self.pss_peak[name] = max(self.pss_peak.get(name, 0), self.pss_last[name])

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval_s)

    def megabytes(self) -> dict[str, dict[str, float]]:
        """{group: {"end": RSS MiB at the last sample, "peak": highest RSS MiB seen,
        "pss_end" and "pss_peak": the same for PSS}}."""
        return {
            name: {
                "end": self.last.get(name, 0) / MIB,
                "peak": self.peak[name] / MIB,
                "pss_end": self.pss_last.get(name, 0) / MIB,
                "pss_peak": self.pss_peak[name] / MIB,
            }
            for name in self.peak
        }
