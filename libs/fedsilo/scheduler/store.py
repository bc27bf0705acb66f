"""Durable scheduler state: jobs, rounds, accepted updates, evaluations and an event log.

Everything a restarted scheduler needs to resume from the last completed round is here; the
live bookkeeping of tasks and leases is rebuilt from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from fedsilo.sqlite import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id        TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    spec_json     TEXT NOT NULL,
    state         TEXT NOT NULL,
    round         INTEGER NOT NULL DEFAULT 0,
    phase         TEXT NOT NULL DEFAULT '',
    attempt       INTEGER NOT NULL DEFAULT 0,
    model_version TEXT NOT NULL DEFAULT '',
    manifest_json TEXT NOT NULL DEFAULT '',
    server_state  TEXT NOT NULL DEFAULT '{}',
    privacy       TEXT NOT NULL DEFAULT '{}',
    error         TEXT NOT NULL DEFAULT '',
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    job_id        TEXT NOT NULL REFERENCES jobs(job_id),
    round         INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    base_version  TEXT NOT NULL,
    new_version   TEXT NOT NULL DEFAULT '',
    selected      TEXT NOT NULL DEFAULT '{}',
    participants  TEXT NOT NULL DEFAULT '[]',
    dropped       TEXT NOT NULL DEFAULT '[]',
    phases        TEXT NOT NULL DEFAULT '{}',
    epsilon       REAL,
    started_at    REAL NOT NULL,
    ended_at      REAL,
    PRIMARY KEY (job_id, round)
);
CREATE TABLE IF NOT EXISTS updates (
    job_id        TEXT NOT NULL,
    round         INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    client_id     TEXT NOT NULL,
    site          TEXT NOT NULL,
    digest        TEXT NOT NULL,
    num_examples  INTEGER NOT NULL,
    metrics       TEXT NOT NULL,
    received_at   REAL NOT NULL,
    PRIMARY KEY (job_id, round, attempt, client_id)
);
CREATE TABLE IF NOT EXISTS evaluations (
    job_id        TEXT NOT NULL,
    round         INTEGER NOT NULL,
    client_id     TEXT NOT NULL,
    site          TEXT NOT NULL,
    model_version TEXT NOT NULL,
    num_examples  INTEGER NOT NULL,
    metrics       TEXT NOT NULL,
    PRIMARY KEY (job_id, round, site)
);
CREATE TABLE IF NOT EXISTS events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            REAL NOT NULL,
    job_id        TEXT NOT NULL,
    round         INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    detail        TEXT NOT NULL
);
"""


class JobState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Phase(StrEnum):
    INITIALIZING = "initializing"
    SELECTING = "selecting"
    ADVERTISING = "advertising"  # secure aggregation: round keys to the keymanager
    SHARING = "sharing"  # secure aggregation: sealed Shamir shares
    TRAINING = "training"
    UNMASKING = "unmasking"  # secure aggregation: survivors reveal shares
    AGGREGATING = "aggregating"
    EVALUATING = "evaluating"
    DONE = "done"


@dataclass(frozen=True)
class AcceptedUpdate:
    client_id: str
    site: str
    digest: str
    num_examples: int
    metrics: dict[str, float]


class SchedulerStore:
    def __init__(self, path: Path | str) -> None:
        self._db = Database(path, _SCHEMA)
        # Databases written before the privacy accountant lack these columns.
        self._add_missing_column("jobs", "privacy", "TEXT NOT NULL DEFAULT '{}'")
        self._add_missing_column("rounds", "epsilon", "REAL")
        self._add_missing_column("jobs", "public_key", "TEXT NOT NULL DEFAULT ''")
        self._add_missing_column("rounds", "total_examples", "REAL NOT NULL DEFAULT 0")
        self._add_missing_column("rounds", "anomaly", "TEXT NOT NULL DEFAULT '{}'")
        self._add_missing_column("jobs", "excluded", "TEXT NOT NULL DEFAULT '{}'")
        self._add_missing_column("jobs", "contributions", "TEXT NOT NULL DEFAULT '{}'")

    def _add_missing_column(self, table: str, column: str, ddl: str) -> None:
        columns = {row["name"] for row in self._db.query(f"PRAGMA table_info({table})")}
        if column not in columns:
            with self._db.transaction() as tx:
                tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")

    # jobs
    def create_job(self, job_id: str, name: str, spec_json: str) -> None:
        now = time.time()
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO jobs (job_id, name, spec_json, state, phase, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, name, spec_json, JobState.RUNNING, Phase.INITIALIZING, now, now),
            )

    def update_job(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self._db.transaction() as tx:
            tx.execute(f"UPDATE jobs SET {columns} WHERE job_id = ?", (*fields.values(), job_id))

    def job(self, job_id: str) -> dict[str, Any] | None:
        rows = self._db.query("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return dict(rows[0]) if rows else None

    def jobs(self, state: JobState | None = None) -> list[dict[str, Any]]:
        if state is None:
            rows = self._db.query("SELECT * FROM jobs ORDER BY created_at")
        else:
            rows = self._db.query(
                "SELECT * FROM jobs WHERE state = ? ORDER BY created_at", (state,)
            )
        return [dict(row) for row in rows]

    # rounds
    def open_round(self, job_id: str, round_: int, attempt: int, base_version: str) -> None:
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO rounds (job_id, round, attempt, base_version, started_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (job_id, round_, attempt, base_version, time.time()),
            )

    def update_round(self, job_id: str, round_: int, **fields: Any) -> None:
        encoded = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in fields.items()}
        columns = ", ".join(f"{name} = ?" for name in encoded)
        with self._db.transaction() as tx:
            tx.execute(
                f"UPDATE rounds SET {columns} WHERE job_id = ? AND round = ?",
                (*encoded.values(), job_id, round_),
            )

    def rounds(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._db.query("SELECT * FROM rounds WHERE job_id = ? ORDER BY round", (job_id,))
        return [_decode_round(row) for row in rows]

    def round(self, job_id: str, round_: int) -> dict[str, Any] | None:
        rows = self._db.query(
            "SELECT * FROM rounds WHERE job_id = ? AND round = ?", (job_id, round_)
        )
        return _decode_round(rows[0]) if rows else None

    # updates
    def add_update(self, job_id: str, round_: int, attempt: int, update: AcceptedUpdate) -> None:
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO updates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    round_,
                    attempt,
                    update.client_id,
                    update.site,
                    update.digest,
                    update.num_examples,
                    json.dumps(update.metrics),
                    time.time(),
                ),
            )

    def holds_blob(self, job_id: str, digest: str) -> bool:
        """Whether `digest` is an update accepted in one of the job's completed rounds, or
        one of those rounds' starting or resulting models."""
        rows = self._db.query(
            "SELECT 1 FROM updates JOIN rounds USING (job_id, round, attempt)"
            " WHERE job_id = ? AND new_version != '' AND (digest = ? OR ? IN"
            " (base_version, new_version)) LIMIT 1",
            (job_id, digest, digest),
        )
        return bool(rows)

    def updates(self, job_id: str, round_: int, attempt: int) -> list[AcceptedUpdate]:
        rows = self._db.query(
            "SELECT * FROM updates WHERE job_id = ? AND round = ? AND attempt = ?"
            " ORDER BY client_id",
            (job_id, round_, attempt),
        )
        return [
            AcceptedUpdate(
                row["client_id"],
                row["site"],
                row["digest"],
                row["num_examples"],
                json.loads(row["metrics"]),
            )
            for row in rows
        ]

    # evaluations
    def add_evaluation(
        self,
        job_id: str,
        round_: int,
        client_id: str,
        site: str,
        model_version: str,
        num_examples: int,
        metrics: Mapping[str, float],
        undefined: Mapping[str, str] | None = None,
        primary_metric: str = "",
    ) -> None:
        """`undefined`: metrics the site could not compute on its data, with why (kept
        beside the values, under "undefined"); `primary_metric`: the job's primary metric as
        the site resolved it (under "primary_metric")."""
        stored: dict[str, object] = dict(metrics)
        if undefined:
            stored["undefined"] = dict(undefined)
        if primary_metric:
            stored["primary_metric"] = primary_metric
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    round_,
                    client_id,
                    site,
                    model_version,
                    num_examples,
                    json.dumps(stored),
                ),
            )

    def evaluations(
        self, job_id: str, round_: int | None = None
    ) -> dict[int, dict[str, dict[str, float]]]:
        """round -> site -> metrics (with num_examples); of one round when `round_` is given."""
        if round_ is None:
            rows = self._db.query(
                "SELECT * FROM evaluations WHERE job_id = ? ORDER BY round, site", (job_id,)
            )
        else:
            rows = self._db.query(
                "SELECT * FROM evaluations WHERE job_id = ? AND round = ? ORDER BY site",
                (job_id, round_),
            )
        result: dict[int, dict[str, dict[str, float]]] = {}
        for row in rows:
            metrics = json.loads(row["metrics"])
            metrics["num_examples"] = row["num_examples"]
            result.setdefault(row["round"], {})[row["site"]] = metrics
        return result

    # events
    def add_event(self, job_id: str, round_: int, kind: str, client_id: str, detail: str) -> None:
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO events (at, job_id, round, kind, client_id, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), job_id, round_, kind, client_id, detail),
            )

    def events(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._db.query("SELECT * FROM events WHERE job_id = ? ORDER BY id", (job_id,))
        return [dict(row) for row in rows]

    def close(self) -> None:
        self._db.close()


def _decode_round(row: Any) -> dict[str, Any]:
    item = dict(row)
    for key in ("selected", "participants", "dropped", "phases", "anomaly"):
        item[key] = json.loads(item[key])
    return item
