"""Split a coordinate range across threads.

Mask expansion (`cryptography`'s update_into) and numpy's ufuncs release the GIL, and every
mask stream is seekable, so contiguous parts of a vector are masked, unmasked or quantized
by separate threads with results bit-identical to a single pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

# Below this many coordinates per part a thread costs more than it saves.
MIN_PART_COORDINATES = 1 << 18


def available_cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_in_parts(length: int, threads: int | None, work: Callable[[int, int], None]) -> None:
    """Call work(start, stop) over contiguous parts of range(length), one thread per part.

    threads: at most this many parts; None for one per available core. Parts start at
    multiples of 16 coordinates, so that none starts inside a 64-byte keystream line.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1 (or None for every core), got {threads}")
    wanted = available_cores() if threads is None else threads
    parts = max(1, min(wanted, length // MIN_PART_COORDINATES))
    if parts == 1:
        work(0, length)
        return
    bounds = [length * i // parts // 16 * 16 for i in range(parts)] + [length]
    with ThreadPoolExecutor(max_workers=parts, thread_name_prefix="secagg") as pool:
        # list() re-raises the first exception of any part.
        list(pool.map(work, bounds[:-1], bounds[1:]))
