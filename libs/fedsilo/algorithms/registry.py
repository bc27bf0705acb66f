"""Named algorithms: a job says `algorithm: {name: fedprox, mu: 0.01}`, never an import path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from fedsilo.algorithms.server_optimizers import (
    FedAdagradServer,
    FedAdamServer,
    FedAvgServer,
    FedYogiServer,
    ServerOptimizer,
)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FedAvgParams(_Params):
    """McMahan et al. 2017: sample-weighted mean of local models."""

    name: Literal["fedavg"] = "fedavg"
    server_lr: float = Field(1.0, gt=0)


class FedProxParams(_Params):
    """Li et al. 2020: FedAvg whose clients add mu/2 * ||w - w_global||^2 to their loss."""

    name: Literal["fedprox"] = "fedprox"
    mu: float = Field(0.01, ge=0)
    server_lr: float = Field(1.0, gt=0)


class _AdaptiveParams(_Params):
    server_lr: float = Field(0.1, gt=0, description="server learning rate (eta)")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(
        1e-3, gt=0, description="adaptivity: larger is closer to FedAvg with momentum"
    )


class FedAdamParams(_AdaptiveParams):
    name: Literal["fedadam"] = "fedadam"


class FedYogiParams(_AdaptiveParams):
    name: Literal["fedyogi"] = "fedyogi"


class FedAdagradParams(_AdaptiveParams):
    name: Literal["fedadagrad"] = "fedadagrad"


AlgorithmParams = Annotated[
    FedAvgParams | FedProxParams | FedAdamParams | FedYogiParams | FedAdagradParams,
    Field(discriminator="name"),
]

_ALGORITHM_ADAPTER: TypeAdapter[AlgorithmParams] = TypeAdapter(AlgorithmParams)


def parse_algorithm(data: Mapping[str, Any]) -> AlgorithmParams:
    """Validate `{"name": ..., params}`; defaults fill what is not given."""
    params: AlgorithmParams = _ALGORITHM_ADAPTER.validate_python(dict(data))
    return params


ALGORITHM_NAMES: tuple[str, ...] = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad")


def server_optimizer(params: AlgorithmParams) -> ServerOptimizer:
    """The server step an algorithm's aggregation ends with."""
    match params:
        case FedAvgParams() | FedProxParams():
            return FedAvgServer(server_lr=params.server_lr)
        case FedAdamParams():
            return FedAdamServer(params.server_lr, params.beta1, params.beta2, params.tau)
        case FedYogiParams():
            return FedYogiServer(params.server_lr, params.beta1, params.beta2, params.tau)
        case FedAdagradParams():
            return FedAdagradServer(params.server_lr, params.beta1, params.beta2, params.tau)
    raise ValueError(f"unknown algorithm {params!r}")


def proximal_mu(params: AlgorithmParams) -> float:
    """Weight of the client-side proximal term; zero for every algorithm but FedProx."""
    return params.mu if isinstance(params, FedProxParams) else 0.0
