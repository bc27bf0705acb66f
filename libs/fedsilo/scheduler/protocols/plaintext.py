"""protection: none — sites upload float32 deltas; the aggregators combine them as they are."""

from __future__ import annotations

from fedsilo.scheduler.protocols.base import RoundProtocol


class PlaintextProtocol(RoundProtocol):
    """Every hook's default: train, upload, aggregate (see RoundProtocol)."""

    name = "none"
