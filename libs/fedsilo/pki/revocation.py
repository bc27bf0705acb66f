"""Revoked certificate serials, checked on every authenticated call."""

from __future__ import annotations

import time
from pathlib import Path

from fedsilo.sqlite import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS revoked (
    serial      TEXT PRIMARY KEY,
    identity    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    revoked_at  REAL NOT NULL
);
"""


class RevocationList:
    def __init__(self, path: Path | str) -> None:
        self._db = Database(path, _SCHEMA)

    def revoke(self, serial: int, identity: str, reason: str) -> None:
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO revoked VALUES (?, ?, ?, ?)",
                (str(serial), identity, reason, time.time()),
            )

    def is_revoked(self, serial: int) -> bool:
        return bool(self._db.query("SELECT 1 FROM revoked WHERE serial = ?", (str(serial),)))

    def serials(self) -> set[int]:
        return {int(row["serial"]) for row in self._db.query("SELECT serial FROM revoked")}

    def close(self) -> None:
        self._db.close()
