"""The flat-vector contract: a model's float tensors as one little-endian float32 vector.

Everything on the wire (updates, global models, aggregation shards) is this vector; the
manifest says which slice is which tensor, so a data scientist can rebuild a state_dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

Vector = NDArray[np.float32]
WIRE_DTYPE = np.dtype("<f4")


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the state_dict: its name and shape, in vector order."""

    name: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorEntry:
        return cls(name=str(data["name"]), shape=tuple(int(dim) for dim in data["shape"]))


def manifest(model: nn.Module) -> list[TensorEntry]:
    """The float tensors of the model's state_dict, in state_dict order."""
    return [
        TensorEntry(name, tuple(tensor.shape))
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point()
    ]


def manifest_to_json(entries: Sequence[TensorEntry]) -> list[dict[str, Any]]:
    return [entry.to_json() for entry in entries]


def manifest_from_json(data: Sequence[Mapping[str, Any]]) -> list[TensorEntry]:
    return [TensorEntry.from_json(entry) for entry in data]


def vector_size(entries: Sequence[TensorEntry]) -> int:
    return sum(entry.size for entry in entries)


def flatten(model: nn.Module) -> Vector:
    """The model's float tensors concatenated in manifest order, as little-endian float32."""
    parts = [
        tensor.detach().to("cpu", torch.float32).reshape(-1).numpy()
        for tensor in model.state_dict().values()
        if tensor.is_floating_point()
    ]
    if not parts:
        return np.zeros(0, dtype=WIRE_DTYPE)
    return np.concatenate(parts).astype(WIRE_DTYPE, copy=False)


def load_flat(model: nn.Module, vector: NDArray[Any]) -> None:
    """Overwrite the model's float tensors, in place, from a vector in manifest order."""
    entries = manifest(model)
    state = state_dict_from_flat(entries, vector)
    with torch.no_grad():
        current = model.state_dict()
        for name, tensor in state.items():
            current[name].copy_(tensor)


def state_dict_from_flat(
    entries: Sequence[TensorEntry], vector: NDArray[Any]
) -> dict[str, torch.Tensor]:
    """Tensors named as in the manifest, ready for `model.load_state_dict(..., strict=False)`.

    Only float tensors travel, so a model with integer buffers (BatchNorm's counters) needs
    strict=False; for the zoo's models the dict is complete and strict loading works.
    """
    expected = vector_size(entries)
    array = np.asarray(vector)
    if array.ndim != 1 or array.size != expected:
        raise ValueError(
            f"parameter vector of shape {array.shape} holds {array.size} values, but the "
            f"manifest ({len(entries)} tensors) expects a flat vector of {expected}"
        )
    # A native-order float32 copy: torch refuses big-endian data, and callers keep their vector.
    values = torch.from_numpy(array.astype(np.float32, copy=True))
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for entry in entries:
        out[entry.name] = values[offset : offset + entry.size].reshape(entry.shape)
        offset += entry.size
    return out
