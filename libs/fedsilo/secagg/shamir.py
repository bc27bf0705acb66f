"""t-of-n Shamir sharing of 32-byte secrets with pycryptodome (GF(2^128), 16-byte secrets).

A 32-byte secret is split into two 16-byte halves, each shared with the same threshold and
indexes; a `Share` carries both halves' shares side by side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from Crypto.Protocol.SecretSharing import Shamir

SECRET_BYTES = 32
_HALF = SECRET_BYTES // 2


@dataclass(frozen=True)
class Share:
    """Share number `index` (1..num_shares) of a 32-byte secret."""

    index: int
    value: bytes

    def __post_init__(self) -> None:
        if self.index < 1:
            raise ValueError(f"share index must be at least 1, got {self.index}")
        if len(self.value) != SECRET_BYTES:
            raise ValueError(f"share value must be {SECRET_BYTES} bytes, got {len(self.value)}")


def share_secret(secret: bytes, threshold: int, num_shares: int) -> list[Share]:
    """Split `secret` into `num_shares` shares, any `threshold` of which recover it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= num_shares:
        raise ValueError(
            f"need 1 <= threshold <= num_shares, got threshold={threshold}, num_shares={num_shares}"
        )
    low = Shamir.split(threshold, num_shares, secret[:_HALF], ssss=False)
    high = Shamir.split(threshold, num_shares, secret[_HALF:], ssss=False)
    return [
        Share(index, low_share + high_share)
        for (index, low_share), (_, high_share) in zip(low, high, strict=True)
    ]


def combine_shares(shares: Sequence[Share], threshold: int) -> bytes:
    """Recover the secret from at least `threshold` shares with distinct indexes.

    Shares carry no integrity check: a wrong share yields a wrong secret, not an error, so
    callers verify what they recover where they can (see masking.recover_dangling_pairs).
    """
    if threshold < 1:
        raise ValueError(f"threshold must be at least 1, got {threshold}")
    if len(shares) < threshold:
        raise ValueError(f"need {threshold} shares to recover the secret, got {len(shares)}")
    repeated = sorted(index for index, n in Counter(s.index for s in shares).items() if n > 1)
    if repeated:
        raise ValueError(f"share indexes must be distinct, got repeated indexes {repeated}")
    # Any `threshold` points determine the polynomial; pycryptodome wants exactly that many.
    chosen = shares[:threshold]
    low = Shamir.combine([(s.index, s.value[:_HALF]) for s in chosen], ssss=False)
    high = Shamir.combine([(s.index, s.value[_HALF:]) for s in chosen], ssss=False)
    return bytes(low + high)
