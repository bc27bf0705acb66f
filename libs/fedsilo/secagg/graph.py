"""SecAgg+ neighbour graph (Bell et al. 2020): masks and shares only between neighbours.

The graph is a Harary graph H(k, n), i.e. a ring in which each client links to the k/2
clients on either side, laid over a permutation of the clients drawn from a seed that all
parties know, so everyone derives the same graph and no client picks its neighbours.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence

# k = 2 * ceil(DEGREE_FACTOR * log2(n) / 2): Bell et al. show k = O(log n) suffices; the
# constant is ours (n = 100 gives k = 20, n = 1000 gives k = 30). Raise it to tolerate a
# larger share of dropped or corrupt clients.
DEGREE_FACTOR = 3.0


def _position_key(seed: bytes, client_id: str) -> tuple[bytes, str]:
    encoded = client_id.encode()
    digest = hashlib.sha256(seed + len(encoded).to_bytes(4, "big") + encoded).digest()
    return digest, client_id


def neighbours(client_ids: Sequence[str], k: int, seed: bytes) -> dict[str, list[str]]:
    """Each client's neighbours, sorted by id; symmetric, and complete when k >= n - 1."""
    repeated = sorted(cid for cid, count in Counter(client_ids).items() if count > 1)
    if repeated:
        raise ValueError(f"client_ids must be distinct, got repeated ids {repeated}")
    n = len(client_ids)
    if k >= n - 1:
        return {cid: sorted(other for other in client_ids if other != cid) for cid in client_ids}
    if k < 2 or k % 2:
        raise ValueError(f"k must be even and at least 2 when below n - 1 = {n - 1}, got {k}")
    ring = sorted(client_ids, key=lambda cid: _position_key(seed, cid))
    half = k // 2
    return {
        cid: sorted(ring[(position + offset) % n] for offset in range(-half, half + 1) if offset)
        for position, cid in enumerate(ring)
    }


def recommended_degree(n: int) -> int:
    """A neighbour count for n clients: O(log n), the complete graph for small n."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if n == 1:
        return 0
    return min(n - 1, 2 * math.ceil(DEGREE_FACTOR * math.log2(n) / 2))


def share_holders(graph: Mapping[str, Sequence[str]], client_id: str) -> list[str]:
    """Who holds shares of client_id's secrets: itself and its neighbours, sorted by id.

    Share i (1-based) goes to holders[i - 1], so every party agrees on the indexes. The
    client keeps one share, as in Bonawitz et al., so that its own survival counts
    towards recovering its self seed.
    """
    return sorted([client_id, *graph[client_id]])


def recommended_threshold(degree: int) -> int:
    """Shares needed to recover a secret: a strict majority of its degree + 1 holders.

    A majority keeps an honest-but-curious server from collecting both a client's self seed
    and its mask key (the threat model of ARCHITECTURE.md); against an actively malicious
    server Bonawitz et al. require more than two thirds.
    """
    if degree < 1:
        raise ValueError(f"degree must be at least 1, got {degree}")
    return (degree + 1) // 2 + 1
