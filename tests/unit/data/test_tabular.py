from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from fedsilo.data import (
    DatasetError,
    LabelRule,
    OneHot,
    SiteConfig,
    SiteConfigError,
    TabularDatasetSpec,
    load_tabular,
)

COLUMNS = ["age", "cp", "noise", "chol", "num"]


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def spec_for(path: Path, **overrides: Any) -> TabularDatasetSpec:
    fields: dict[str, Any] = {
        "path": path,
        "columns": COLUMNS,
        "drop_columns": ["noise"],
        "label": LabelRule(column="num", op=">", value=0),
        "one_hot": [OneHot(column="cp", categories=[1, 2, 3])],
        "test_fraction": 0.25,
        "standardize": False,
    } | overrides
    return TabularDatasetSpec(**fields)


def site_rows(count: int, cp_levels: tuple[int, ...] = (1, 2, 3)) -> list[str]:
    return [
        f"{40 + i},{cp_levels[i % len(cp_levels)]},x,{200 + 3 * i},{i % 3}" for i in range(count)
    ]


def test_rows_with_a_missing_value_in_a_kept_column_are_dropped(tmp_path: Path):
    rows = [*site_rows(8), "50,?,x,210,1", "51,2,x,,0", "52,2,?,230,1"]
    path = write_csv(tmp_path / "site.csv", rows)

    data = load_tabular(spec_for(path))

    # the '?' in the dropped column 'noise' does not cost its row
    assert data.num_train + data.num_test == 9


def test_missing_values_are_an_error_when_rows_are_not_dropped(tmp_path: Path):
    path = write_csv(tmp_path / "site.csv", [*site_rows(4), "50,2,x,?,1"])

    with pytest.raises(DatasetError, match=r"line 5: missing value in chol"):
        load_tabular(spec_for(path, drop_missing_rows=False))


def test_label_is_the_declared_comparison(tmp_path: Path):
    path = write_csv(tmp_path / "site.csv", site_rows(12))

    data = load_tabular(spec_for(path, label=LabelRule(column="num", op="==", value=2)))

    labels = np.concatenate([data.y_train, data.y_test])
    assert sorted(labels.tolist()) == [0.0] * 8 + [1.0] * 4


def test_one_hot_replaces_the_column_in_place_without_its_first_level(tmp_path: Path):
    path = write_csv(tmp_path / "site.csv", site_rows(12))

    data = load_tabular(spec_for(path))

    assert data.feature_names == ("age", "cp=2.0", "cp=3.0", "chol")
    x = np.concatenate([data.x_train, data.x_test])
    ages = x[:, 0].astype(int) - 40
    expected_cp = np.array([(1, 2, 3)[i % 3] for i in ages])
    assert np.array_equal(x[:, 1], (expected_cp == 2).astype(np.float32))
    assert np.array_equal(x[:, 2], (expected_cp == 3).astype(np.float32))


def test_every_site_gets_the_same_columns_even_without_some_levels(tmp_path: Path):
    full = write_csv(tmp_path / "full.csv", site_rows(12))
    partial = write_csv(tmp_path / "partial.csv", site_rows(12, cp_levels=(1, 2)))

    full_data = load_tabular(spec_for(full))
    partial_data = load_tabular(spec_for(partial))

    assert partial_data.feature_names == full_data.feature_names
    assert not np.concatenate([partial_data.x_train, partial_data.x_test])[:, 2].any()


def test_a_value_outside_the_declared_categories_names_column_value_and_line(tmp_path: Path):
    path = write_csv(tmp_path / "site.csv", [*site_rows(3), "50,7,x,210,1"])

    with pytest.raises(DatasetError, match=r"line 4: column 'cp' has value '7'.*\[1, 2, 3\]"):
        load_tabular(spec_for(path))


def test_a_non_numeric_value_names_column_and_line(tmp_path: Path):
    path = write_csv(tmp_path / "site.csv", [*site_rows(3), "50,2,x,high,1"])

    with pytest.raises(DatasetError, match=r"line 4: column 'chol' has value 'high'"):
        load_tabular(spec_for(path))


def test_a_row_of_the_wrong_width_names_its_line(tmp_path: Path):
    path = write_csv(tmp_path / "site.csv", [*site_rows(2), "50,2,x,210"])

    with pytest.raises(DatasetError, match=r"line 3: 4 fields, expected 5"):
        load_tabular(spec_for(path))


def test_standardisation_uses_the_train_split_statistics(tmp_path: Path):
    path = write_csv(tmp_path / "site.csv", site_rows(40))
    raw = load_tabular(spec_for(path))

    data = load_tabular(spec_for(path, standardize=True))

    mean = raw.x_train.mean(axis=0, dtype=np.float64)
    std = raw.x_train.std(axis=0, ddof=1, dtype=np.float64)
    np.testing.assert_allclose(data.x_train, (raw.x_train - mean) / std, atol=1e-5)
    np.testing.assert_allclose(data.x_test, (raw.x_test - mean) / std, atol=1e-5)
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-6)
    assert not np.allclose(data.x_test.mean(axis=0), 0.0, atol=1e-3)


def test_a_constant_column_is_centred_but_not_scaled(tmp_path: Path):
    rows = [f"{40 + i},1,x,250,{i % 2}" for i in range(10)]
    path = write_csv(tmp_path / "site.csv", rows)

    data = load_tabular(spec_for(path, standardize=True))

    assert np.all(np.isfinite(data.x_train))
    np.testing.assert_allclose(data.x_train[:, 3], 0.0, atol=1e-6)


def test_a_header_row_names_the_columns(tmp_path: Path):
    path = write_csv(tmp_path / "site.csv", [";".join(COLUMNS), *site_rows(8)])
    path.write_text(path.read_text().replace(",", ";"))

    data = load_tabular(spec_for(path, columns=None, header=True, delimiter=";"))

    assert data.feature_names == ("age", "cp=2.0", "cp=3.0", "chol")


def test_a_header_without_a_declared_column_lists_the_available_ones(tmp_path: Path):
    path = write_csv(tmp_path / "site.csv", ["age,cp,noise,cholesterol,num", *site_rows(4)])
    spec = spec_for(path, columns=None, header=True, one_hot=[], drop_columns=["chol"])

    with pytest.raises(DatasetError, match=r"drop_columns: 'chol'.*age, cp, noise, cholesterol"):
        load_tabular(spec)


def test_columns_are_required_without_a_header(tmp_path: Path):
    with pytest.raises(ValidationError, match="columns: required when the file has no header"):
        spec_for(tmp_path / "site.csv", columns=None)


def test_a_declared_column_that_does_not_exist_lists_the_available_ones(tmp_path: Path):
    with pytest.raises(ValidationError, match=r"label.column: 'outcome'.*age, cp, noise, chol"):
        spec_for(tmp_path / "site.csv", label=LabelRule(column="outcome", op=">", value=0))


def test_one_hot_of_the_label_is_refused(tmp_path: Path):
    with pytest.raises(
        ValidationError, match="one_hot/ordinal: column 'num' is a label or split column"
    ):
        spec_for(tmp_path / "site.csv", one_hot=[OneHot(column="num", categories=[0, 1])])


def site_yaml(dataset_path: str, **overrides: Any) -> dict[str, Any]:
    dataset: dict[str, Any] = {
        "path": dataset_path,
        "columns": COLUMNS,
        "drop_columns": ["noise"],
        "label": {"column": "num", "op": ">", "value": 0},
        "one_hot": [{"column": "cp", "categories": [1, 2, 3]}],
    } | overrides
    return {"site": "st-olav", "datasets": {"cardio": dataset}}


def test_site_config_errors_name_the_offending_fields(tmp_path: Path):
    config = site_yaml("site.csv", label={"column": "num", "op": "=>", "value": 0}, spam=1)
    config["site"] = "St Olav"
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config))

    with pytest.raises(SiteConfigError) as error:
        SiteConfig.load(path)

    message = str(error.value)
    assert f"invalid site config {path}" in message
    assert "site: String should match pattern" in message
    assert "datasets.cardio.label.op:" in message
    assert "datasets.cardio.spam: Extra inputs are not permitted" in message


def test_relative_dataset_paths_resolve_against_the_config_folder(tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "conf").mkdir()
    write_csv(tmp_path / "data" / "site.csv", site_rows(12))
    config_path = tmp_path / "conf" / "site.yaml"
    config_path.write_text(yaml.safe_dump(site_yaml("../data/site.csv")))

    config = SiteConfig.load(config_path)

    assert config.dataset("cardio").path == tmp_path / "conf" / "../data/site.csv"
    assert load_tabular(config.dataset("cardio")).num_features == 4


def test_relative_dataset_paths_resolve_against_a_separate_data_folder(tmp_path: Path):
    (tmp_path / "volume").mkdir()
    write_csv(tmp_path / "volume" / "site.csv", site_rows(12))
    config_path = tmp_path / "site.yaml"
    config_path.write_text(yaml.safe_dump(site_yaml("site.csv")))

    config = SiteConfig.load(config_path, data_dir=tmp_path / "volume")

    assert config.dataset("cardio").path == tmp_path / "volume" / "site.csv"
    assert load_tabular(config.dataset("cardio")).num_features == 4


def test_written_config_loads_back_equal(tmp_path: Path):
    config = SiteConfig(
        site="st-olav", datasets={"cardio": spec_for(tmp_path / "site.csv", standardize=True)}
    )
    path = tmp_path / "written.yaml"

    config.write(path)

    assert SiteConfig.load(path) == config


def test_an_undeclared_dataset_lists_the_declared_ones(tmp_path: Path):
    config = SiteConfig(site="st-olav", datasets={"cardio": spec_for(tmp_path / "a.csv")})

    with pytest.raises(KeyError, match="no dataset 'oncology'; declared datasets: cardio"):
        config.dataset("oncology")
