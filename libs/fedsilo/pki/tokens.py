"""One-time enrollment tokens: issued per site by the operator, stored only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from fedsilo.sqlite import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS enrollment_tokens (
    token_hash  TEXT PRIMARY KEY,
    site        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    used_at     REAL
);
"""


class TokenError(PermissionError):
    """An enrollment token that is unknown, used, expired or issued for another site."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class EnrollmentTokens:
    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time) -> None:
        self._db = Database(path, _SCHEMA)
        self._clock = clock

    def create(self, site: str, ttl_s: float) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO enrollment_tokens VALUES (?, ?, ?, ?, NULL)",
                (_hash(token), site, now, now + ttl_s),
            )
        return token

    def redeem(self, token: str, site: str) -> None:
        """Mark the token used, atomically; any second use is refused."""
        digest = _hash(token)
        with self._db.transaction() as tx:
            row = tx.execute(
                "SELECT * FROM enrollment_tokens WHERE token_hash = ?", (digest,)
            ).fetchone()
            if row is None:
                raise TokenError("unknown enrollment token")
            if not hmac.compare_digest(row["site"], site):
                raise TokenError(f"the enrollment token was issued for another site, not {site!r}")
            if row["used_at"] is not None:
                raise TokenError(
                    "the enrollment token was already used; ask the operator for a new one"
                )
            if self._clock() > row["expires_at"]:
                raise TokenError("the enrollment token has expired")
            tx.execute(
                "UPDATE enrollment_tokens SET used_at = ? WHERE token_hash = ?",
                (self._clock(), digest),
            )

    def close(self) -> None:
        self._db.close()
