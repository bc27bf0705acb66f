"""Quantization and packing of many update values into one Paillier plaintext (BatchCrypt).

A value x in [-clip, clip] maps to a level round((x + clip) * scale) in [0, 2^value_bits - 1].
Levels sit in fixed-width slots, big-endian within a plaintext; each slot has headroom bits
above the value bits, so that adding the plaintexts of up to num_clients clients (which is
what multiplying their ciphertexts does) never carries from one slot into the next. Slots are
exactly value_bits + headroom_bits wide, not rounded to bytes: every bit of a plaintext that
can hold a value does, so an update takes as few ciphertexts (the whole cost) as it can.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedsilo.fixedpoint import sum_from_levels, to_levels

# Slots are unpacked into uint64 lanes.
MAX_SLOT_BITS = 64
# Values packed or unpacked at a time: bit-level work takes 64 bytes per value.
_CHUNK_VALUES = 1 << 16
# Levels are computed in float64, which is exact for integers below 2^53.
MAX_VALUE_BITS = 48


@dataclass(frozen=True, kw_only=True)
class PackingSpec:
    """How updates are quantized and packed; a job's clients and keymanager share one.

    key_bits: bits of the Paillier modulus n. num_clients: the most uploads ever summed into
    one aggregate. clip: per-coordinate bound, values beyond it are clipped. value_bits:
    quantization levels of one client's value.
    """

    key_bits: int
    num_clients: int
    clip: float
    value_bits: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.value_bits <= MAX_VALUE_BITS:
            raise ValueError(f"value_bits must be in [1, {MAX_VALUE_BITS}], got {self.value_bits}")
        if self.num_clients < 1:
            raise ValueError(f"num_clients must be at least 1, got {self.num_clients}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if self.slot_bits > MAX_SLOT_BITS:
            raise ValueError(
                f"a slot needs {self.slot_bits} bits (value_bits={self.value_bits} plus "
                f"{self.headroom_bits} headroom bits for num_clients={self.num_clients}), "
                f"more than {MAX_SLOT_BITS}; lower value_bits or num_clients"
            )
        if self.slots_per_plaintext < 1:
            raise ValueError(
                f"key_bits={self.key_bits} leaves no room for one {self.slot_bits}-bit slot; "
                f"use a key of at least {self.slot_bits + 2} bits"
            )

    @property
    def headroom_bits(self) -> int:
        """Bits above the value bits that hold the carries of a sum of num_clients levels."""
        # ceil(log2(num_clients + 1)) without floating point.
        return self.num_clients.bit_length()

    @property
    def slot_bits(self) -> int:
        """Width of one slot: the value bits and their headroom."""
        return self.value_bits + self.headroom_bits

    @property
    def slots_per_plaintext(self) -> int:
        """Values per plaintext; the packed slots stay below 2^(key_bits - 2) < n."""
        return (self.key_bits - 2) // self.slot_bits

    @property
    def max_level(self) -> int:
        """The largest quantized value of one client."""
        return (1 << self.value_bits) - 1

    @property
    def scale(self) -> float:
        """Quantization levels per unit of the float value."""
        return self.max_level / (2 * self.clip)

    def num_plaintexts(self, num_values: int) -> int:
        """Plaintexts that carry `num_values` values."""
        if num_values < 0:
            raise ValueError(f"num_values must not be negative, got {num_values}")
        return -(-num_values // self.slots_per_plaintext)

    def num_ciphertexts(self, num_values: int) -> int:
        """Ciphertexts in one upload of `num_values` values: the canary (index 0), then data."""
        return self.num_plaintexts(num_values) + 1


def quantize(
    values: NDArray[np.floating], spec: PackingSpec, rng: np.random.Generator | None = None
) -> NDArray[np.uint64]:
    """Clip, scale and round `values` (flattened) to levels in [0, spec.max_level].

    With `rng`, rounding is stochastic (unbiased, error below one step 1/scale); without,
    to the nearest level (error at most half a step).
    """
    levels = to_levels(values, spec.clip, spec.scale, spec.max_level, rng)
    return levels.astype(np.uint64)


def pack(levels: NDArray[np.uint64], spec: PackingSpec) -> list[int]:
    """Pack one client's levels into plaintexts, slot_bits each, big-endian.

    The last plaintext is padded with zero slots.
    """
    if levels.ndim != 1 or levels.dtype.kind not in "ui":
        raise ValueError(f"levels must be a 1-D integer array, got {levels.ndim}-D {levels.dtype}")
    if levels.size and (int(levels.min()) < 0 or int(levels.max()) > spec.max_level):
        raise ValueError(
            f"levels must be in [0, {spec.max_level}] (value_bits={spec.value_bits}) to leave "
            f"the slot headroom free, got [{int(levels.min())}, {int(levels.max())}]; "
            "quantize the values first"
        )
    slots, width = spec.slots_per_plaintext, _plaintext_bytes(spec)
    lead = 8 * width - slots * spec.slot_bits  # zero bits before the first slot
    num_plaintexts = spec.num_plaintexts(levels.size)
    per_chunk = max(1, _CHUNK_VALUES // slots)
    plaintexts: list[int] = []
    for first in range(0, num_plaintexts, per_chunk):
        count = min(per_chunk, num_plaintexts - first)
        lanes = np.zeros(count * slots, ">u8")
        piece = levels[first * slots : (first + count) * slots]
        lanes[: piece.size] = piece
        bits = np.unpackbits(lanes.view(np.uint8).reshape(-1, 8), axis=1)
        rows = np.zeros((count, 8 * width), np.uint8)
        rows[:, lead:] = bits[:, MAX_SLOT_BITS - spec.slot_bits :].reshape(count, -1)
        data = memoryview(np.packbits(rows, axis=1).tobytes())
        plaintexts.extend(
            int.from_bytes(data[i * width : (i + 1) * width], "big") for i in range(count)
        )
    return plaintexts


def unpack(plaintexts: Sequence[int], spec: PackingSpec, num_values: int) -> NDArray[np.uint64]:
    """The first `num_values` slots of `plaintexts`: sums of up to num_clients levels each."""
    expected = spec.num_plaintexts(num_values)
    if len(plaintexts) != expected:
        raise ValueError(f"{num_values} values take {expected} plaintexts, got {len(plaintexts)}")
    slots, width = spec.slots_per_plaintext, _plaintext_bytes(spec)
    lead = 8 * width - slots * spec.slot_bits
    per_chunk = max(1, _CHUNK_VALUES // slots)
    sums = np.empty(expected * slots, np.uint64)
    for first in range(0, expected, per_chunk):
        chunk = plaintexts[first : first + per_chunk]
        data = []
        for index, plaintext in enumerate(chunk, start=first):
            value = int(plaintext)
            if not 0 <= value < 1 << (slots * spec.slot_bits):
                raise ValueError(
                    f"plaintext {index} has {value.bit_length()} bits, beyond the "
                    f"{slots * spec.slot_bits} bits of {slots} slots; it was not packed with "
                    "this spec"
                )
            data.append(value.to_bytes(width, "big"))
        rows = np.unpackbits(np.frombuffer(b"".join(data), np.uint8).reshape(len(chunk), width))
        bits = rows.reshape(len(chunk), -1)[:, lead:].reshape(-1, spec.slot_bits)
        lanes = np.zeros((len(bits), MAX_SLOT_BITS), np.uint8)
        lanes[:, MAX_SLOT_BITS - spec.slot_bits :] = bits
        sums[first * slots : first * slots + len(bits)] = np.packbits(lanes, axis=1).view(">u8")[
            :, 0
        ]
    if np.any(sums[num_values:]):
        raise ValueError(
            f"padding slots past value {num_values} are not zero; num_values does not match "
            "what was packed"
        )
    return sums[:num_values]


def _plaintext_bytes(spec: PackingSpec) -> int:
    return -(-spec.slots_per_plaintext * spec.slot_bits // 8)


def dequantize_sum(
    level_sums: NDArray[np.uint64], spec: PackingSpec, count: int
) -> NDArray[np.float32]:
    """The float SUM of `count` clients' values from the sum of their levels."""
    return sum_from_levels(level_sums, spec.clip, spec.scale, count, spec.num_clients)
