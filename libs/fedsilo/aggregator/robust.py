"""Byzantine-robust aggregation rules that work coordinate by coordinate, so aggregator
replicas divide them by coordinate range as they divide FedAvg: the coordinate-wise median and
the trimmed mean (Yin et al. 2018). Each block of coordinates is gathered from every input
into one [inputs, block] array and reduced with numpy's selection (np.partition, O(n) per
coordinate), never a Python loop over coordinates."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedsilo.aggregator.fold import fold_inputs
from fedsilo.aggregator.sources import BlobSource
from fedsilo.algorithms.aggregate import Vector
from fedsilo.v1 import aggregator_pb2


def trimmed_count(beta: float, num_inputs: int) -> int:
    """How many values are cut at each end of every coordinate: floor(beta * n)."""
    return math.floor(beta * num_inputs + 1e-9)


def _gathered(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    begin: int,
    end: int,
    threads: int,
    reduce: Any,
) -> Vector:
    """Gather each block's values from every input, then `reduce(stacked [n, block]) ->
    [block]` into the output: memory is the output plus one block per input."""
    count = len(inputs)
    out = np.empty(end - begin, dtype=np.float32)
    buffers: dict[int, NDArray[np.float32]] = {}

    def accumulate(index: int, values: NDArray[Any], block: NDArray[Any]) -> None:
        key = block.__array_interface__["data"][0]  # each block of the output: its own
        stacked = buffers.get(key)
        if stacked is None or stacked.shape[1] != block.size:
            stacked = np.empty((count, block.size), dtype=np.float32)
            buffers[key] = stacked
        stacked[index] = values
        if index == count - 1:
            block[:] = reduce(stacked)
            del buffers[key]

    fold_inputs(source, inputs, begin, end, out, accumulate, threads)
    return out


def coordinate_median(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    weights: NDArray[Any],
    begin: int,
    end: int,
    threads: int,
    params: Mapping[str, Any],
) -> Vector:
    """Each coordinate's median over the sites' updates (the mean of the middle two for an
    even count); one site, however far off, moves no coordinate beyond the honest range."""
    return _gathered(
        source, inputs, begin, end, threads, lambda stacked: np.median(stacked, axis=0)
    )


def trimmed_mean(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    weights: NDArray[Any],
    begin: int,
    end: int,
    threads: int,
    params: Mapping[str, Any],
) -> Vector:
    """Each coordinate's mean after cutting its floor(beta * n) largest and smallest values."""
    count = len(inputs)
    cut = trimmed_count(float(params.get("beta", 0.2)), count)
    if count - 2 * cut < 1:
        raise ValueError(f"trimmed_mean's beta {params.get('beta')} leaves none of {count} inputs")

    def reduce(stacked: NDArray[np.float32]) -> Any:
        if cut == 0:
            return np.mean(stacked, axis=0, dtype=np.float64)
        kept = np.partition(stacked, (cut, count - cut - 1), axis=0)[cut : count - cut]
        return np.mean(kept, axis=0, dtype=np.float64)

    return _gathered(source, inputs, begin, end, threads, reduce)


def median_problem(params: Mapping[str, Any], min_clients: int) -> str | None:
    if params:
        return f"aggregation rule 'median' takes no parameters, got {', '.join(sorted(params))}"
    return None


def trimmed_mean_problem(params: Mapping[str, Any], min_clients: int) -> str | None:
    unknown = sorted(set(params) - {"beta"})
    if unknown:
        return f"aggregation rule 'trimmed_mean' takes beta only, got {', '.join(unknown)}"
    beta = params.get("beta", 0.2)
    if not isinstance(beta, int | float) or not 0 <= beta < 0.5:
        return f"aggregation.beta must be a number in [0, 0.5), got {beta!r}"
    if min_clients - 2 * trimmed_count(float(beta), min_clients) < 1:
        return f"aggregation.beta {beta} trims every update of a round of {min_clients} clients"
    return None
