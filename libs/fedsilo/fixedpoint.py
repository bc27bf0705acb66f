"""Fixed-point quantization shared by the protections that compute on integers (secure
aggregation's ring, Paillier's packed plaintexts): values in [-clip, clip] become integer
levels in [0, max_level], and a sum of `count` clients' levels maps back to the float sum."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def to_levels(
    values: NDArray[np.floating],
    clip: float,
    scale: float,
    max_level: int,
    rng: np.random.Generator | None = None,
) -> NDArray[np.float64]:
    """Clip, shift and scale; stochastic rounding with `rng` (unbiased, error below one step),
    otherwise to the nearest level (error at most half a step)."""
    levels = np.array(values, dtype=np.float64).ravel()
    nan_count = int(np.count_nonzero(np.isnan(levels)))
    if nan_count:
        raise ValueError(f"values contain {nan_count} NaN coordinates; cannot quantize NaN")
    np.clip(levels, -clip, clip, out=levels)
    levels += clip
    levels *= scale
    if rng is None:
        np.rint(levels, out=levels)
    else:
        levels += rng.random(levels.shape)
        np.floor(levels, out=levels)
    # Float rounding of (clip + clip) * scale may land a hair above max_level.
    np.minimum(levels, max_level, out=levels)
    return levels


def sum_from_levels(
    level_sums: NDArray[np.unsignedinteger],
    clip: float,
    scale: float,
    count: int,
    max_count: int,
) -> NDArray[np.float32]:
    """The float sum of `count` clients' values from the sum of their levels."""
    if not 1 <= count <= max_count:
        raise ValueError(f"count must be in [1, num_clients={max_count}], got {count}")
    total = level_sums.astype(np.float64)
    total /= scale
    total -= count * clip
    return total.astype(np.float32)
