from pathlib import Path

import numpy as np
import pytest

from fedsilo.algorithms.registry import FedAdamParams
from fedsilo.data import SiteConfig, TabularData, load_tabular
from fedsilo.federations.heart_disease import (
    DATASET,
    FLAMBY_SPLIT_SEED,
    HOSPITALS,
    dataset_spec,
    flamby_job,
    site_config,
)

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fed_heart_disease"

# FLamby's counts after preprocessing: (train, test) per hospital.
EXPECTED_SPLITS = {
    "cleveland": (199, 104),
    "hungarian": (172, 89),
    "switzerland": (30, 16),
    "va": (85, 45),
}


@pytest.fixture(scope="module")
def hospitals() -> dict[str, TabularData]:
    if not all((DATA_DIR / name).is_file() for name in HOSPITALS.values()):
        pytest.skip(f"Fed-Heart-Disease files not found in {DATA_DIR} (the shared data folder)")
    return {site: load_tabular(site_config(site, DATA_DIR).dataset(DATASET)) for site in HOSPITALS}


def test_740_rows_remain_after_preprocessing(hospitals: dict[str, TabularData]):
    assert sum(data.num_train + data.num_test for data in hospitals.values()) == 740


def test_each_hospital_splits_as_flamby_does(hospitals: dict[str, TabularData]):
    splits = {site: (data.num_train, data.num_test) for site, data in hospitals.items()}

    assert splits == EXPECTED_SPLITS


def test_thirteen_features_in_the_same_order_everywhere(hospitals: dict[str, TabularData]):
    expected = (
        "age", "sex", "cp=2.0", "cp=3.0", "cp=4.0", "trestbps", "chol", "fbs",
        "restecg=1.0", "restecg=2.0", "thalach", "exang", "oldpeak",
    )  # fmt: skip

    assert {data.feature_names for data in hospitals.values()} == {expected}


def test_each_hospital_is_standardised_by_its_own_train_split(hospitals: dict[str, TabularData]):
    for data in hospitals.values():
        np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-5)
        std = data.x_train.std(axis=0, ddof=1)
        # Switzerland's cholesterol is recorded as 0 throughout: a constant column stays 0.
        assert np.all(np.isclose(std, 1.0, atol=1e-4) | np.isclose(std, 0.0))


def test_labels_are_binary_and_stratified_where_possible(hospitals: dict[str, TabularData]):
    for site, data in hospitals.items():
        assert set(np.unique(np.concatenate([data.y_train, data.y_test]))) <= {0.0, 1.0}
        if site != "switzerland":
            assert abs(data.y_train.mean() - data.y_test.mean()) < 0.02


def test_hospitals_split_with_flambys_seed():
    spec = dataset_spec(DATA_DIR / HOSPITALS["va"])

    assert (spec.split_seed, spec.test_fraction, spec.stratify) == (FLAMBY_SPLIT_SEED, 0.34, True)
    assert FLAMBY_SPLIT_SEED == 43


def test_site_config_survives_a_yaml_round_trip(tmp_path: Path):
    config = site_config("va", DATA_DIR)
    path = tmp_path / "va.yaml"

    config.write(path)

    assert SiteConfig.load(path) == config


def test_an_unknown_hospital_lists_the_federation():
    with pytest.raises(KeyError, match="cleveland, hungarian, switzerland, va"):
        site_config("mayo", DATA_DIR)


def test_flamby_job_uses_the_benchmark_settings():
    job = flamby_job(FedAdamParams(server_lr=0.1), seed=3)

    assert (job.rounds, job.local_steps, job.batch_size) == (15, 100, 4)
    assert (job.optimizer, job.learning_rate, job.model.name) == (
        "sgd",
        0.001,
        "logistic_regression",
    )
    assert (job.clients_per_round, job.min_clients, job.seed) == (4, 2, 3)
    assert job.dataset == DATASET
    assert job.algorithm == FedAdamParams(server_lr=0.1)
