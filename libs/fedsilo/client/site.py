"""What a site tells the registry about itself, and the per-site settings of local training."""

from __future__ import annotations

import logging
import os
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal, TypedDict

import torch

from fedsilo import __version__
from fedsilo.client.tasks import TaskDeclined
from fedsilo.data import DatasetError, SiteConfig, TabularData, load_tabular, resolve_task
from fedsilo.jobs import JobSpec
from fedsilo.v1 import registry_pb2

log = logging.getLogger("fedsilo.client")


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


def training_settings(spec: JobSpec, round_: int, site: str) -> TrainingSettings:
    """What a site trains a round with: the job's settings and the site's own seed."""
    return TrainingSettings(
        steps=spec.local_steps,
        batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        optimizer=spec.optimizer,
        seed=local_seed(spec.seed, round_, site),
    )


class SiteDatasets:
    """A site's declared datasets, each loaded for a job's task as this site's label resolves
    it; the last few (dataset, task) pairs stay in memory."""

    def __init__(self, config: SiteConfig, keep: int = 4) -> None:
        self._config = config
        self._keep = keep
        self._loaded: OrderedDict[tuple[str, str], TabularData] = OrderedDict()

    def for_job(self, job: JobSpec) -> TabularData:
        """Data that does not fit the job (an unknown class, a negative time) declines for
        good, naming the file and the row."""
        try:
            spec = self._config.dataset(job.dataset)
        except KeyError as error:
            raise TaskDeclined(str(error.args[0]) if error.args else str(error)) from None
        try:
            task = resolve_task(job, spec.label)
        except ValueError as error:
            raise TaskDeclined(f"dataset '{job.dataset}': {error}") from None
        key = (job.dataset, task.key())
        if key not in self._loaded:
            try:
                self._loaded[key] = load_tabular(spec, task)
            except DatasetError as error:
                raise TaskDeclined(f"dataset '{job.dataset}': {error}") from None
            while len(self._loaded) > self._keep:
                self._loaded.popitem(last=False)
        return self._loaded[key]

    def describe(self, name: str) -> TabularData:
        """The dataset for the task its label implies (what the registry is told)."""
        return self.for_job(JobSpec(dataset=name))


def describe_site(
    config: SiteConfig, load: Callable[[str], TabularData]
) -> registry_pb2.Capabilities:
    """What a site tells the registry: sizes of its datasets, never their contents. A dataset
    that does not load for the task its label implies is still named, without sizes (its
    problem is logged; a job naming it gets the site's decline, with the reason): the site
    still enrolls, and a multiclass label waits for a job's classes."""
    datasets = []
    for name in sorted(config.datasets):
        try:
            data = load(name)
        except TaskDeclined as problem:
            log.warning("dataset %s does not load on its own: %s", name, problem)
            datasets.append(registry_pb2.DatasetInfo(name=name))
            continue
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
