"""The arithmetic of secure aggregation (Bonawitz et al. 2017), all mod 2^32.

A client u with quantized update x_u sends
    y_u = x_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)
over its neighbours v (ids compared as Python strings). Pairwise masks cancel in the sum
of survivors; the server removes each survivor's self mask PRG(b_u) and, for each
survivor u whose neighbour v dropped, the dangling mask u applied towards v. Every
function works on a coordinate range [begin, begin + len) alone, so an aggregator shard
can unmask only its own range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from numpy.typing import NDArray

from fedsilo.secagg.keys import ClientKeys, agree, agreement_context
from fedsilo.secagg.prg import expand_mask

RingVector = NDArray[np.uint32]


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
) -> RingVector:
    """y = x + PRG(self_seed) + sum_{peer > me} PRG(s) - sum_{peer < me} PRG(s) (mod 2^32).

    `quantized` holds coordinates [begin, begin + len) of the update; `pairwise` maps each
    neighbour's id to the seed shared with it.
    """
    _check_ring_vector("quantized", quantized)
    if my_id in pairwise:
        raise ValueError(f"pairwise seeds must not include the client itself ({my_id!r})")
    end = begin + len(quantized)
    masked = quantized.copy()
    scratch = np.empty_like(masked)
    np.add(masked, expand_mask(self_seed, begin, end, out=scratch), out=masked)
    for peer_id, seed in pairwise.items():
        expand_mask(seed, begin, end, out=scratch)
        if peer_id > my_id:
            np.add(masked, scratch, out=masked)
        else:
            np.subtract(masked, scratch, out=masked)
    return masked


def unmask_sum(
    masked_sum: RingVector,
    begin: int,
    self_seeds: Mapping[str, bytes],
    dangling_pairs: Sequence[tuple[str, str, bytes]],
) -> RingVector:
    """Sum of the survivors' quantized updates from the sum of their masked updates.

    `self_seeds` holds every survivor's self seed, `dangling_pairs` every (survivor,
    dropped, seed) of a survivor whose neighbour dropped after the keys were shared.
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
    end = begin + len(masked_sum)
    total = masked_sum.copy()
    scratch = np.empty_like(total)
    for seed in self_seeds.values():
        np.subtract(total, expand_mask(seed, begin, end, out=scratch), out=total)
    for survivor, dropped, seed in dangling_pairs:
        expand_mask(seed, begin, end, out=scratch)
        # Undo what the survivor did: it added the mask when the dropped id is greater.
        if dropped > survivor:
            np.subtract(total, scratch, out=total)
        else:
            np.add(total, scratch, out=total)
    return total


def ring_add_into(total: RingVector, update: RingVector) -> RingVector:
    """total += update (mod 2^32), in place; np.sum would widen uint32 and break the ring."""
    _check_ring_vector("total", total)
    _check_ring_vector("update", update)
    if total.shape != update.shape:
        raise ValueError(f"update of shape {update.shape} does not match total {total.shape}")
    return np.add(total, update, out=total)
