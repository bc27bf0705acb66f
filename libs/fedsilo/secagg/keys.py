"""A client's per-round key material and X25519 + HKDF-SHA256 key agreement.

Two key pairs per round, as in Bonawitz et al.: the mask key pair ("s") derives pairwise
mask seeds, the share key pair ("c") derives keys that encrypt Shamir shares between
clients. Both ends of a pair derive the same 32 bytes because the context puts the two
client ids in sorted order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
CONTEXT_PREFIX = b"fedsilo.secagg.v1"
Purpose = Literal["mask", "share"]


@dataclass(frozen=True)
class ClientKeys:
    """One round's key pairs of one client; never reuse them across rounds."""

    mask_private: X25519PrivateKey
    share_private: X25519PrivateKey

    @classmethod
    def generate(cls) -> ClientKeys:
        return cls(X25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def mask_public(self) -> bytes:
        """Raw 32-byte public key of the mask pair ("s"), published to the neighbours."""
        return self.mask_private.public_key().public_bytes_raw()

    @property
    def share_public(self) -> bytes:
        """Raw 32-byte public key of the share-encryption pair ("c")."""
        return self.share_private.public_key().public_bytes_raw()

    def mask_private_bytes(self) -> bytes:
        """The raw mask private key: the secret a client Shamir-shares with its neighbours
        so that they can help remove its pairwise masks if it drops out."""
        return self.mask_private.private_bytes_raw()


def _length_prefixed(field: bytes) -> bytes:
    return len(field).to_bytes(4, "big") + field


def agreement_context(purpose: Purpose, job_id: str, round_: int, id_a: str, id_b: str) -> bytes:
    """HKDF info binding purpose, job, round and the pair (ids sorted, so it is symmetric).

    Layout: b"fedsilo.secagg.v1" || lp(purpose) || lp(job_id) || round (8 bytes, big-endian)
    || lp(min id) || lp(max id), where lp(x) = 4-byte big-endian length || UTF-8 of x; the
    length prefixes keep ("a", "bc") and ("ab", "c") apart.
    """
    if purpose not in ("mask", "share"):
        raise ValueError(f"purpose must be 'mask' or 'share', got {purpose!r}")
    if id_a == id_b:
        raise ValueError(f"a pair needs two distinct client ids, got {id_a!r} twice")
    if not 0 <= round_ < 2**64:
        raise ValueError(f"round_ must be a non-negative 64-bit integer, got {round_}")
    low, high = sorted((id_a, id_b))
    return b"".join(
        [
            CONTEXT_PREFIX,
            _length_prefixed(purpose.encode()),
            _length_prefixed(job_id.encode()),
            round_.to_bytes(8, "big"),
            _length_prefixed(low.encode()),
            _length_prefixed(high.encode()),
        ]
    )


def agree(my_private: X25519PrivateKey, their_public: bytes, context: bytes) -> bytes:
    """HKDF-SHA256(X25519(my_private, their_public), info=context): 32 shared bytes."""
    if len(their_public) != KEY_BYTES:
        raise ValueError(f"their_public must be {KEY_BYTES} raw bytes, got {len(their_public)}")
    shared = my_private.exchange(X25519PublicKey.from_public_bytes(their_public))
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=context).derive(shared)
