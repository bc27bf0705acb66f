"""Compiled loops (numba) for the passes numpy would make several times over the inputs.
Importing this module imports numba (a quarter of a second); the aggregator does so on its
first round that needs one. Compiled code is cached on disk (numba's cache: beside this
file, or the user's cache directory, or NUMBA_CACHE_DIR), so a restarted replica loads it
instead of compiling again."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def norm_and_dot(row: NDArray[np.float32], reference: NDArray[np.float32]) -> tuple[float, float]:
    """(|row|^2, row . reference), accumulated in float64 (reassociated, so that LLVM
    vectorises the sums): one read of the row."""
    total = 0.0
    dot = 0.0
    for j in range(reference.shape[0]):
        value = np.float64(row[j])
        total += value * value
        dot += value * np.float64(reference[j])
    return total, dot


def read_only(values: NDArray[Any]) -> NDArray[np.float32]:
    """A read-only float32 view (no copy for float32 input): the one array type every
    compiled loop is given, whatever memory the values live in (a received message, a mapped
    file), so each loop compiles once."""
    view = np.asarray(values, dtype=np.float32).view()
    view.flags.writeable = False
    return view


# Columns of a block sorted at a time by select_tiled: every input's values of a tile stay in
# the first-level cache while the network passes over them.
TILE = 64


@numba.njit(nogil=True, cache=True)
def select_tiled(
    stacked: NDArray[np.float32],
    network: NDArray[np.int32],
    wires: NDArray[np.int32],
    weights: NDArray[np.float32],
    out: NDArray[np.float32],
) -> None:
    """out[j] = sum_k weights[k] * (wire wires[k] after the network) over the columns of
    `stacked` (inputs x coordinates), tile by tile; the network is data (rows of (low,
    high)), so one compiled loop serves every number of inputs: the selection for the large
    federations whose unrolled loop (fedsilo.aggregator.selection) would take LLVM too long
    to compile."""
    count, size = stacked.shape
    tile = np.empty((count, TILE), dtype=np.float32)
    for start in range(0, size, TILE):
        width = min(TILE, size - start)
        for wire in range(count):
            for j in range(width):
                tile[wire, j] = stacked[wire, start + j]
        for c in range(network.shape[0]):
            low = network[c, 0]
            high = network[c, 1]
            for j in range(width):
                a = tile[low, j]
                b = tile[high, j]
                tile[low, j] = min(a, b)
                tile[high, j] = max(a, b)
        for j in range(width):
            total = np.float32(0.0)
            for k in range(wires.shape[0]):
                total += weights[k] * tile[wires[k], j]
            out[start + j] = total
