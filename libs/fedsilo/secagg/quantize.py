"""Fixed-point quantization of float updates into the ring Z_{2^32} of the masks.

A value x in [-clip, clip] maps to round((x + clip) * scale), an integer in
[0, max_level] with max_level = floor((2^bits - 1) / num_clients), so the sum of up to
num_clients quantized updates stays below 2^bits <= 2^32 and never wraps: the masked sum,
taken mod 2^32, is the exact integer sum once the masks are removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedsilo.fixedpoint import sum_from_levels
from fedsilo.secagg.prg import SEED_BYTES, MaskStream

RING_BITS = 32
# Coordinates per pass: a chunk's float64 levels and fractions stay in a core's L2 cache.
_CHUNK_COORDINATES = 1 << 16


@dataclass(frozen=True, kw_only=True)
class RingSpec:
    """How updates are quantized; every client and the aggregator of a round share one.

    bits: width of the sum's range, at most 32 (the masks always work mod 2^32); fewer
    bits only coarsen the grid. clip: per-coordinate bound, values beyond it are clipped.
    num_clients: the most updates that will ever be summed in the round.
    """

    bits: int = RING_BITS
    clip: float
    num_clients: int

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= RING_BITS:
            raise ValueError(f"bits must be in [1, {RING_BITS}], got {self.bits}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if not 1 <= self.num_clients < 1 << self.bits:
            raise ValueError(
                f"num_clients must be in [1, 2^bits), got {self.num_clients} with bits={self.bits}"
            )

    @property
    def max_level(self) -> int:
        """The largest quantized value of one client."""
        return ((1 << self.bits) - 1) // self.num_clients

    @property
    def scale(self) -> float:
        """Quantization levels per unit of the float value."""
        return self.max_level / (2 * self.clip)


def quantization_step(spec: RingSpec) -> float:
    """Distance between neighbouring levels: each client's rounding error is below it."""
    return 1.0 / spec.scale


def quantize(
    values: NDArray[np.floating], spec: RingSpec, rng: np.random.Generator | None = None
) -> NDArray[np.uint32]:
    """Clip, scale and round `values` to ring elements.

    With `rng`, rounding is stochastic (unbiased: E[dequantized] = clipped value, error
    below one step); without, to the nearest level (error at most half a step).

    The arithmetic of `fedsilo.fixedpoint.to_levels`, done a cache-sized chunk at a time so
    that the float64 intermediates of a large update never reach main memory. The uniform
    draws of stochastic rounding are 32-bit fractions of an AES-CTR stream keyed with 32
    bytes of `rng` (a bias below 2^-32 of a step): reproducible from a seeded `rng`, and at
    10M coordinates several times faster than `rng.random`.
    """
    flat = np.asarray(values).ravel()
    quantized = np.empty(len(flat), dtype=np.uint32)
    size = min(_CHUNK_COORDINATES, len(flat))
    levels, fractions, bits = np.empty(size), np.empty(size), np.empty(size, dtype=np.uint32)
    fraction_stream = None if rng is None else MaskStream(rng.bytes(SEED_BYTES))
    for start in range(0, len(flat), _CHUNK_COORDINATES):
        stop = min(start + _CHUNK_COORDINATES, len(flat))
        level = levels[: stop - start]
        np.copyto(level, flat[start:stop])
        np.clip(level, -spec.clip, spec.clip, out=level)
        level += spec.clip
        level *= spec.scale
        if fraction_stream is None:
            np.rint(level, out=level)
        else:
            # floor(level + U[0, 1)), the floor being the cast to uint32 below (level >= 0).
            fraction = fractions[: len(level)]
            np.multiply(fraction_stream.read_into(bits[: len(level)]), 2.0**-32, out=fraction)
            level += fraction
        highest = level.max()
        if np.isnan(highest):
            nan_count = int(np.count_nonzero(np.isnan(flat)))
            raise ValueError(f"values contain {nan_count} NaN coordinates; cannot quantize NaN")
        if highest > spec.max_level:
            # Float rounding of (clip + clip) * scale, or the fraction added to it, may land
            # above max_level; only a chunk with a clipped value pays this pass.
            np.minimum(level, spec.max_level, out=level)
        np.copyto(quantized[start:stop], level, casting="unsafe")
    return quantized


def dequantize_sum(ring_sum: NDArray[np.uint32], spec: RingSpec, count: int) -> NDArray[np.float32]:
    """The float SUM of `count` clients' values from the sum of their quantized updates."""
    if ring_sum.dtype != np.uint32:
        raise ValueError(f"ring_sum must be uint32, got {ring_sum.dtype}")
    return sum_from_levels(ring_sum, spec.clip, spec.scale, count, spec.num_clients)
