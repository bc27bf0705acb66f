"""Directory of per-round public keys for secure aggregation's pairwise key agreement."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from fedsilo.sqlite import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS round_keys (
    job_id       TEXT NOT NULL,
    round        INTEGER NOT NULL,
    client_id    TEXT NOT NULL,
    public_key   BLOB NOT NULL,
    algorithm    TEXT NOT NULL,
    published_at REAL NOT NULL,
    PRIMARY KEY (job_id, round, client_id)
);
"""


class KeyConflict(ValueError):
    """A client tried to replace the key it already advertised for a round."""


@dataclass(frozen=True)
class RoundKey:
    client_id: str
    public_key: bytes
    algorithm: str
    published_at: float


class KeyDirectory:
    def __init__(self, path: Path | str) -> None:
        self._db = Database(path, _SCHEMA)

    def publish(self, job_id: str, round_: int, key: RoundKey) -> int:
        """Store a key once; the same key again is a no-op, a different one is refused."""
        if not key.public_key:
            raise ValueError("public_key is empty")
        with self._db.transaction() as tx:
            row = tx.execute(
                "SELECT public_key FROM round_keys"
                " WHERE job_id = ? AND round = ? AND client_id = ?",
                (job_id, round_, key.client_id),
            ).fetchone()
            if row is not None and bytes(row["public_key"]) != key.public_key:
                raise KeyConflict(
                    f"client {key.client_id!r} already advertised a different key for "
                    f"job {job_id} round {round_}"
                )
            if row is None:
                tx.execute(
                    "INSERT INTO round_keys VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        round_,
                        key.client_id,
                        key.public_key,
                        key.algorithm,
                        key.published_at or time.time(),
                    ),
                )
            count = tx.execute(
                "SELECT COUNT(*) FROM round_keys WHERE job_id = ? AND round = ?", (job_id, round_)
            ).fetchone()[0]
        return int(count)

    def list(self, job_id: str, round_: int) -> list[RoundKey]:
        rows = self._db.query(
            "SELECT * FROM round_keys WHERE job_id = ? AND round = ? ORDER BY client_id",
            (job_id, round_),
        )
        return [
            RoundKey(
                row["client_id"],
                bytes(row["public_key"]),
                row["algorithm"],
                float(row["published_at"]),
            )
            for row in rows
        ]

    def close(self) -> None:
        self._db.close()
