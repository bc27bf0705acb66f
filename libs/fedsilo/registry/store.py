"""Sites and their client agents, persisted in SQLite. One active agent per site: an agent
that enrolls again (a restart) supersedes the site's earlier one.

The active agents are also held in memory, and liveness lives there: a heartbeat is a
dictionary update, not a write transaction (a thousand agents beating every two seconds would
be five hundred synced commits a second). Last-seen times are soft state: `persist_liveness`
writes those that changed in one transaction, periodically and at close; after a restart an
agent counts as alive from its last persisted beat until the next one arrives.
"""

from __future__ import annotations

import secrets
import threading
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


@dataclass
class _Agent:
    """An active (not superseded) agent as the store holds it in memory."""

    site: str
    capabilities: registry_pb2.Capabilities
    enrolled_at: float
    last_seen: float


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
        self._lock = threading.Lock()
        self._agents: dict[str, _Agent] = {}
        self._unsaved: set[str] = set()  # agents whose last beat is not in SQLite yet
        for row in self._db.query("SELECT * FROM clients WHERE superseded = 0"):
            self._agents[row["client_id"]] = _Agent(
                row["site"],
                registry_pb2.Capabilities.FromString(row["capabilities"]),
                float(row["enrolled_at"]),
                float(row["last_seen"]),
            )

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
        with self._lock, self._db.transaction() as tx:
            tx.execute("UPDATE clients SET superseded = 1 WHERE site = ?", (site,))
            tx.execute(
                "INSERT INTO clients (client_id, site, capabilities, enrolled_at, last_seen)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET"
                " superseded = 0, capabilities = excluded.capabilities,"
                " last_seen = excluded.last_seen",
                (client_id, site, capabilities.SerializeToString(), now, now),
            )
            enrolled_at = tx.execute(
                "SELECT enrolled_at FROM clients WHERE client_id = ?", (client_id,)
            ).fetchone()["enrolled_at"]
            for other in [c for c, agent in self._agents.items() if agent.site == site]:
                del self._agents[other]
                self._unsaved.discard(other)
            stored = registry_pb2.Capabilities()
            stored.CopyFrom(capabilities)
            self._agents[client_id] = _Agent(site, stored, float(enrolled_at), now)
        return client_id

    def site_of(self, client_id: str) -> str | None:
        rows = self._db.query("SELECT site FROM clients WHERE client_id = ?", (client_id,))
        return str(rows[0]["site"]) if rows else None

    def heartbeat(self, client_id: str, capabilities: registry_pb2.Capabilities | None) -> None:
        """Mark the agent alive now (in memory); new capabilities are written at once."""
        now = self._clock()
        with self._lock:
            agent = self._agents.get(client_id)
            if agent is None:
                raise UnknownClient(client_id)
            agent.last_seen = now
            if capabilities is None:
                self._unsaved.add(client_id)
                return
            with self._db.transaction() as tx:
                tx.execute(
                    "UPDATE clients SET last_seen = ?, capabilities = ? WHERE client_id = ?",
                    (now, capabilities.SerializeToString(), client_id),
                )
            agent.capabilities = registry_pb2.Capabilities()
            agent.capabilities.CopyFrom(capabilities)
            self._unsaved.discard(client_id)

    def persist_liveness(self) -> int:
        """Write the last-seen times that changed since the last call; returns how many."""
        with self._lock:
            rows = [(self._agents[c].last_seen, c) for c in self._unsaved if c in self._agents]
            if rows:
                with self._db.transaction() as tx:
                    tx.executemany("UPDATE clients SET last_seen = ? WHERE client_id = ?", rows)
            self._unsaved.clear()
        return len(rows)

    def get(self, client_id: str) -> ClientRecord:
        now = self._clock()
        with self._lock:
            agent = self._agents.get(client_id)
            if agent is None:
                raise UnknownClient(client_id)
            return self._record(client_id, agent, now)

    def list(self, *, alive_only: bool = False, dataset: str = "") -> list[ClientRecord]:
        now = self._clock()
        with self._lock:
            records = [self._record(c, agent, now) for c, agent in sorted(self._agents.items())]
        return [
            record
            for record in records
            if (record.alive or not alive_only)
            and (not dataset or any(d.name == dataset for d in record.capabilities.datasets))
        ]

    def counts(self) -> tuple[int, int]:
        """Enrolled and alive agents."""
        now = self._clock()
        with self._lock:
            alive = sum(now - agent.last_seen <= self._timeout for agent in self._agents.values())
            return len(self._agents), alive

    def _record(self, client_id: str, agent: _Agent, now: float) -> ClientRecord:
        capabilities = registry_pb2.Capabilities()
        capabilities.CopyFrom(agent.capabilities)  # callers may not change the store's copy
        return ClientRecord(
            client_id=client_id,
            site=agent.site,
            capabilities=capabilities,
            enrolled_at=agent.enrolled_at,
            last_seen=agent.last_seen,
            alive=now - agent.last_seen <= self._timeout,
        )

    def close(self) -> None:
        self.persist_liveness()
        self._db.close()
