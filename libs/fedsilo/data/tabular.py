"""A tabular dataset declared by its site: a CSV or Parquet file and how to turn it into
features and the job's targets.

Raw rows never leave this module; callers get feature arrays, already split and standardised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedsilo.data.encoding import DatasetError, OneHot, Ordinal, parse_numbers
from fedsilo.data.labels import LabelRule, encode_labels
from fedsilo.data.readers import Rows, read_csv, read_parquet
from fedsilo.data.split import stratified_split
from fedsilo.tasks import BINARY, LearningTask

Array = NDArray[np.float32]
PARQUET_SUFFIXES = (".parquet", ".pq")


class TabularDatasetSpec(BaseModel):
    """How a site's file becomes a labelled, split and standardised feature matrix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    format: Literal["csv", "parquet"] | None = Field(
        None, description="csv or parquet; None: parquet for .parquet/.pq files, else csv"
    )
    delimiter: str = Field(",", min_length=1, max_length=1)
    header: bool = False
    columns: list[str] | None = Field(
        None, description="column names; required for a CSV file without a header row"
    )
    missing_values: list[str] = Field(default_factory=lambda: ["?", ""])
    drop_columns: list[str] = Field(default_factory=list)
    drop_missing_rows: bool = True
    label: LabelRule
    one_hot: list[OneHot] = Field(default_factory=list)
    ordinal: list[Ordinal] = Field(default_factory=list)
    split_column: str | None = Field(
        None, description="a column of 'train' / 'test' giving the site's own split"
    )
    test_fraction: float = Field(0.34, gt=0, lt=1)
    stratify: bool = True
    split_seed: int = Field(0, ge=0, lt=2**32)
    standardize: bool = True

    @property
    def file_format(self) -> str:
        if self.format is not None:
            return self.format
        return "parquet" if self.path.suffix.lower() in PARQUET_SUFFIXES else "csv"

    @model_validator(mode="after")
    def _columns_consistent(self) -> TabularDatasetSpec:
        if self.columns is None:
            if not self.header and self.file_format == "csv":
                raise ValueError(
                    "columns: required when the file has no header row (header: false)"
                )
        else:
            repeated = sorted({name for name in self.columns if self.columns.count(name) > 1})
            if repeated:
                raise ValueError(f"columns: names repeat: {', '.join(repeated)}")
            problem = self.reference_problem(self.columns)
            if problem:
                raise ValueError(problem)
        special = [*self.label.columns, *([self.split_column] if self.split_column else [])]
        for name in special:
            if name in self.drop_columns:
                raise ValueError(f"'{name}' is the label or split column and in drop_columns")
        encoded = [rule.column for rule in (*self.one_hot, *self.ordinal)]
        for name in encoded:
            if encoded.count(name) > 1:
                raise ValueError(f"one_hot/ordinal: column '{name}' is encoded twice")
            if name in special:
                raise ValueError(f"one_hot/ordinal: column '{name}' is a label or split column")
            if name in self.drop_columns:
                raise ValueError(f"one_hot/ordinal: column '{name}' is also in drop_columns")
        return self

    def reference_problem(self, available: Sequence[str]) -> str | None:
        """The first field that names a column not in `available`, described; else None."""
        references = [
            (f"label.{field}", name)
            for field in ("column", "time", "event")
            if (name := getattr(self.label, field)) is not None
        ]
        references += [("split_column", self.split_column)] if self.split_column else []
        references += [("drop_columns", name) for name in self.drop_columns]
        references += [("one_hot.column", rule.column) for rule in self.one_hot]
        references += [("ordinal.column", rule.column) for rule in self.ordinal]
        for field, name in references:
            if name not in available:
                return (
                    f"{field}: '{name}' is not a column of the dataset; "
                    f"available columns: {', '.join(available)}"
                )
        return None


@dataclass(frozen=True)
class TabularData:
    """Features and targets of one site for one task, split into train and test. Targets are
    one value per row, or [time, event] per row for survival."""

    feature_names: tuple[str, ...]
    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array
    task: LearningTask = BINARY
    dropped_rows: int = 0  # rows of the file left out for a missing value

    def __post_init__(self) -> None:
        width = len(self.feature_names)
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if x.ndim != 2 or x.shape[1] != width:
                raise ValueError(f"x_{split} has shape {x.shape}, expected [n, {width}]")
            expected = (x.shape[0], 2) if self.task.name == "survival" else (x.shape[0],)
            if y.shape != expected:
                raise ValueError(f"y_{split} has shape {y.shape}, expected {expected}")

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def num_features(self) -> int:
        return len(self.feature_names)


def load_tabular(spec: TabularDatasetSpec, task: LearningTask = BINARY) -> TabularData:
    """Read, clean, label, encode, split and standardise a declared dataset for `task`.

    Feature order is the file's column order (dropped, label and split columns removed), each
    one-hot column replaced in place by its indicator columns. Standardisation uses the train
    split's own mean and sample standard deviation (as FLamby does); a constant column keeps
    scale 1. A value that does not fit raises DatasetError naming the file and the row.
    """
    if spec.file_format == "parquet":
        names, rows = read_parquet(spec.path, spec.columns)
    else:
        names, rows = read_csv(spec.path, spec.delimiter, spec.header, spec.columns)
    problem = spec.reference_problem(names)
    if problem:
        raise DatasetError(f"{spec.path}: {problem}")
    kept = [i for i, name in enumerate(names) if name not in spec.drop_columns]
    read = len(rows)
    rows = _complete_rows(spec, names, kept, rows)
    where = [location for location, _ in rows]

    def column(name: str) -> list[str]:
        index = names.index(name)
        return [cells[index] for _, cells in rows]

    special = {*spec.label.columns, *([spec.split_column] if spec.split_column else [])}
    y = encode_labels(
        spec.label, task, {name: column(name) for name in spec.label.columns}, where, spec.path
    )
    encoders: dict[str, OneHot | Ordinal] = {r.column: r for r in spec.one_hot}
    encoders.update({r.column: r for r in spec.ordinal})
    feature_names: list[str] = []
    blocks: list[NDArray[np.float64]] = []
    for index in kept:
        name = names[index]
        if name in special:
            continue
        if name in encoders:
            encoder = encoders[name]
            blocks.append(encoder.encode(column(name), where, spec.path).astype(np.float64))
            feature_names += encoder.feature_names()
        else:
            blocks.append(parse_numbers(spec.path, name, column(name), where)[:, None])
            feature_names.append(name)
    if not feature_names:
        raise DatasetError(f"{spec.path}: no feature columns remain besides the label")
    x = np.hstack(blocks)
    train, test = _split(
        spec, task, y, column(spec.split_column) if spec.split_column else None, where
    )
    x_train, x_test = x[train], x[test]
    if spec.standardize:
        x_train, x_test = _standardize(x_train, x_test)
    return TabularData(
        feature_names=tuple(feature_names),
        x_train=x_train.astype(np.float32),
        y_train=y[train],
        x_test=x_test.astype(np.float32),
        y_test=y[test],
        task=task,
        dropped_rows=read - len(rows),
    )


def _split(
    spec: TabularDatasetSpec,
    task: LearningTask,
    y: Array,
    declared: list[str] | None,
    where: list[str],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The site's own split (its split column), else a seeded split stratified on the class
    or, for survival, on the event; regression targets are not stratified."""
    if declared is not None:
        for cell, location in zip(declared, where, strict=True):
            if cell not in ("train", "test"):
                raise DatasetError(
                    f"{spec.path} {location}: column '{spec.split_column}' has value {cell!r}; "
                    "a split column holds 'train' or 'test'"
                )
        marks = np.asarray(declared)
        train, test = np.flatnonzero(marks == "train"), np.flatnonzero(marks == "test")
        if train.size == 0 or test.size == 0:
            raise DatasetError(f"{spec.path}: the split column leaves an empty train or test split")
        return train.astype(np.int64), test.astype(np.int64)
    strata = y[:, 1] if task.name == "survival" else y
    stratify = spec.stratify and task.name != "regression"
    return stratified_split(strata, spec.test_fraction, spec.split_seed, stratify)


def _complete_rows(spec: TabularDatasetSpec, names: list[str], kept: list[int], rows: Rows) -> Rows:
    missing = set(spec.missing_values)
    complete: Rows = []
    for location, cells in rows:
        absent = [names[i] for i in kept if cells[i] in missing]
        if not absent:
            complete.append((location, cells))
        elif not spec.drop_missing_rows:
            raise DatasetError(
                f"{spec.path} {location}: missing value in {', '.join(absent)}; "
                "set drop_missing_rows: true to drop such rows"
            )
    if not complete:
        raise DatasetError(f"{spec.path}: no rows left after dropping rows with missing values")
    return complete


def _standardize(
    x_train: NDArray[np.float64], x_test: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0, ddof=1) if x_train.shape[0] > 1 else np.ones(x_train.shape[1])
    # Exact test for a constant column: its float std may be a rounding residue, not 0.
    std = np.where(np.ptp(x_train, axis=0) > 0, std, 1.0)
    return (x_train - mean) / std, (x_test - mean) / std
