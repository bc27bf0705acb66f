"""The example files the README points to stay valid, and declare what the reference
federations declare."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsilo.data import SiteConfig, load_tabular, resolve_task
from fedsilo.federations import FEDERATIONS, heart_disease
from fedsilo.jobs import load_job_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DATASETS = {federation.dataset: federation for federation in FEDERATIONS.values()}


@pytest.mark.parametrize("path", sorted((EXAMPLES / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_jobs_validate(path: Path) -> None:
    spec = load_job_spec(path)
    assert spec.dataset in DATASETS
    reference = DATASETS[spec.dataset].job(spec.algorithm.name, spec.seed)
    # Each names the task its federation's reference job does.
    assert (spec.task, spec.metric) == (reference.task, reference.metric)


@pytest.mark.parametrize("site", sorted(heart_disease.HOSPITALS))
def test_example_sites_declare_the_reference_preprocessing(site: str) -> None:
    config = SiteConfig.load(EXAMPLES / "sites" / f"{site}.yaml")
    assert config.site == site
    declared = config.dataset(heart_disease.DATASET)
    reference = heart_disease.site_config(site, declared.path.parent)
    assert declared == reference.dataset(heart_disease.DATASET)
    data = load_tabular(declared)
    assert data.num_features == 13 and data.num_train > data.num_test > 0


EXAMPLE_SITES = [
    (name, site) for name in ("gbsg2", "digits", "diabetes") for site in FEDERATIONS[name].sites
]


@pytest.mark.parametrize(("name", "site"), EXAMPLE_SITES, ids=lambda v: str(v))
def test_example_sites_of_the_other_federations(name: str, site: str) -> None:
    federation = FEDERATIONS[name]
    config = SiteConfig.load(EXAMPLES / "sites" / f"{name}-{site}.yaml")
    declared = config.dataset(federation.dataset)
    folder = declared.path.parents[1] if name == "gbsg2" else declared.path.parent
    assert declared == federation.site_config(site, folder).dataset(federation.dataset)
    if federation.prepare is not None:
        return  # written by the demo; tests/unit/test_federations.py loads them
    job = federation.job(federation.default_algorithm, 0)
    data = load_tabular(declared, resolve_task(job, declared.label))
    assert data.task.name == job.task and data.num_train > data.num_test > 0


def readme_yaml_blocks() -> list[str]:
    import re

    readme = (EXAMPLES.parent / "README.md").read_text()
    return re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)


def test_the_readmes_site_configs_and_job_specs_validate() -> None:
    import yaml

    from fedsilo.jobs import parse_job_spec

    sites = jobs = 0
    for block in readme_yaml_blocks():
        data = yaml.safe_load(block)
        if "site" in data:
            SiteConfig.model_validate(data)
            sites += 1
        elif "dataset" in data:
            parse_job_spec(data)
            jobs += 1
    assert sites >= 2 and jobs >= 2  # heart-disease's and the survival federation's
