"""Folding the sites' inputs over a coordinate range, block by block, in place: what every
aggregation rule reads its inputs with, and the weighted sum that FedAvg's mean is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedsilo.aggregator.sources import BlobSource
from fedsilo.algorithms.aggregate import Vector
from fedsilo.parallel import run_in_parts
from fedsilo.v1 import aggregator_pb2

# Coordinates of the output folded at a time: the output's block (2 MiB) stays in cache while
# every input's piece streams through once, as a single `weights @ stacked` would read it;
# few enough calls per input that threads seldom wait for the GIL.
CHUNK_COORDINATES = 1 << 19
# Shards from this size on add with BLAS; below, numpy's temporaries cost next to nothing.
AXPY_COORDINATES = 1 << 20
# (input index, the input's values for the block, the output block)
Accumulate = Callable[[int, NDArray[Any], NDArray[Any]], None]


def fold_inputs(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    begin: int,
    end: int,
    out: NDArray[Any],
    accumulate: Accumulate,
    threads: int = 1,
) -> None:
    """Fold every input's [begin, end) into `out` (end - begin values), block by block: for
    each block of CHUNK_COORDINATES, `accumulate(i, values, out_block)` for the inputs in
    order. Input pieces are views of the source's memory where it has them (a mapped file, a
    received chunk), so each byte of an update is read once; memory is the output plus one
    piece per input, not len(inputs) * (end - begin) values.

    With threads > 1 the range is cut into up to that many contiguous parts, folded at once
    into disjoint blocks of `out` (fedsilo.parallel.run_in_parts)."""
    count = end - begin
    if out.shape != (count,):
        raise ValueError(f"out holds {out.shape} values; [{begin}, {end}) needs {count}")
    run_in_parts(
        count,
        threads,
        lambda start, stop: _fold_part(source, inputs, begin, start, stop, out, accumulate),
    )


def _fold_part(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    begin: int,
    start: int,
    stop: int,
    out: NDArray[Any],
    accumulate: Accumulate,
) -> None:
    """fold_inputs over out[start:stop], coordinates [begin + start, begin + stop)."""
    dtype = out.dtype.newbyteorder("<")
    readers = [
        source.open_range(
            item.digest,
            (begin + start) * dtype.itemsize,
            (stop - start) * dtype.itemsize,
            f"input of {item.client_id} ({item.digest[:12]})",
        )
        for item in inputs
    ]
    for offset in range(start, stop, CHUNK_COORDINATES):
        block = out[offset : min(offset + CHUNK_COORDINATES, stop)]
        for index, reader in enumerate(readers):
            accumulate(index, np.frombuffer(reader.take(block.nbytes), dtype), block)
    for reader in readers:
        reader.finish()


def weighted_sum(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    weights: NDArray[Any],
    begin: int,
    end: int,
    threads: int = 1,
) -> Vector:
    """sum_i weights[i] * input_i over [begin, end), in float32: the first input scaled into
    the output block, each further one added to it. On large shards the addition is BLAS's
    axpy without the GIL (fedsilo.aggregator.blas): no temporaries, each byte of an input
    read once, and threads folding at once; BLAS should be single-threaded
    (single_threaded_blas)."""
    total = np.empty(end - begin, dtype=np.float32)
    scale = [np.float32(weight) for weight in weights]
    if end - begin >= AXPY_COORDINATES:
        # Here, not at the top: scipy costs a process about 14 MiB, worth it for large shards.
        from fedsilo.aggregator.blas import axpy, scalar

        scalars = [scalar(float(weight)) for weight in scale]

        def accumulate(index: int, values: NDArray[Any], block: NDArray[Any]) -> None:
            if index == 0:
                np.multiply(values, scale[0], out=block)
            else:
                axpy(values, block, scalars[index])

    else:

        def accumulate(index: int, values: NDArray[Any], block: NDArray[Any]) -> None:
            if index == 0:
                np.multiply(values, scale[0], out=block)
            else:
                block += values * scale[index]

    fold_inputs(source, inputs, begin, end, total, accumulate, threads)
    return total
