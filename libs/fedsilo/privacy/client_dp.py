"""Client-level DP on flat float32 updates: clip each site's update, add Gaussian noise.

DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"):
each update is scaled to L2 norm at most C, so adding or removing one site moves the SUM of
clipped updates by at most C, and Gaussian noise of standard deviation z·C on that sum makes a
round (z, C)-Gaussian for the accountant. The noise always refers to the sum of clipped
updates; an aggregate that then divides by the total weight W carries noise of std z·C / W.
For the guarantee to hold the weights must not depend on private data beyond the clip:
uniform weights (or per-site weights capped at 1 with the noise scaled by the cap) and a
fixed denominator, not FedAvg's example counts.

Where the noise comes from (Kairouz et al. 2021, distributed DP):
- central: the aggregator, trusted with individual updates, adds z·C once to the sum;
- distributed, under secure aggregation: each of n sites adds z·C / sqrt(n), so that the sum,
  the only thing the aggregator sees, carries z·C. If fewer than n noisy updates reach the
  sum (dropouts), it carries less noise than accounted for, so n should be the fewest sites
  a round can finish with (the quorum), not the number selected.

Noise is drawn from the numpy Generator the caller passes; production callers should pass one
seeded from the OS (np.random.default_rng()). Floating-point Gaussian sampling is not
hardened against the attacks of Mironov 2012, and quantization for secure aggregation after
the noise is added is an approximation of the discrete Gaussian analysis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedsilo.privacy.config import DifferentialPrivacy

Vector = NDArray[np.float32]
# Coordinates per pass: a chunk's float64 squares or float32 noise stay in L2 cache.
_CHUNK_COORDINATES = 1 << 16


@dataclass(frozen=True)
class PrivatizedUpdate:
    """A clipped and noised update, and what was done to it (for the audit record)."""

    vector: Vector
    original_norm: float
    clipped: bool
    noise_std: float


def clip_update(delta: NDArray[np.floating], clip_norm: float) -> tuple[Vector, float]:
    """A float32 copy of `delta` scaled to L2 norm at most `clip_norm`, and the original norm.

    Updates already within the bound come back unchanged (as a copy). The norm is summed in
    float64; the scaled float32 copy meets the bound up to float32 rounding.
    """
    _check_positive("clip_norm", clip_norm)
    vector = _flat_float32(delta, "delta")
    norm = _l2_norm(vector)
    if not math.isfinite(norm):
        # Squares of float32 values cannot overflow a float64 sum: a value is NaN or inf.
        _refuse_non_finite(vector, "delta")
    if norm > clip_norm:
        vector *= np.float32(clip_norm / norm)
    return vector, norm


def add_gaussian_noise(
    update: NDArray[np.floating], std: float, rng: np.random.Generator
) -> Vector:
    """A float32 copy of `update` plus independent N(0, std²) noise on every coordinate.

    The noise is drawn a cache-sized chunk at a time into one reused buffer; the draws are
    those of one rng.standard_normal(len(update), dtype=float32) call.
    """
    if not math.isfinite(std) or std < 0:
        raise ValueError(f"noise std must be finite and >= 0, got {std}")
    vector = _flat_float32(update, "update")
    _refuse_non_finite(vector, "update")
    if std > 0:
        noise = np.empty(min(_CHUNK_COORDINATES, len(vector)), dtype=np.float32)
        for start in range(0, len(vector), _CHUNK_COORDINATES):
            part = vector[start : start + _CHUNK_COORDINATES]
            draw = noise[: len(part)]
            rng.standard_normal(out=draw, dtype=np.float32)
            draw *= np.float32(std)
            part += draw
    return vector


def noise_std_per_client(
    clip_norm: float, noise_multiplier: float, num_clients: int, distributed: bool
) -> float:
    """Standard deviation of the noise one party adds so that the sum of clipped updates
    carries z·C: z·C when one party adds it (central), z·C / sqrt(n) from each of n clients
    (distributed, under secure aggregation)."""
    _check_positive("clip_norm", clip_norm)
    if not math.isfinite(noise_multiplier) or noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise ValueError(f"num_clients must be an integer >= 1, got {num_clients!r}")
    total = noise_multiplier * clip_norm
    return total / math.sqrt(num_clients) if distributed else total


def privatize_update(
    delta: NDArray[np.floating],
    spec: DifferentialPrivacy,
    num_clients: int,
    rng: np.random.Generator,
) -> PrivatizedUpdate:
    """A site's update clipped to spec.clip_norm, plus its share of the noise.

    `num_clients` is how many sites' noise the sum is guaranteed to contain: the quorum under
    secure aggregation (each adds z·C / sqrt(n)), 1 when this site alone must supply all of it.
    For central noise added by a trusted aggregator, use `clip_update` here and
    `add_gaussian_noise(sum, noise_std_per_client(..., distributed=False), rng)` there.
    """
    if spec.mode != "client":
        raise ValueError(
            f"privacy.mode is '{spec.mode}'; privatize_update applies client-level DP only"
        )
    std = noise_std_per_client(
        spec.clip_norm, spec.require_noise_multiplier(), num_clients, distributed=True
    )
    clipped, norm = clip_update(delta, spec.clip_norm)
    return PrivatizedUpdate(
        vector=add_gaussian_noise(clipped, std, rng),
        original_norm=norm,
        clipped=norm > spec.clip_norm,
        noise_std=std,
    )


def _flat_float32(values: NDArray[np.floating], name: str) -> Vector:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a flat vector, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must hold floats, got dtype {array.dtype}")
    return array.astype(np.float32, copy=True)


def _refuse_non_finite(vector: Vector, name: str) -> None:
    bad = int(np.count_nonzero(~np.isfinite(vector)))
    if bad:
        # A NaN norm would slip past the clip: refuse rather than release an unbounded update.
        raise ValueError(f"{name} has {bad} non-finite values (NaN or inf); nothing was released")


def _l2_norm(vector: Vector) -> float:
    """The L2 norm, its squares summed in float64 a cache-sized chunk at a time (no
    full-size float64 temporary)."""
    buffer = np.empty(min(_CHUNK_COORDINATES, len(vector)))
    total = 0.0
    for start in range(0, len(vector), _CHUNK_COORDINATES):
        chunk = buffer[: len(vector[start : start + _CHUNK_COORDINATES])]
        np.square(vector[start : start + _CHUNK_COORDINATES], out=chunk, dtype=np.float64)
        total += float(chunk.sum())
    return math.sqrt(total)


def _check_positive(name: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")
