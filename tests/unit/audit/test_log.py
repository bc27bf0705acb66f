from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from fedsilo.audit import AuditLog, verify_audit_log


def _fill(path: Path, count: int) -> AuditLog:
    log = AuditLog(path, "scheduler")
    for index in range(count):
        log.append("rejected", actor=f"client-{index}", reason="stale round", round=index)
    return log


def test_a_fresh_chain_verifies_and_reports_its_head(tmp_path: Path) -> None:
    log = _fill(tmp_path / "audit.jsonl", 5)
    result = verify_audit_log(log.path)
    assert result.ok and result.entries == 5 and result.head == log.head()
    assert verify_audit_log(log.path, expected_head=log.head()).ok


def _rewrite(path: Path, line: int, change: dict[str, object]) -> None:
    lines = path.read_text().splitlines()
    entry = json.loads(lines[line])
    entry.update(change)
    lines[line] = json.dumps(entry, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")


def test_an_edited_entry_is_detected_and_named(tmp_path: Path) -> None:
    log = _fill(tmp_path / "audit.jsonl", 5)
    _rewrite(log.path, 2, {"actor": "somebody-else"})
    result = verify_audit_log(log.path)
    assert not result.ok and result.entries == 2 and "line 3 was modified" in result.problem


def test_a_removed_or_reordered_entry_breaks_the_chain(tmp_path: Path) -> None:
    log = _fill(tmp_path / "audit.jsonl", 5)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    assert "line 2 does not follow" in verify_audit_log(log.path).problem
    log.path.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    assert not verify_audit_log(log.path).ok


def test_a_forged_hash_does_not_help(tmp_path: Path) -> None:
    log = _fill(tmp_path / "audit.jsonl", 3)
    lines = log.path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["details"]["reason"] = "all fine"
    del entry["hash"]
    from fedsilo.audit.log import _digest

    entry["hash"] = _digest(entry)  # recomputed, but the next entry still points at the old one
    lines[1] = json.dumps(entry, sort_keys=True)
    log.path.write_text("\n".join(lines) + "\n")
    assert "line 3 does not follow" in verify_audit_log(log.path).problem


def test_truncation_is_caught_against_a_recorded_head(tmp_path: Path) -> None:
    log = _fill(tmp_path / "audit.jsonl", 4)
    head = log.head()
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join(lines[:3]) + "\n")
    assert verify_audit_log(log.path).ok  # the file alone cannot tell
    assert "cut off the end" in verify_audit_log(log.path, expected_head=head).problem


def _append_many(path: str) -> None:
    log = AuditLog(Path(path), "registry")
    for _ in range(50):
        log.append("heartbeat")


def test_appends_from_several_processes_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path, "registry")
    workers = [multiprocessing.Process(target=_append_many, args=(str(path),)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    result = verify_audit_log(path)
    assert result.ok and result.entries == 150
