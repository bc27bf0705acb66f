"""The arithmetic of secure aggregation (Bonawitz et al. 2017), all mod 2^32.

A client u with quantized update x_u sends
    y_u = x_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)
over its neighbours v (ids compared as Python strings). Pairwise masks cancel in the sum
of survivors; the server removes each survivor's self mask PRG(b_u) and, for each
survivor u whose neighbour v dropped, the dangling mask u applied towards v. Every
function works on a coordinate range [begin, begin + len) alone, so an aggregator shard
can unmask only its own range.

Every mask of a pair or of a dropped client comes from its own seed, so none can be skipped
or merged: a client expands k + 1 masks, the server one per survivor plus one per
(survivor, dropped neighbour) pair. What can be saved is memory traffic: `apply_masks` walks
the vector in cache-sized chunks and adds all masks to a chunk before moving on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from numpy.typing import NDArray

from fedsilo.parallel import run_in_parts
from fedsilo.secagg.keys import ClientKeys, agree, agreement_context
from fedsilo.secagg.prg import MaskStream, check_ring_buffer

RingVector = NDArray[np.uint32]
# Coordinates per chunk: a chunk of the vector and one of the keystream (256 KiB each) stay
# in a core's L2 cache while every mask is added to it.
CHUNK_COORDINATES = 1 << 16


class DanglingPair(NamedTuple):
    """A pairwise mask the server must remove: survivor applied it towards dropped."""

    survivor: str
    dropped: str
    seed: bytes


def _check_ring_vector(name: str, vector: RingVector) -> None:
    if vector.dtype != np.uint32 or vector.ndim != 1:
        raise ValueError(f"{name} must be a 1-D uint32 vector, got {vector.dtype} {vector.shape}")


def pairwise_seed(
    my_keys: ClientKeys,
    my_id: str,
    peer_id: str,
    peer_public_s: bytes,
    job_id: str,
    round_: int,
) -> bytes:
    """The seed s_uv that my_id and peer_id share, bound to this job and round."""
    context = agreement_context("mask", job_id, round_, my_id, peer_id)
    return agree(my_keys.mask_private, peer_public_s, context)


def recover_dangling_pairs(
    dropped_id: str,
    dropped_mask_private: bytes,
    dropped_mask_public: bytes,
    survivor_mask_publics: Mapping[str, bytes],
    job_id: str,
    round_: int,
) -> list[DanglingPair]:
    """Server side: from a dropped client's mask key (recombined from Shamir shares), the
    seeds it shared with each surviving neighbour.

    Checks the recombined key against the public key the client published, which catches
    a wrong share before it silently corrupts the sum.
    """
    private = X25519PrivateKey.from_private_bytes(dropped_mask_private)
    if private.public_key().public_bytes_raw() != dropped_mask_public:
        raise ValueError(
            f"recombined mask key of {dropped_id!r} does not match its published public key; "
            "at least one Shamir share is wrong"
        )
    return [
        DanglingPair(
            survivor,
            dropped_id,
            agree(private, public, agreement_context("mask", job_id, round_, survivor, dropped_id)),
        )
        for survivor, public in survivor_mask_publics.items()
    ]


def mask_update(
    quantized: RingVector,
    my_id: str,
    self_seed: bytes,
    pairwise: Mapping[str, bytes],
    begin: int = 0,
    threads: int | None = 1,
) -> RingVector:
    """y = x + PRG(self_seed) + sum_{peer > me} PRG(s) - sum_{peer < me} PRG(s) (mod 2^32).

    `quantized` holds coordinates [begin, begin + len) of the update; `pairwise` maps each
    neighbour's id to the seed shared with it; `threads` as in `apply_masks`.
    """
    _check_ring_vector("quantized", quantized)
    if my_id in pairwise:
        raise ValueError(f"pairwise seeds must not include the client itself ({my_id!r})")
    return apply_masks(
        quantized,
        begin,
        added=[self_seed, *(seed for peer, seed in pairwise.items() if peer > my_id)],
        subtracted=[seed for peer, seed in pairwise.items() if peer < my_id],
        out=np.empty_like(quantized),
        threads=threads,
    )


def unmask_sum(
    masked_sum: RingVector,
    begin: int,
    self_seeds: Mapping[str, bytes],
    dangling_pairs: Sequence[tuple[str, str, bytes]],
    threads: int | None = 1,
) -> RingVector:
    """Sum of the survivors' quantized updates from the sum of their masked updates.

    `self_seeds` holds every survivor's self seed, `dangling_pairs` every (survivor,
    dropped, seed) of a survivor whose neighbour dropped after the keys were shared;
    `threads` as in `apply_masks`. All of these masks must be expanded: each comes from its
    own seed.
    """
    _check_ring_vector("masked_sum", masked_sum)
    seen: set[tuple[str, str]] = set()
    for survivor, dropped, _ in dangling_pairs:
        if survivor not in self_seeds:
            raise ValueError(
                f"dangling pair ({survivor!r}, {dropped!r}): {survivor!r} is not a survivor"
            )
        if dropped in self_seeds:
            raise ValueError(f"dangling pair ({survivor!r}, {dropped!r}): {dropped!r} survived")
        if (survivor, dropped) in seen:
            raise ValueError(f"dangling pair ({survivor!r}, {dropped!r}) given twice")
        seen.add((survivor, dropped))
    # Undo what each survivor did: it added the pair's mask when the dropped id is greater.
    return apply_masks(
        masked_sum,
        begin,
        added=[seed for survivor, dropped, seed in dangling_pairs if dropped < survivor],
        subtracted=[
            *self_seeds.values(),
            *(seed for survivor, dropped, seed in dangling_pairs if dropped > survivor),
        ],
        out=np.empty_like(masked_sum),
        threads=threads,
    )


def apply_masks(
    values: RingVector,
    begin: int,
    added: Sequence[bytes],
    subtracted: Sequence[bytes],
    out: RingVector | None = None,
    threads: int | None = 1,
) -> RingVector:
    """out = values + sum PRG(added) - sum PRG(subtracted) (mod 2^32), over coordinates
    [begin, begin + len(values)); in place when `out` is omitted or is `values`.

    Chunk by chunk, each stream writes into one reused, cache-sized buffer that is added at
    once, so main memory sees each coordinate of `values` and `out` once, whatever the
    number of masks. threads: split the range across this many threads (None: one per
    core); the result does not depend on it.
    """
    _check_ring_vector("values", values)
    if out is None:
        out = values
    else:
        check_ring_buffer("out", out, len(values))
    target = out  # `out` narrowed to an array, for the closure

    def apply_part(start: int, stop: int) -> None:
        streams: list[tuple[MaskStream, np.ufunc]] = [
            (MaskStream(seed, begin + start), np.add) for seed in added
        ]
        streams += [(MaskStream(seed, begin + start), np.subtract) for seed in subtracted]
        if not streams:
            np.copyto(target[start:stop], values[start:stop])
            return
        scratch = np.empty(min(CHUNK_COORDINATES, stop - start), dtype=np.uint32)
        for chunk in range(start, stop, CHUNK_COORDINATES):
            chunk_stop = min(chunk + CHUNK_COORDINATES, stop)
            source, result = values[chunk:chunk_stop], target[chunk:chunk_stop]
            mask = scratch[: chunk_stop - chunk]
            for stream, combine in streams:
                combine(source, stream.read_into(mask), out=result)
                source = result

    run_in_parts(len(values), threads, apply_part)
    return out


def ring_add_into(total: RingVector, update: RingVector) -> RingVector:
    """total += update (mod 2^32), in place; np.sum would widen uint32 and break the ring."""
    _check_ring_vector("total", total)
    _check_ring_vector("update", update)
    if total.shape != update.shape:
        raise ValueError(f"update of shape {update.shape} does not match total {total.shape}")
    return np.add(total, update, out=total)
