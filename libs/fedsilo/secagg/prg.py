"""Seekable mask stream: ChaCha20 keystream read as little-endian uint32 coordinates.

Coordinate i lives at byte 4*i of the keystream of (seed, zero nonce). The 16-byte nonce
that `cryptography` takes is OpenSSL's: a 32-bit little-endian block counter, then a
96-bit nonce. Starting the counter at begin // 16 lets an aggregator shard expand its own
coordinate range without generating the prefix, and the range equals that slice of the
whole stream.
"""

from __future__ import annotations

import secrets
import sys

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from numpy.typing import NDArray

SEED_BYTES = 32
_BLOCK_BYTES = 64
_COORDINATE_BYTES = 4
_COORDINATES_PER_BLOCK = _BLOCK_BYTES // _COORDINATE_BYTES
# The 32-bit block counter must not wrap: 2^32 blocks of 16 coordinates.
MAX_COORDINATES = 2**32 * _COORDINATES_PER_BLOCK
# Keystream = ChaCha20(zeros); a shared, immutable 1 MiB of zeros bounds the extra memory
# whatever the vector length.
_ZEROS = memoryview(bytes(1 << 20))


def new_seed() -> bytes:
    """A fresh random 32-byte seed (a client's self-mask seed)."""
    return secrets.token_bytes(SEED_BYTES)


def expand_mask(
    seed: bytes, begin: int, end: int, out: NDArray[np.uint32] | None = None
) -> NDArray[np.uint32]:
    """Coordinates [begin, end) of the mask stream of `seed`, written into `out` if given."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    if not 0 <= begin <= end <= MAX_COORDINATES:
        raise ValueError(
            f"need 0 <= begin <= end <= {MAX_COORDINATES}, got begin={begin}, end={end}"
        )
    count = end - begin
    if out is None:
        out = np.empty(count, dtype=np.uint32)
    elif (
        out.dtype != np.uint32
        or out.shape != (count,)
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise ValueError(
            f"out must be a writeable contiguous uint32 vector of {count} coordinates, "
            f"got {out.dtype} of shape {out.shape}"
        )
    block, skip = divmod(begin, _COORDINATES_PER_BLOCK)
    nonce = block.to_bytes(4, "little") + bytes(12)
    encryptor = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
    if skip:
        # begin is inside a block: generate and drop that block's leading coordinates.
        encryptor.update(_ZEROS[: skip * _COORDINATE_BYTES])
    target = out.data.cast("B")
    for start in range(0, len(target), len(_ZEROS)):
        chunk = target[start : start + len(_ZEROS)]
        encryptor.update_into(_ZEROS[: len(chunk)], chunk)
    if sys.byteorder == "big":
        # The stream is defined little-endian so that every platform derives the same mask.
        out.byteswap(inplace=True)
    return out
