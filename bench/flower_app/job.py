"""What the ClientApp and the ServerApp share: the run config's job and the site of a node."""

from __future__ import annotations

import zlib
from pathlib import Path

from flwr.app import UserConfig

from fedsilo.data import TabularData, load_tabular
from fedsilo.federations import heart_disease
from fedsilo.jobs import JobSpec

SITES: tuple[str, ...] = tuple(heart_disease.HOSPITALS)


def job_spec(run_config: UserConfig) -> JobSpec:
    """The fedsilo job spec bench/rounds.py put in the run config, unchanged."""
    return JobSpec.from_json(str(run_config["job-spec"]))


def site_of(node_config: UserConfig) -> str:
    """The hospital a SuperNode holds: partition-id indexes the federation's hospitals."""
    return SITES[int(node_config["partition-id"])]


def load_site(site: str, run_config: UserConfig) -> TabularData:
    """The hospital's file through fedsilo's loader: FLamby's preprocessing and split."""
    data_dir = Path(str(run_config["data-dir"]))
    spec = heart_disease.site_config(site, data_dir).dataset(heart_disease.DATASET)
    return load_tabular(spec)


def local_seed(job_seed: int, round_: int, site: str) -> int:
    """fedsilo.client.agent.local_seed, copied: that module loads fedsilo's gRPC stubs, built
    for a newer protobuf than flwr allows. The same seed gives the same minibatches."""
    return (job_seed * 7919 + round_ * 104_729 + zlib.crc32(site.encode())) & 0x7FFFFFFF
