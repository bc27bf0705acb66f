"""Order statistics across a few inputs, for millions of coordinates at once: a sorting
network (Batcher's odd-even merge sort), pruned to the outputs a rule needs, compiled with
numba into one loop over the coordinates that holds each coordinate's values in registers
and runs the network's comparators as branch-free min/max (vectorised by LLVM across
coordinates). The inputs are read once, straight from the update's memory, and nothing is
written but the output: the coordinate-wise median of 10 sites costs about what their
weighted mean does (bench/robust_timing.py), where np.median or np.partition along the
short axis costs many times more."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

Comparator = tuple[int, int]  # (low wire, high wire): min goes low, max goes high
Term = tuple[int, float]  # (output wire, weight)
# (each input's values over a block, the output block): out = sum of weight * wire
Kernel = Callable[[Sequence[NDArray[Any]], NDArray[np.float32]], None]


@cache
def sorting_network(count: int) -> tuple[Comparator, ...]:
    """Batcher's odd-even merge sort for `count` wires (padded to a power of two; a padded
    wire holds +inf, so comparators touching one change nothing and are left out)."""
    size = 1
    while size < count:
        size *= 2
    out: list[Comparator] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    low, high = i + j, i + j + k
                    if low // (2 * p) == high // (2 * p) and high < count:
                        out.append((low, high))
            k //= 2
        p *= 2
    return tuple(out)


@cache
def pruned_network(count: int, outputs: frozenset[int]) -> tuple[Comparator, ...]:
    """The comparators of sorting_network(count) that the given output wires depend on."""
    needed = set(outputs)
    kept: list[Comparator] = []
    for low, high in reversed(sorting_network(count)):
        if low in needed or high in needed:
            kept.append((low, high))
            needed.update((low, high))
    return tuple(reversed(kept))


def kernel_source(count: int, placed: frozenset[int], terms: tuple[Term, ...]) -> str:
    """Python source of the loop: load every input's value of a coordinate, run the network
    pruned to the `placed` wires (each then holds its order statistic; the other wires hold
    the remaining values in some order), write the weighted sum of the terms' wires. Only
    integers and floats of the platform's own go into it."""
    network = pruned_network(count, placed)
    lines = ["def select(rows, out):", "    for j in range(out.shape[0]):"]
    lines += [f"        v{wire} = rows[{wire}][j]" for wire in range(count)]
    for low, high in network:
        lines.append(f"        v{low}, v{high} = min(v{low}, v{high}), max(v{low}, v{high})")
    total = " + ".join(f"np.float32({weight!r}) * v{wire}" for wire, weight in terms)
    lines.append(f"        out[j] = {total}")
    return "\n".join(lines) + "\n"


# Up to this many inputs the network is unrolled into one loop (compiled in about a second
# for 20 inputs, four for 50, and longer the more: the comparators grow as n log^2 n);
# beyond, a compiled loop that reads the network as data and sorts tiles of coordinates in
# cache (about five times slower per comparator, compiled once for every count).
UNROLLED_INPUTS = 32


@cache
def selection_kernel(count: int, placed: frozenset[int], terms: tuple[Term, ...]) -> Kernel:
    """out[j] = sum(weight * wire's value at j) over the (wire, weight) terms, after the
    network has put the `placed` wires' order statistics in place (kernel_source): the
    median places and sums the middle wires; the trimmed mean places the ends and sums the
    rest. Compiled once per process for each (count, placed, terms); the compiled loop
    releases the GIL, so threads folding disjoint ranges run at once."""
    wires = placed | {wire for wire, _ in terms}
    if not terms or any(not 0 <= wire < count for wire in wires):
        raise ValueError(f"selection wires {sorted(wires)} fall outside 0..{count - 1}")
    if count > UNROLLED_INPUTS:
        return _tiled_kernel(count, placed, terms)
    import numba  # here, not at the top: only the rounds that need it pay for LLVM

    from fedsilo.aggregator.kernels import read_only

    namespace: dict[str, Any] = {"np": np}
    exec(compile(kernel_source(count, placed, terms), f"<selection {count}>", "exec"), namespace)
    compiled = numba.njit(nogil=True, boundscheck=False)(namespace["select"])

    def run(rows: Sequence[NDArray[Any]], out: NDArray[np.float32]) -> None:
        _check_rows(rows, out, count)
        # One signature for every call: read-only float32 views, whatever memory they view.
        views = tuple(read_only(row) for row in rows)
        compiled(views, out)  # the first call compiles (numba's compiler lock: once)

    return run


def _tiled_kernel(count: int, placed: frozenset[int], terms: tuple[Term, ...]) -> Kernel:
    """selection_kernel for many inputs: each block's pieces are copied into one stacked
    array (one more pass over the block) for kernels.select_tiled."""
    from fedsilo.aggregator.kernels import select_tiled

    network = np.array(pruned_network(count, placed), dtype=np.int32).reshape(-1, 2)
    wires = np.array([wire for wire, _ in terms], dtype=np.int32)
    weights = np.array([weight for _, weight in terms], dtype=np.float32)

    def run(rows: Sequence[NDArray[Any]], out: NDArray[np.float32]) -> None:
        _check_rows(rows, out, count)
        stacked = np.empty((count, out.shape[0]), dtype=np.float32)
        for wire, row in enumerate(rows):
            stacked[wire] = row
        select_tiled(stacked, network, wires, weights, out)

    return run


def _check_rows(rows: Sequence[NDArray[Any]], out: NDArray[np.float32], count: int) -> None:
    if len(rows) != count or any(row.shape != out.shape for row in rows):
        shapes = sorted({row.shape for row in rows})
        raise ValueError(
            f"selection over {count} inputs of {out.shape}: got {len(rows)} of {shapes}"
        )
