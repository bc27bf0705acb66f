"""Server-side optimizers applied to the averaged client delta.

FedAvg moves the global model by the mean delta. FedAdam, FedYogi and FedAdagrad treat the
negative mean delta as a pseudo-gradient and keep per-coordinate moments (Reddi et al.,
"Adaptive Federated Optimization", ICLR 2021, Algorithm 2, without bias correction). All state
is per coordinate, so each step runs on one shard of the vector independently of the others.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from fedsilo.algorithms.aggregate import Vector

State = dict[str, Vector]


class ServerOptimizer(Protocol):
    """Turns (global weights, mean client delta, state) into new weights and state."""

    state_names: ClassVar[tuple[str, ...]]

    def initial_state(self, size: int) -> State: ...

    def step(self, weights: Vector, delta: Vector, state: State) -> tuple[Vector, State]: ...


@dataclass(frozen=True)
class FedAvgServer:
    """w <- w + server_lr * delta (server_lr = 1 is plain FedAvg)."""

    server_lr: float = 1.0
    state_names: ClassVar[tuple[str, ...]] = ()

    def initial_state(self, size: int) -> State:
        return {}

    def step(self, weights: Vector, delta: Vector, state: State) -> tuple[Vector, State]:
        new = weights + np.float32(self.server_lr) * delta
        return new.astype(np.float32, copy=False), {}


@dataclass(frozen=True)
class AdaptiveServer(ABC):
    """Shared shape of FedAdagrad, FedAdam and FedYogi; only the second-moment rule differs."""

    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    state_names: ClassVar[tuple[str, ...]] = ("m", "v")

    def initial_state(self, size: int) -> State:
        # v starts at tau^2 as in Reddi et al., so the first steps are not huge.
        return {
            "m": np.zeros(size, dtype=np.float32),
            "v": np.full(size, self.tau**2, dtype=np.float32),
        }

    @abstractmethod
    def second_moment(self, v: Vector, delta_sq: Vector) -> Vector: ...

    def step(self, weights: Vector, delta: Vector, state: State) -> tuple[Vector, State]:
        m = np.float32(self.beta1) * state["m"] + np.float32(1.0 - self.beta1) * delta
        v = self.second_moment(state["v"], delta * delta)
        new = weights + np.float32(self.server_lr) * m / (np.sqrt(v) + np.float32(self.tau))
        return new.astype(np.float32, copy=False), {"m": m, "v": v}


@dataclass(frozen=True)
class FedAdagradServer(AdaptiveServer):
    def second_moment(self, v: Vector, delta_sq: Vector) -> Vector:
        return v + delta_sq


@dataclass(frozen=True)
class FedAdamServer(AdaptiveServer):
    def second_moment(self, v: Vector, delta_sq: Vector) -> Vector:
        return np.float32(self.beta2) * v + np.float32(1.0 - self.beta2) * delta_sq


@dataclass(frozen=True)
class FedYogiServer(AdaptiveServer):
    def second_moment(self, v: Vector, delta_sq: Vector) -> Vector:
        # Yogi's additive update: v grows or shrinks by at most (1 - beta2) * delta^2.
        change: Vector = np.float32(1.0 - self.beta2) * delta_sq * np.sign(v - delta_sq)
        return v - change
