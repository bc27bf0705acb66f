"""Sites and their client agents, persisted in SQLite. One active agent per site: an agent
that enrolls again (a restart) supersedes the site's earlier one."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedsilo.sqlite import Database
from fedsilo.v1 import registry_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id    TEXT PRIMARY KEY,
    site         TEXT NOT NULL,
    capabilities BLOB NOT NULL,
    enrolled_at  REAL NOT NULL,
    last_seen    REAL NOT NULL,
    superseded   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS clients_site ON clients (site);
"""


class UnknownClient(KeyError):
    def __init__(self, client_id: str) -> None:
        super().__init__(client_id)
        self.client_id = client_id

    def __str__(self) -> str:
        return f"client {self.client_id!r} is not enrolled (or was superseded); enroll again"


@dataclass(frozen=True)
class ClientRecord:
    client_id: str
    site: str
    capabilities: registry_pb2.Capabilities
    enrolled_at: float
    last_seen: float
    alive: bool

    def to_proto(self) -> registry_pb2.Client:
        return registry_pb2.Client(
            client_id=self.client_id,
            site=self.site,
            capabilities=self.capabilities,
            enrolled_at=self.enrolled_at,
            last_seen=self.last_seen,
            alive=self.alive,
        )


class RegistryStore:
    def __init__(
        self,
        path: Path | str,
        *,
        liveness_timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = Database(path, _SCHEMA)
        self._timeout = liveness_timeout_s
        self._clock = clock

    @staticmethod
    def new_client_id(site: str) -> str:
        return f"{site}-{secrets.token_hex(4)}"

    def enroll(
        self, site: str, capabilities: registry_pb2.Capabilities, client_id: str | None = None
    ) -> str:
        """Make `client_id` (a new one when None) the site's active agent; an agent that comes
        back with its certificate keeps its id."""
        client_id = client_id or self.new_client_id(site)
        now = self._clock()
        with self._db.transaction() as tx:
            tx.execute("UPDATE clients SET superseded = 1 WHERE site = ?", (site,))
            tx.execute(
                "INSERT INTO clients (client_id, site, capabilities, enrolled_at, last_seen)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET"
                " superseded = 0, capabilities = excluded.capabilities,"
                " last_seen = excluded.last_seen",
                (client_id, site, capabilities.SerializeToString(), now, now),
            )
        return client_id

    def site_of(self, client_id: str) -> str | None:
        rows = self._db.query("SELECT site FROM clients WHERE client_id = ?", (client_id,))
        return str(rows[0]["site"]) if rows else None

    def heartbeat(self, client_id: str, capabilities: registry_pb2.Capabilities | None) -> None:
        now = self._clock()
        with self._db.transaction() as tx:
            if capabilities is None:
                cursor = tx.execute(
                    "UPDATE clients SET last_seen = ? WHERE client_id = ? AND superseded = 0",
                    (now, client_id),
                )
            else:
                cursor = tx.execute(
                    "UPDATE clients SET last_seen = ?, capabilities = ?"
                    " WHERE client_id = ? AND superseded = 0",
                    (now, capabilities.SerializeToString(), client_id),
                )
            if cursor.rowcount == 0:
                raise UnknownClient(client_id)

    def get(self, client_id: str) -> ClientRecord:
        rows = self._db.query(
            "SELECT * FROM clients WHERE client_id = ? AND superseded = 0", (client_id,)
        )
        if not rows:
            raise UnknownClient(client_id)
        return self._record(rows[0], self._clock())

    def list(self, *, alive_only: bool = False, dataset: str = "") -> list[ClientRecord]:
        now = self._clock()
        rows = self._db.query("SELECT * FROM clients WHERE superseded = 0 ORDER BY client_id")
        records = [self._record(row, now) for row in rows]
        return [
            record
            for record in records
            if (record.alive or not alive_only)
            and (not dataset or any(d.name == dataset for d in record.capabilities.datasets))
        ]

    def counts(self) -> tuple[int, int]:
        records = self.list()
        return len(records), sum(record.alive for record in records)

    def _record(self, row: object, now: float) -> ClientRecord:
        capabilities = registry_pb2.Capabilities.FromString(row["capabilities"])  # type: ignore[index]
        last_seen = float(row["last_seen"])  # type: ignore[index]
        return ClientRecord(
            client_id=row["client_id"],  # type: ignore[index]
            site=row["site"],  # type: ignore[index]
            capabilities=capabilities,
            enrolled_at=float(row["enrolled_at"]),  # type: ignore[index]
            last_seen=last_seen,
            alive=now - last_seen <= self._timeout,
        )

    def close(self) -> None:
        self._db.close()
