"""Streaming facts about an upload: element count and NaN/Inf count, in bounded memory."""

from __future__ import annotations

import numpy as np

DTYPES: dict[str, np.dtype[np.generic]] = {
    "float32": np.dtype("<f4"),
    "uint32": np.dtype("<u4"),
    "bytes": np.dtype("u1"),
}


class ElementScanner:
    """Fed chunk by chunk; chunks need not align with element boundaries."""

    def __init__(self, dtype: str) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
        self.dtype = dtype
        self._np_dtype = DTYPES[dtype]
        self._carry = b""
        self.num_elements = 0
        self.num_nonfinite = 0

    def feed(self, chunk: bytes | memoryview) -> None:
        data = self._carry + chunk if self._carry else chunk
        usable = len(data) - len(data) % self._np_dtype.itemsize
        self._carry = bytes(data[usable:])
        values = np.frombuffer(data, dtype=self._np_dtype, count=usable // self._np_dtype.itemsize)
        self.num_elements += values.size
        if self._np_dtype.kind == "f":
            self.num_nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))

    def finish(self) -> None:
        if self._carry:
            raise ValueError(
                f"{len(self._carry)} trailing bytes: a {self.dtype} blob must be a whole number "
                f"of {self._np_dtype.itemsize}-byte elements"
            )
