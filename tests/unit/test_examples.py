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


def test_example_site_declares_the_reference_preprocessing() -> None:
    config = SiteConfig.load(EXAMPLES / "sites" / "cleveland.yaml")
    declared = config.dataset(heart_disease.DATASET)
    reference = heart_disease.site_config("cleveland", declared.path.parent)
    assert declared == reference.dataset(heart_disease.DATASET)
    if declared.path.exists():
        data = load_tabular(declared)
        assert (data.num_train, data.num_test, data.num_features) == (199, 104, 13)
