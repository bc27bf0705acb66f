"""Rules that weigh the sites by the geometry of their updates: multi-Krum (Blanchard et al.
2017), centered clipping (Karimireddy et al. 2021) and norm-bounded FedAvg. Each needs only
the updates' Gram matrix G (G_ij = <u_i, u_j>): distances, norms and every iterate of
centered clipping are linear in it. So aggregation takes two passes over the shards, both
divided among the replicas as FedAvg's one: the first sums each range's G (`range_gram`), the
scheduler turns the whole G into one coefficient per site (`coefficients`), and the second
is a weighted sum with those coefficients."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedsilo.aggregator.fold import fold_inputs
from fedsilo.aggregator.sources import BlobSource
from fedsilo.v1 import aggregator_pb2

Gram = NDArray[np.float64]


def range_gram(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    begin: int,
    end: int,
    threads: int = 1,
) -> Gram:
    """The inputs' Gram matrix over [begin, end), block by block in float64."""
    count = len(inputs)
    total = np.zeros((count, count), dtype=np.float64)
    lock = threading.Lock()
    scratch = np.zeros(end - begin, dtype=np.float32)  # fold_inputs' output: unused here
    blocks: dict[int, NDArray[np.float64]] = {}

    def accumulate(index: int, values: NDArray[Any], block: NDArray[Any]) -> None:
        key = block.__array_interface__["data"][0]
        stacked = blocks.get(key)
        if stacked is None:
            stacked = np.empty((count, block.size), dtype=np.float64)
            blocks[key] = stacked
        stacked[index] = values
        if index == count - 1:
            product = stacked @ stacked.T
            del blocks[key]
            with lock:
                total[:] += product

    fold_inputs(source, inputs, begin, end, scratch, accumulate, threads)
    return total


def _squared_distances(gram: Gram) -> Gram:
    norms = np.diag(gram)
    return np.maximum(norms[:, None] + norms[None, :] - 2 * gram, 0.0)


def krum(gram: Gram, weights: NDArray[np.float64], params: Mapping[str, Any]) -> Gram:
    """Multi-Krum: each update's score is the sum of squared distances to its n - f - 2
    nearest others; the m lowest-scoring are averaged with their example weights."""
    count = gram.shape[0]
    f, m = int(params.get("f", 1)), int(params.get("m", 1) or 1)
    if count <= 2 * f + 2:
        raise ValueError(f"krum with f = {f} needs more than {2 * f + 2} updates, got {count}")
    distances = _squared_distances(gram)
    np.fill_diagonal(distances, np.inf)
    nearest = np.sort(distances, axis=1)[:, : count - f - 2]
    scores = nearest.sum(axis=1)
    chosen = np.argsort(scores, kind="stable")[: min(m, count)]
    out = np.zeros(count)
    out[chosen] = weights[chosen] / weights[chosen].sum()
    return out


def norm_bounded(gram: Gram, weights: NDArray[np.float64], params: Mapping[str, Any]) -> Gram:
    """FedAvg with each update scaled down to at most the bound (a number, or "median": the
    round's median update norm)."""
    norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
    bound = params.get("bound", "median")
    limit = float(np.median(norms)) if bound == "median" else float(bound)
    factors = np.minimum(1.0, limit / np.maximum(norms, 1e-30))
    return weights * factors


def centered_clipping(gram: Gram, weights: NDArray[np.float64], params: Mapping[str, Any]) -> Gram:
    """v <- v + sum_i w_i clip_tau(u_i - v), `iterations` times, from the norm-bounded mean (a
    robust start; the paper starts from the previous round's momentum); v is kept as its
    coefficients a over the updates, ||u_i - v||^2 = G_ii - 2 (G a)_i + a'Ga. tau is a radius
    in the updates' units, or "median" (the default): each iteration's median distance from v,
    which needs no knowledge of the updates' scale."""
    tau = params.get("tau", "median")
    a = norm_bounded(gram, weights, {"bound": "median"})
    for _ in range(int(params.get("iterations", 3))):
        ga = gram @ a
        distances = np.sqrt(np.maximum(np.diag(gram) - 2 * ga + a @ ga, 0.0))
        radius = float(np.median(distances)) if tau == "median" else float(tau)
        factors = np.minimum(1.0, radius / np.maximum(distances, 1e-30))
        # sum_i w_i c_i (e_i - a)
        a = a + weights * factors - (weights * factors).sum() * a
    return a


Coefficients = Callable[[Gram, NDArray[np.float64], Mapping[str, Any]], Gram]
COEFFICIENTS: dict[str, Coefficients] = {
    "krum": krum,
    "norm_bounded_mean": norm_bounded,
    "centered_clipping": centered_clipping,
}


def _unknown(params: Mapping[str, Any], allowed: set[str], rule: str) -> str | None:
    extra = sorted(set(params) - allowed)
    if extra:
        return (
            f"aggregation rule {rule!r} takes {', '.join(sorted(allowed))}; got {', '.join(extra)}"
        )
    return None


def krum_problem(params: Mapping[str, Any], min_clients: int) -> str | None:
    problem = _unknown(params, {"f", "m"}, "krum")
    if problem:
        return problem
    f, m = params.get("f", 1), params.get("m", 1)
    if not isinstance(f, int) or f < 0 or not isinstance(m, int) or m < 1:
        return f"aggregation.f must be an integer >= 0 and m >= 1, got f={f!r}, m={m!r}"
    if min_clients <= 2 * f + 2:
        return (
            f"krum with f = {f} tolerates f attackers only among more than 2f + 2 = {2 * f + 2} "
            f"updates: min_clients is {min_clients}; raise it to {2 * f + 3} or lower f"
        )
    return None


def norm_bounded_problem(params: Mapping[str, Any], min_clients: int) -> str | None:
    problem = _unknown(params, {"bound"}, "norm_bounded_mean")
    if problem:
        return problem
    bound = params.get("bound", "median")
    if bound != "median" and (not isinstance(bound, int | float) or not bound > 0):
        return f"aggregation.bound must be a positive number or 'median', got {bound!r}"
    return None


def centered_clipping_problem(params: Mapping[str, Any], min_clients: int) -> str | None:
    problem = _unknown(params, {"tau", "iterations"}, "centered_clipping")
    if problem:
        return problem
    tau, iterations = params.get("tau", "median"), params.get("iterations", 3)
    if tau != "median" and (
        isinstance(tau, bool)
        or not isinstance(tau, int | float)
        or not tau > 0
        or not math.isfinite(tau)
    ):
        return f"aggregation.tau must be a positive number or 'median', got {tau!r}"
    if not isinstance(iterations, int) or not 1 <= iterations <= 100:
        return f"aggregation.iterations must be an integer in [1, 100], got {iterations!r}"
    return None
