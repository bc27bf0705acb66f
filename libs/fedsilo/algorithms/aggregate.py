"""Pure combiners over coordinate ranges.

Every function here works on whatever slice of the parameter vector it is given, so an
aggregator replica can apply it to its shard alone and the scheduler can concatenate shards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

Vector = NDArray[np.float32]


def normalized_weights(num_examples: Sequence[int]) -> NDArray[np.float64]:
    """FedAvg weights n_k / sum(n): clients count in proportion to their training examples."""
    counts = np.asarray(num_examples, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError("need at least one client's example count")
    if np.any(counts <= 0):
        raise ValueError(f"example counts must be positive, got {counts.tolist()}")
    weights: NDArray[np.float64] = counts / counts.sum()
    return weights


def weighted_sum_into(
    out: Vector, updates: Sequence[Vector], weights: NDArray[np.float64]
) -> Vector:
    """out = sum_k weights[k] * updates[k], in place; one scratch buffer serves every client."""
    if len(updates) != len(weights):
        raise ValueError(f"{len(updates)} updates but {len(weights)} weights")
    scratch = np.empty_like(out)
    out.fill(0.0)
    for update, weight in zip(updates, weights, strict=True):
        if update.shape != out.shape:
            raise ValueError(f"update of shape {update.shape} does not match {out.shape}")
        np.multiply(update, np.float32(weight), out=scratch)
        out += scratch
    return out


def weighted_average(updates: Sequence[Vector], num_examples: Sequence[int]) -> Vector:
    """Sample-weighted mean of client updates (McMahan et al. 2017)."""
    if not updates:
        raise ValueError("no updates to average")
    out = np.empty_like(updates[0], dtype=np.float32)
    return weighted_sum_into(out, updates, normalized_weights(num_examples))
