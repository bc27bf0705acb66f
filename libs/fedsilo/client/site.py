"""What a site tells the registry about itself, and the per-site settings of local training."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from typing import Literal, TypedDict

import torch

from fedsilo import __version__
from fedsilo.data import SiteConfig, TabularData
from fedsilo.v1 import registry_pb2


class TrainingSettings(TypedDict):
    """The arguments plain training and DP-SGD share, taken from the job spec."""

    steps: int
    batch_size: int
    learning_rate: float
    optimizer: Literal["sgd", "adam"]
    seed: int


def local_seed(job_seed: int, round_: int, site: str) -> int:
    """Distinct, reproducible sampling per (job, round, site); independent of PYTHONHASHSEED."""
    return (job_seed * 7919 + round_ * 104_729 + zlib.crc32(site.encode())) & 0x7FFFFFFF


def describe_site(
    config: SiteConfig, load: Callable[[str], TabularData]
) -> registry_pb2.Capabilities:
    """What a site tells the registry: sizes of its datasets, never their contents."""
    datasets = []
    for name in sorted(config.datasets):
        data = load(name)
        datasets.append(
            registry_pb2.DatasetInfo(
                name=name,
                num_train=data.num_train,
                num_test=data.num_test,
                num_features=data.num_features,
            )
        )
    return registry_pb2.Capabilities(
        cores=os.cpu_count() or 1,
        gpu=torch.cuda.is_available(),
        datasets=datasets,
        agent_version=__version__,
    )
