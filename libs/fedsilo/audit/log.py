"""Append-only audit log with a hash chain.

Each line is one JSON object; its `hash` is SHA-256 over the canonical JSON of the entry
without the hash, and that includes `prev`, the hash of the entry before. Editing, removing or
reordering any entry breaks the chain from there on. Cutting entries off the end cannot be seen
from the file alone, so `verify` reports the head hash: compare it with one recorded elsewhere
(the service logs it at every start) to detect truncation.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _digest(entry: dict[str, Any]) -> str:
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    service: str
    event: str
    actor: str
    details: dict[str, Any]
    prev: str
    hash: str


class AuditLog:
    """One service's audit log. Appends are serialized across threads and processes (flock),
    written with O_APPEND and fsync'd, so an entry that was acknowledged survives a crash."""

    def __init__(self, path: Path, service: str) -> None:
        self.path = path
        self.service = service
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)

    def _last(self, handle: Any) -> tuple[int, str]:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return 0, GENESIS
        # The last line is at most a few KiB: read backwards in growing windows.
        window = 4096
        while True:
            start = max(0, size - window)
            handle.seek(start)
            lines = handle.read().splitlines()
            if start == 0 or len(lines) > 1:
                last = json.loads(lines[-1])
                return int(last["seq"]), str(last["hash"])
            window *= 4

    def append(self, event: str, actor: str = "", **details: Any) -> AuditEntry:
        with self._lock, open(self.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                seq, prev = self._last(handle)
                entry: dict[str, Any] = {
                    "seq": seq + 1,
                    "at": time.time(),
                    "service": self.service,
                    "event": event,
                    "actor": actor,
                    "details": details,
                    "prev": prev,
                }
                entry["hash"] = _digest(entry)
                handle.write(json.dumps(entry, sort_keys=True).encode() + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return AuditEntry(**entry)

    def head(self) -> str:
        with open(self.path, "rb") as handle:
            return self._last(handle)[1]


@dataclass(frozen=True)
class AuditVerification:
    path: Path
    entries: int
    head: str
    ok: bool
    problem: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"{self.path}: {self.entries} entries, chain intact, head {self.head}"
        return f"{self.path}: TAMPERED after {self.entries} good entries: {self.problem}"


def verify_audit_log(path: Path, expected_head: str | None = None) -> AuditVerification:
    """Recompute every hash and link; name the first line that does not check out."""
    prev, count = GENESIS, 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                entry = json.loads(raw)
                claimed = entry.pop("hash")
            except (ValueError, KeyError, AttributeError):
                return AuditVerification(path, count, prev, False, f"line {number} is not an entry")
            if entry.get("prev") != prev:
                return AuditVerification(
                    path, count, prev, False, f"line {number} does not follow the entry before it"
                )
            if entry.get("seq") != count + 1:
                return AuditVerification(
                    path,
                    count,
                    prev,
                    False,
                    f"line {number} has sequence {entry.get('seq')}, expected {count + 1}",
                )
            if _digest(entry) != claimed:
                return AuditVerification(
                    path, count, prev, False, f"line {number} was modified (hash mismatch)"
                )
            prev, count = claimed, count + 1
    if expected_head is not None and expected_head != prev:
        return AuditVerification(
            path,
            count,
            prev,
            False,
            f"head is {prev[:16]}…, expected {expected_head[:16]}… (entries were cut off the end)",
        )
    return AuditVerification(path, count, prev, True)
