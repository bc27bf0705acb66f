"""Byzantine-robust aggregation rules that work coordinate by coordinate, so aggregator
replicas divide them by coordinate range as they divide FedAvg: the coordinate-wise median and
the trimmed mean (Yin et al. 2018). Each block of coordinates is reduced across the inputs by
a sorting network pruned to the order statistics the rule needs (fedsilo.aggregator
.selection), vectorised over the block, never a Python loop over coordinates."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedsilo.aggregator.fold import fold_inputs
from fedsilo.aggregator.selection import apply_network, pruned_network
from fedsilo.aggregator.sources import BlobSource
from fedsilo.algorithms.aggregate import Vector
from fedsilo.v1 import aggregator_pb2


def trimmed_count(beta: float, num_inputs: int) -> int:
    """How many values are cut at each end of every coordinate: floor(beta * n)."""
    return math.floor(beta * num_inputs + 1e-9)


# Coordinates reduced at a time: a block of every input's values (SUB_BLOCK * 4 bytes each)
# stays in cache while the network's comparators pass over it.
SUB_BLOCK = 1 << 14

Reduce = Callable[[list[NDArray[np.float32]], NDArray[np.float32]], None]


def _gathered(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    begin: int,
    end: int,
    threads: int,
    reduce: Reduce,
) -> Vector:
    """For each block of the fold, hold every input's piece (views, not copies: each
    reader's next piece comes only with the next block), then copy them sub-block by
    sub-block into cache-sized rows and `reduce(rows, out)` into the output."""
    count = len(inputs)
    out = np.empty(end - begin, dtype=np.float32)
    pieces: dict[int, list[NDArray[Any]]] = {}

    def accumulate(index: int, values: NDArray[Any], block: NDArray[Any]) -> None:
        key = block.__array_interface__["data"][0]  # each block of the output: its own
        held = pieces.setdefault(key, [])
        held.append(values)
        if index < count - 1:
            return
        del pieces[key]
        rows = [np.empty(SUB_BLOCK, dtype=np.float32) for _ in range(count)]
        for start in range(0, block.size, SUB_BLOCK):
            stop = min(start + SUB_BLOCK, block.size)
            width = stop - start
            views = [row[:width] for row in rows]
            for view, piece in zip(views, held, strict=True):
                np.copyto(view, piece[start:stop])
            reduce(views, block[start:stop])

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
    network = pruned_network(count, frozenset({low, high}))

    def reduce(rows: list[NDArray[np.float32]], out: NDArray[np.float32]) -> None:
        scratch = np.empty_like(rows[0])
        apply_network(rows, network, scratch)
        if low == high:
            np.copyto(out, rows[low])
        else:
            np.add(rows[low], rows[high], out=out)
            out *= np.float32(0.5)

    return _gathered(source, inputs, begin, end, threads, reduce)


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
    network = pruned_network(count, ends)
    middle = [wire for wire in range(count) if wire not in ends]
    scale = np.float32(1.0 / len(middle))

    def reduce(rows: list[NDArray[np.float32]], out: NDArray[np.float32]) -> None:
        scratch = np.empty_like(rows[0])
        apply_network(rows, network, scratch)
        np.copyto(out, rows[middle[0]])
        for wire in middle[1:]:
            out += rows[wire]
        out *= scale

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
