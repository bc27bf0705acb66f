"""Client certificates: issued against one-time enrollment tokens, recorded by client so that
an operator can revoke a client, and refused everywhere once revoked."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from fedsilo.pki import (
    CertificateAuthority,
    EnrollmentTokens,
    Identity,
    RevocationList,
    certificate_identity,
)
from fedsilo.sqlite import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS issued (
    serial     TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    site       TEXT NOT NULL,
    not_after  REAL NOT NULL,
    issued_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS issued_client ON issued (client_id);
"""


class ClientCertificates:
    def __init__(self, ca: CertificateAuthority, state_dir: Path, validity: dt.timedelta) -> None:
        self.ca = ca
        self.tokens = EnrollmentTokens(state_dir / "tokens.db")
        self.revocations = RevocationList(state_dir / "revoked.db")
        self._issued = Database(state_dir / "issued.db", _SCHEMA)
        self._validity = validity

    def create_token(self, site: str, ttl_s: float) -> str:
        return self.tokens.create(site, ttl_s)

    def issue(self, site: str, token: str, csr_pem: bytes, client_id: str) -> bytes:
        """Redeem the token (raises TokenError), then sign the CSR for client/<client_id>."""
        if not client_id.startswith(f"{site}-"):
            raise ValueError(f"client id {client_id!r} does not belong to site {site!r}")
        self.tokens.redeem(token, site)
        pem = self.ca.issue(csr_pem, Identity("client", client_id), validity=self._validity)
        facts = certificate_identity(pem)
        with self._issued.transaction() as tx:
            tx.execute(
                "INSERT INTO issued VALUES (?, ?, ?, ?, ?)",
                (str(facts.serial), client_id, site, facts.not_after.timestamp(), time.time()),
            )
        return pem

    def revoke(self, client_id: str, reason: str) -> int:
        rows = self._issued.query("SELECT serial FROM issued WHERE client_id = ?", (client_id,))
        for row in rows:
            self.revocations.revoke(int(row["serial"]), f"client/{client_id}", reason)
        return len(rows)

    def revoked_serials(self) -> set[int]:
        return self.revocations.serials()

    def close(self) -> None:
        self.tokens.close()
        self.revocations.close()
        self._issued.close()
