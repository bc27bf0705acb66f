"""The simulated sites: what each declares, where the control plane is, the population's
settings and counters."""

from __future__ import annotations

import logging
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedsilo import __version__
from fedsilo.federations.heart_disease import DATASET as HEART_DISEASE
from fedsilo.jobs import ModelSpec
from fedsilo.rpc.channels import CHUNK_BYTES
from fedsilo.v1 import (
    modelstore_pb2,
    registry_pb2,
)

log = logging.getLogger("fedsilo.simulation")


def model_layout(
    spec: ModelSpec, in_features: int, num_outputs: int = 1
) -> list[tuple[str, tuple[int, ...]]]:
    """The model zoo's state_dict layout (names and shapes, in vector order) without building
    the model: what `fedsilo.learning.manifest(build_model(...))` reports."""
    layout: list[tuple[str, tuple[int, ...]]] = []
    index, width = 0, in_features
    for hidden in spec.hidden:  # an mlp: Linear, ReLU[, Dropout] per hidden layer
        layout += [(f"{index}.weight", (hidden, width)), (f"{index}.bias", (hidden,))]
        index += 3 if spec.dropout > 0 else 2
        width = hidden
    layout += [(f"{index}.weight", (num_outputs, width)), (f"{index}.bias", (num_outputs,))]
    return layout


@dataclass(frozen=True)
class SimulatedSite:
    """What one simulated site declares: one dataset, its sizes, never any contents."""

    name: str
    dataset: str
    num_features: int
    num_train: int
    num_test: int

    def capabilities(self) -> registry_pb2.Capabilities:
        return registry_pb2.Capabilities(
            cores=1,
            gpu=False,
            datasets=[
                registry_pb2.DatasetInfo(
                    name=self.dataset,
                    num_train=self.num_train,
                    num_test=self.num_test,
                    num_features=self.num_features,
                )
            ],
            agent_version=f"{__version__}+simulated",
        )


@dataclass(frozen=True)
class PlaneAddresses:
    registry: str
    registry_enroll: str
    scheduler: str
    modelstore: str
    ca_pem: bytes


def _quantiles(values: array[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "p99": 0.0, "max": 0.0}
    data = np.frombuffer(values, dtype=np.float64)
    return {
        "median": float(np.median(data)),
        "p99": float(np.quantile(data, 0.99)),
        "max": float(data.max()),
    }


class PopulationStats:
    """What the population did, as counts; failures by RPC and status code. The first failure
    of each kind is logged, the rest only counted (a thousand clients repeat each other)."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.enrolled = 0
        self.enrollment_s = 0.0
        self.heartbeat_interval_s = 0.0  # as the registry asks for it
        self.heartbeats_ok = 0
        self.heartbeat_latency_s: array[float] = array("d")
        self.heartbeat_lag_s: array[float] = array("d")
        self.failures: Counter[str] = Counter()
        self.tasks: Counter[str] = Counter()
        self.polls = 0
        self.started = time.time()

    def failure(self, what: str, error: grpc.RpcError | Exception) -> None:
        code = error.code().name if isinstance(error, grpc.RpcError) else type(error).__name__
        key = f"{what}:{code}"
        if not self.failures[key]:
            details = error.details() if isinstance(error, grpc.RpcError) else str(error)
            log.warning("%s failed (%s): %s; further ones are only counted", what, code, details)
        self.failures[key] += 1

    def heartbeat_failures(self) -> int:
        return sum(n for key, n in self.failures.items() if key.startswith("heartbeat:"))

    def snapshot(self) -> dict[str, Any]:
        failed = self.heartbeat_failures()
        return {
            "clients": self.clients,
            "enrolled": self.enrolled,
            "enrollment_failures": sum(
                n for key, n in self.failures.items() if key.startswith("enroll")
            ),
            "enrollment_s": self.enrollment_s,
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "heartbeats": {
                "sent": self.heartbeats_ok + failed,
                "ok": self.heartbeats_ok,
                "failed": failed,
                "latency_s": _quantiles(self.heartbeat_latency_s),
                # How late the simulation itself sent beats: large values mean the load
                # generator, not the registry, fell behind.
                "send_lag_s": _quantiles(self.heartbeat_lag_s),
            },
            "polls": self.polls,
            "tasks": dict(sorted(self.tasks.items())),
            "failures": dict(sorted(self.failures.items())),
            "started_at": self.started,
            "updated_at": time.time(),
        }


def upload_chunks(payload: bytes, dtype: str) -> Iterator[modelstore_pb2.UploadChunk]:
    yield modelstore_pb2.UploadChunk(header=modelstore_pb2.UploadHeader(dtype=dtype))
    for start in range(0, len(payload), CHUNK_BYTES):
        yield modelstore_pb2.UploadChunk(data=payload[start : start + CHUNK_BYTES])


class SimulationSettings(BaseSettings):
    """FEDSILO_* settings of a simulated population (the addresses are `fedsilo up`'s)."""

    model_config = SettingsConfigDict(env_prefix="FEDSILO_", extra="ignore", frozen=True)

    clients: int = Field(100, ge=1, description="simulated sites, one client agent each")
    site_prefix: str = Field("sim", pattern=r"^[a-z0-9][a-z0-9-]{0,50}$")
    dataset: str = Field(HEART_DISEASE, description="the one dataset every site declares")
    num_features: int = Field(13, ge=1)
    num_train: int = Field(100, ge=1)
    num_test: int = Field(50, ge=1)
    poll_s: float = Field(10.0, gt=0, description="long-poll for tasks")
    train_s: float = Field(0.0, ge=0, description="simulated local training time per task")
    enroll_concurrency: int = Field(16, ge=1, description="sites enrolling at the same time")
    seed: int = 0
    registry_address: str
    registry_enroll_address: str
    scheduler_address: str
    modelstore_address: str
    tls_ca: Path = Field(..., description="the platform CA certificate (PEM)")
    api: str = Field(..., description="operator REST API, which issues enrollment tokens")
    operator_token_file: Path
    stats_file: Path | None = Field(None, description="JSON counts, rewritten while running")
    stats_interval_s: float = Field(5.0, gt=0)
    ready_file: Path | None = Field(None, description="written once every site has enrolled")
    log_level: str = "INFO"

    def sites(self) -> list[SimulatedSite]:
        width = len(str(self.clients - 1))
        return [
            SimulatedSite(
                f"{self.site_prefix}-{index:0{width}d}",
                self.dataset,
                self.num_features,
                self.num_train,
                self.num_test,
            )
            for index in range(self.clients)
        ]
