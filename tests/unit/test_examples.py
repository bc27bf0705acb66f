"""The example files the README points to stay valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsilo.data import SiteConfig, load_tabular
from fedsilo.federations import heart_disease
from fedsilo.jobs import load_job_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("path", sorted((EXAMPLES / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_jobs_validate(path: Path) -> None:
    assert load_job_spec(path).dataset == heart_disease.DATASET


@pytest.mark.parametrize("site", sorted(heart_disease.HOSPITALS))
def test_example_sites_declare_the_reference_preprocessing(site: str) -> None:
    config = SiteConfig.load(EXAMPLES / "sites" / f"{site}.yaml")
    assert config.site == site
    declared = config.dataset(heart_disease.DATASET)
    reference = heart_disease.site_config(site, declared.path.parent)
    assert declared == reference.dataset(heart_disease.DATASET)
    data = load_tabular(declared)
    assert data.num_features == 13 and data.num_train > data.num_test > 0
