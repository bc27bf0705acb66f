"""Round protocols by the name a job gives in `protection` (see protocols.base for the
interface). Adding one: a module with a RoundProtocol subclass, and its line below."""

from __future__ import annotations

from fedsilo.scheduler.protocols.base import RoundProtocol
from fedsilo.scheduler.protocols.paillier import PaillierProtocol
from fedsilo.scheduler.protocols.plaintext import PlaintextProtocol
from fedsilo.scheduler.protocols.secagg import SecAggProtocol

PROTOCOLS: dict[str, type[RoundProtocol]] = {
    protocol.name: protocol
    for protocol in (
        PlaintextProtocol,
        SecAggProtocol,
        PaillierProtocol,
    )
}
