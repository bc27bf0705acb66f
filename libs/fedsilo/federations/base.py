"""What a reference federation is: its sites, their declarations, its job and baselines."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedsilo.data import SiteConfig
from fedsilo.jobs import JobSpec


@dataclass(frozen=True)
class Federation:
    name: str
    title: str
    dataset: str  # the dataset name every site declares and the job names
    sites: tuple[str, ...]
    site_config: Callable[[str, Path], SiteConfig]  # (site, data folder) -> its declaration
    job: Callable[[str, int], JobSpec]  # (algorithm, seed) -> the reference job
    default_algorithm: str
    # Where the data is: an environment variable, the folder's name under shared/data, and a
    # file inside it that proves it is the right folder.
    data_env: str
    data_folder: str
    marker: str
    # The pooled baseline's budget: epochs over the union of the train splits; None: as
    # many steps as the federated job's sites take together.
    pooled_epochs: int | None = None
    # For data that ships in a package: write the sites' files into the folder.
    prepare: Callable[[Path], None] | None = None
