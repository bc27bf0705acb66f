"""GBSG2: breast-cancer recurrence at four centres, a Cox model scored by the C-index.

Each centre's file (`centre-N/gbsg2.csv`, lifelines' `load_gbsg2` split over four centres with
a case-mix shift) carries its own 75/25 train/test split in the `split` column. Hormonal
therapy and menopausal status are one-hot, tumour grade ordinal (I < II < III); every numeric
column is standardised by the centre's own training split.
"""

from __future__ import annotations

from pathlib import Path

from fedsilo.algorithms.registry import parse_algorithm
from fedsilo.data import LabelRule, OneHot, Ordinal, SiteConfig, TabularDatasetSpec
from fedsilo.federations.base import Federation
from fedsilo.jobs import JobSpec, ModelSpec

DATASET = "gbsg2"
CENTRES = ("centre-1", "centre-2", "centre-3", "centre-4")


def dataset_spec(path: Path) -> TabularDatasetSpec:
    return TabularDatasetSpec(
        path=path,
        header=True,
        label=LabelRule(time="time", event="cens"),
        one_hot=[
            OneHot(column="horTh", categories=["no", "yes"]),
            OneHot(column="menostat", categories=["Pre", "Post"]),
        ],
        ordinal=[Ordinal(column="tgrade", categories=["I", "II", "III"])],
        split_column="split",
        standardize=True,
    )


def site_config(site: str, data_dir: Path) -> SiteConfig:
    if site not in CENTRES:
        raise KeyError(f"unknown centre '{site}'; the federation has {', '.join(CENTRES)}")
    return SiteConfig(site=site, datasets={DATASET: dataset_spec(data_dir / site / "gbsg2.csv")})


def reference_job(algorithm: str = "fedavg", seed: int = 0) -> JobSpec:
    """20 rounds of 20 minibatch steps (batch 32: a risk set needs company), SGD at 0.05."""
    return JobSpec(
        name=f"gbsg2-cox-{algorithm}",
        dataset=DATASET,
        task="survival",
        metric="c_index",
        model=ModelSpec(name="cox"),
        algorithm=parse_algorithm({"name": algorithm}),
        rounds=20,
        clients_per_round=len(CENTRES),
        min_clients=2,
        local_steps=20,
        batch_size=32,
        learning_rate=0.05,
        optimizer="sgd",
        seed=seed,
    )


FEDERATION = Federation(
    name="gbsg2",
    title="GBSG2: breast-cancer recurrence at four centres (Cox, C-index)",
    dataset=DATASET,
    sites=CENTRES,
    site_config=site_config,
    job=reference_job,
    default_algorithm="fedavg",
    data_env="FEDSILO_GBSG2_DATA",
    data_folder="gbsg2_survival",
    marker="centre-1/gbsg2.csv",
)
