"""Labels for every task, checked row by row: a value that does not fit names the file, the row
and the value; Parquet files, ordinal columns and a site's own split column."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from fedsilo.data import (
    DatasetError,
    LabelRule,
    Ordinal,
    TabularDatasetSpec,
    load_tabular,
    resolve_task,
)
from fedsilo.jobs import JobSpec
from fedsilo.tasks import LearningTask

MULTICLASS = LearningTask(name="multiclass", classes=("a", "b", "c"), metric="macro_f1")
REGRESSION = LearningTask(name="regression", metric="r2")
SURVIVAL = LearningTask(name="survival", metric="c_index")


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def spec(path: Path, label: LabelRule, **fields: object) -> TabularDatasetSpec:
    return TabularDatasetSpec(path=path, header=True, label=label, standardize=False, **fields)


def test_multiclass_labels_are_class_indices_in_the_jobs_order(tmp_path: Path) -> None:
    rows = [f"{i},{'abc'[i % 3]}" for i in range(12)]
    path = write_csv(tmp_path / "site.csv", "x,kind", rows)
    data = load_tabular(spec(path, LabelRule(column="kind", task="multiclass")), MULTICLASS)
    assert sorted(set(data.y_train.tolist()) | set(data.y_test.tolist())) == [0.0, 1.0, 2.0]
    by_x = dict(zip(data.x_train[:, 0].tolist(), data.y_train.tolist(), strict=True))
    assert all(by_x[x] == x % 3 for x in by_x)


def test_an_unknown_class_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "site.csv", "x,kind", ["1,a", "2,b", "3,d", "4,c"])
    with pytest.raises(DatasetError) as error:
        load_tabular(spec(path, LabelRule(column="kind", task="multiclass")), MULTICLASS)
    assert str(error.value) == (
        f"{path} line 4: column 'kind' has value 'd', which is not among the job's classes "
        "['a', 'b', 'c']"
    )


def test_a_non_numeric_regression_target_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "site.csv", "x,price", ["1,10.5", "2,n/a", "3,7"])
    with pytest.raises(DatasetError, match=rf"{path} line 3: column 'price' has value 'n/a'"):
        load_tabular(spec(path, LabelRule(column="price", task="regression")), REGRESSION)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("-3,1", "column 'time' has value '-3': a survival time cannot be negative"),
        ("30,2", "column 'event' has value '2': an event is 1 (observed) or 0 (censored)"),
    ],
)
def test_bad_survival_labels_name_the_file_and_the_line(
    tmp_path: Path, cell: str, expected: str
) -> None:
    path = write_csv(tmp_path / "site.csv", "x,time,event", ["1,10,1", "2,20,0", f"3,{cell}"])
    with pytest.raises(DatasetError) as error:
        load_tabular(spec(path, LabelRule(time="time", event="event")), SURVIVAL)
    assert str(error.value) == f"{path} line 4: {expected}"


def test_survival_targets_are_time_and_event_with_the_split_stratified_on_the_event(
    tmp_path: Path,
) -> None:
    rows = [f"{i},{10 + i},{i % 2}" for i in range(20)]
    path = write_csv(tmp_path / "site.csv", "x,time,event", rows)
    data = load_tabular(
        spec(path, LabelRule(time="time", event="event"), test_fraction=0.3), SURVIVAL
    )
    assert data.y_train.shape == (14, 2) and data.y_test.shape == (6, 2)
    assert data.feature_names == ("x",)  # time and event are targets, not features
    assert data.y_test[:, 1].sum() == 3  # half the events on each side


def test_parquet_with_ordinal_and_a_declared_split(tmp_path: Path) -> None:
    path = tmp_path / "site.parquet"
    table = pa.table(
        {
            "grade": ["I", "III", "II", "I", None, "II"],
            "age": [50.0, 61.0, 47.0, 70.0, 66.0, 58.0],
            "outcome": [0, 1, 1, 0, 1, 0],
            "split": ["train", "train", "train", "test", "train", "test"],
        }
    )
    pq.write_table(table, path)
    declared = TabularDatasetSpec(
        path=path,
        label=LabelRule(column="outcome", task="binary"),
        ordinal=[Ordinal(column="grade", categories=["I", "II", "III"])],
        split_column="split",
        standardize=False,
    )
    assert declared.file_format == "parquet"
    data = load_tabular(declared)
    assert data.feature_names == ("grade", "age")
    assert data.x_train.tolist() == [[0.0, 50.0], [2.0, 61.0], [1.0, 47.0]]
    assert data.x_test.tolist() == [[0.0, 70.0], [1.0, 58.0]]
    assert data.dropped_rows == 1  # the null grade


def test_a_bad_parquet_value_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "site.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "outcome": [0, 1, 3]}), path)
    declared = TabularDatasetSpec(path=path, label=LabelRule(column="outcome", task="binary"))
    with pytest.raises(DatasetError, match=rf"{path} row 3: column 'outcome' has value '3'"):
        load_tabular(declared)


def test_a_split_column_holds_train_or_test(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "site.csv", "x,y,split", ["1,0,train", "2,1,valid", "3,0,test"])
    declared = spec(path, LabelRule(column="y", task="binary"), split_column="split")
    with pytest.raises(DatasetError, match=r"line 3: column 'split' has value 'valid'"):
        load_tabular(declared)


def test_the_job_task_must_match_what_the_label_implies() -> None:
    survival_label = LabelRule(time="time", event="cens")
    with pytest.raises(ValueError, match="the job's task is binary but this dataset's label is"):
        resolve_task(JobSpec(dataset="d", task="binary"), survival_label)
    resolved = resolve_task(JobSpec(dataset="d"), survival_label)
    assert resolved.name == "survival" and resolved.metric == "c_index"
    digits = LabelRule(column="digit", task="multiclass")
    with pytest.raises(ValueError, match="a multiclass task needs its classes"):
        resolve_task(JobSpec(dataset="d"), digits)
    job = JobSpec(dataset="d", task="multiclass", classes=[3, 1, 2])
    assert (
        resolve_task(job, digits).classes == (3, 1, 2)
        and resolve_task(job, digits).num_outputs == 3
    )


def test_label_forms_are_checked_when_declared() -> None:
    with pytest.raises(ValidationError, match="needs both time and event"):
        LabelRule(time="t")
    with pytest.raises(ValidationError, match="a comparison makes a binary label, not regression"):
        LabelRule(column="y", op=">", value=0, task="regression")
    with pytest.raises(ValidationError, match="name the label column"):
        LabelRule(task="binary")
