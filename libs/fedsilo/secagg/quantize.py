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

from fedsilo.fixedpoint import sum_from_levels, to_levels

RING_BITS = 32


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
    """
    levels = to_levels(values, spec.clip, spec.scale, spec.max_level, rng)
    return levels.astype(np.uint32)


def dequantize_sum(ring_sum: NDArray[np.uint32], spec: RingSpec, count: int) -> NDArray[np.float32]:
    """The float SUM of `count` clients' values from the sum of their quantized updates."""
    if ring_sum.dtype != np.uint32:
        raise ValueError(f"ring_sum must be uint32, got {ring_sum.dtype}")
    return sum_from_levels(ring_sum, spec.clip, spec.scale, count, spec.num_clients)
