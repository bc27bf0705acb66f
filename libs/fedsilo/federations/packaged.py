"""Federations on data that ships inside scikit-learn, for the tasks the shared data does not
cover: handwritten digits (multiclass, 10 classes, CSV files) and the diabetes progression
table (regression, Parquet files), each split over three sites of unequal size.

`prepare(folder)` writes the sites' files (`site-N.csv` / `site-N.parquet`) from the package's
copy; the example site configs under examples/sites/ read them from .fedsilo/example-data/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.algorithms.registry import parse_algorithm
from fedsilo.data import LabelRule, SiteConfig, TabularDatasetSpec
from fedsilo.federations.base import Federation
from fedsilo.jobs import JobSpec, ModelSpec
from fedsilo.tasks import TargetScaling

SITES = ("site-1", "site-2", "site-3")
SHARES = (0.5, 0.3, 0.2)  # unequal sizes: one large site, two smaller ones
SPLIT_SEED = 7
DIGIT_CLASSES: list[int | float | str] = list(range(10))
# The diabetes target (disease progression a year on, 25..346): its pooled mean and spread,
# rounded, so the model learns a target of unit scale at every site.
DIABETES_TARGET = TargetScaling(center=152.0, scale=77.0)


def _assign_sites(num_rows: int) -> list[np.ndarray]:
    order = np.random.default_rng(SPLIT_SEED).permutation(num_rows)
    cuts = np.cumsum([round(share * num_rows) for share in SHARES[:-1]])
    return [np.sort(part) for part in np.split(order, cuts)]


def prepare_digits(folder: Path) -> None:
    from sklearn.datasets import load_digits

    digits: Any = load_digits()
    names = [f"pixel_{i}" for i in range(digits.data.shape[1])]
    folder.mkdir(parents=True, exist_ok=True)
    for site, rows in zip(SITES, _assign_sites(digits.data.shape[0]), strict=True):
        table = np.column_stack([digits.data[rows], digits.target[rows]])
        header = ",".join([*names, "digit"])
        np.savetxt(
            folder / f"{site}.csv", table, fmt="%g", delimiter=",", header=header, comments=""
        )


def prepare_diabetes(folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_diabetes

    diabetes: Any = load_diabetes(scaled=False)
    folder.mkdir(parents=True, exist_ok=True)
    for site, rows in zip(SITES, _assign_sites(diabetes.data.shape[0]), strict=True):
        columns = {
            name: pa.array(diabetes.data[rows, i]) for i, name in enumerate(diabetes.feature_names)
        }
        columns["progression"] = pa.array(diabetes.target[rows])
        pq.write_table(pa.table(columns), folder / f"{site}.parquet")


def digits_spec(path: Path) -> TabularDatasetSpec:
    return TabularDatasetSpec(
        path=path,
        header=True,
        label=LabelRule(column="digit", task="multiclass", classes=DIGIT_CLASSES),
        test_fraction=0.25,
        split_seed=SPLIT_SEED,
    )


def diabetes_spec(path: Path) -> TabularDatasetSpec:
    return TabularDatasetSpec(
        path=path,
        label=LabelRule(column="progression", task="regression"),
        test_fraction=0.25,
        split_seed=SPLIT_SEED,
    )


def digits_site(site: str, folder: Path) -> SiteConfig:
    return SiteConfig(site=site, datasets={"digits": digits_spec(folder / f"{site}.csv")})


def diabetes_site(site: str, folder: Path) -> SiteConfig:
    return SiteConfig(site=site, datasets={"diabetes": diabetes_spec(folder / f"{site}.parquet")})


def digits_job(algorithm: str = "fedavg", seed: int = 0) -> JobSpec:
    return JobSpec(
        name=f"digits-multiclass-{algorithm}",
        dataset="digits",
        task="multiclass",
        classes=DIGIT_CLASSES,
        metric="macro_f1",
        model=ModelSpec(name="linear"),
        algorithm=parse_algorithm({"name": algorithm}),
        rounds=30,
        min_clients=2,
        local_steps=30,
        batch_size=32,
        learning_rate=0.05,
        optimizer="sgd",
        seed=seed,
    )


def diabetes_job(algorithm: str = "fedavg", seed: int = 0) -> JobSpec:
    return JobSpec(
        name=f"diabetes-regression-{algorithm}",
        dataset="diabetes",
        task="regression",
        target=DIABETES_TARGET,
        metric="r2",
        model=ModelSpec(name="linear"),
        algorithm=parse_algorithm({"name": algorithm}),
        rounds=20,
        min_clients=2,
        local_steps=30,
        batch_size=32,
        learning_rate=0.01,
        optimizer="sgd",
        seed=seed,
    )


FEDERATIONS = (
    Federation(
        name="digits",
        title="scikit-learn digits at three sites (multiclass, macro F1)",
        dataset="digits",
        sites=SITES,
        site_config=digits_site,
        job=digits_job,
        default_algorithm="fedavg",
        data_env="FEDSILO_DIGITS_DATA",
        data_folder="digits",
        marker="site-1.csv",
        prepare=prepare_digits,
    ),
    Federation(
        name="diabetes",
        title="scikit-learn diabetes at three sites (regression, R²)",
        dataset="diabetes",
        sites=SITES,
        site_config=diabetes_site,
        job=diabetes_job,
        default_algorithm="fedavg",
        data_env="FEDSILO_DIABETES_DATA",
        data_folder="diabetes",
        marker="site-1.parquet",
        prepare=prepare_diabetes,
    ),
)
