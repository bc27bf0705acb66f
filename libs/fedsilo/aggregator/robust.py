"""Byzantine-robust aggregation rules that work coordinate by coordinate, so aggregator
replicas divide them by coordinate range as they divide FedAvg: the coordinate-wise median and
the trimmed mean (Yin et al. 2018). Each block of coordinates is reduced across the inputs by
a sorting network pruned to the order statistics the rule needs (fedsilo.aggregator
.selection), vectorised over the block, never a Python loop over coordinates."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedsilo.aggregator.fold import fold_inputs
from fedsilo.aggregator.selection import Term, selection_kernel
from fedsilo.aggregator.sources import BlobSource
from fedsilo.algorithms.aggregate import Vector
from fedsilo.v1 import aggregator_pb2


def trimmed_count(beta: float, num_inputs: int) -> int:
    """How many values are cut at each end of every coordinate: floor(beta * n)."""
    return math.floor(beta * num_inputs + 1e-9)


def _selected(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    begin: int,
    end: int,
    threads: int,
    placed: frozenset[int],
    terms: tuple[Term, ...],
) -> Vector:
    """For each block of the fold, hold every input's piece (views, not copies: each
    reader's next piece comes only with the next block), then run the selection kernel
    (fedsilo.aggregator.selection) over them into the output block."""
    count = len(inputs)
    kernel = selection_kernel(count, placed, terms)
    out = np.empty(end - begin, dtype=np.float32)
    pieces: dict[int, list[NDArray[Any]]] = {}

    def accumulate(index: int, values: NDArray[Any], block: NDArray[Any]) -> None:
        key = block.__array_interface__["data"][0]  # each block of the output: its own
        held = pieces.setdefault(key, [])
        held.append(values)
        if index == count - 1:
            del pieces[key]
            kernel(held, block)

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
    count = len(inputs)
    low, high = (count - 1) // 2, count // 2
    terms = ((low, 1.0),) if low == high else ((low, 0.5), (high, 0.5))
    return _selected(source, inputs, begin, end, threads, frozenset({low, high}), terms)


def trimmed_mean(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    weights: NDArray[Any],
    begin: int,
    end: int,
    threads: int,
    params: Mapping[str, Any],
) -> Vector:
    """Each coordinate's mean after cutting its floor(beta * n) largest and smallest values:
    the network moves those to the ends; the rest, in whatever order, are averaged."""
    count = len(inputs)
    cut = trimmed_count(float(params.get("beta", 0.2)), count)
    if count - 2 * cut < 1:
        raise ValueError(f"trimmed_mean's beta {params.get('beta')} leaves none of {count} inputs")
    ends = frozenset(range(cut)) | frozenset(range(count - cut, count))
    middle = range(cut, count - cut)
    terms = tuple((wire, 1.0 / len(middle)) for wire in middle)
    return _selected(source, inputs, begin, end, threads, ends, terms)


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
