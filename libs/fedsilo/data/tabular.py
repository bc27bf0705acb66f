"""A tabular dataset declared by its site: a CSV file and how to turn it into features.

Raw rows never leave this module; callers get feature arrays, already split and standardised.
"""

from __future__ import annotations

import csv
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedsilo.data.split import stratified_split

Comparison = Literal[">", ">=", "<", "<=", "==", "!="]
Category = float | int | str
Array = NDArray[np.float32]

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class DatasetError(ValueError):
    """A dataset file that does not match its declaration; the message names file and line."""


class LabelRule(BaseModel):
    """Binary label: 1 where `column op value` holds, else 0 (`num > 0` marks heart disease)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    op: Comparison
    value: float

    def apply(self, values: NDArray[np.float64]) -> Array:
        return np.asarray(_COMPARE[self.op](values, self.value), dtype=np.float32)


class OneHot(BaseModel):
    """Indicator columns for a categorical column, one per declared level.

    The levels are declared rather than discovered so that every site produces the same
    feature columns, even where a level never occurs in its own data.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    categories: list[Category] = Field(min_length=1)
    drop_first: bool = True

    @model_validator(mode="after")
    def _levels_usable(self) -> OneHot:
        keys = [_category_key(category) for category in self.categories]
        if len(set(keys)) != len(keys):
            raise ValueError(
                f"one_hot '{self.column}': categories repeat a level {self.categories}"
            )
        if self.drop_first and len(self.categories) < 2:
            raise ValueError(
                f"one_hot '{self.column}': drop_first with a single category leaves no "
                "indicator column; declare at least two categories"
            )
        return self

    @property
    def encoded_categories(self) -> list[Category]:
        return self.categories[1:] if self.drop_first else list(self.categories)

    def feature_names(self) -> list[str]:
        return [f"{self.column}={_category_label(level)}" for level in self.encoded_categories]

    def encode(self, cells: Sequence[str], lines: Sequence[int], path: Path) -> Array:
        """[rows, levels] indicators; a value outside the declared levels is an error."""
        position = {_category_key(level): i for i, level in enumerate(self.encoded_categories)}
        known = {_category_key(level) for level in self.categories}
        out = np.zeros((len(cells), len(position)), dtype=np.float32)
        for row, (cell, line) in enumerate(zip(cells, lines, strict=True)):
            key = _cell_key(cell, known)
            if key is None:
                raise DatasetError(
                    f"{path} line {line}: column '{self.column}' has value {cell!r}, which is "
                    f"not among its declared categories {self.categories}"
                )
            if key in position:
                out[row, position[key]] = 1.0
        return out


class TabularDatasetSpec(BaseModel):
    """How a site's CSV file becomes a labelled, split and standardised feature matrix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    delimiter: str = Field(",", min_length=1, max_length=1)
    header: bool = False
    columns: list[str] | None = Field(
        None, description="column names; required when the file has no header row"
    )
    missing_values: list[str] = Field(default_factory=lambda: ["?", ""])
    drop_columns: list[str] = Field(default_factory=list)
    drop_missing_rows: bool = True
    label: LabelRule
    one_hot: list[OneHot] = Field(default_factory=list)
    test_fraction: float = Field(0.34, gt=0, lt=1)
    stratify: bool = True
    split_seed: int = Field(0, ge=0, lt=2**32)
    standardize: bool = True

    @model_validator(mode="after")
    def _columns_consistent(self) -> TabularDatasetSpec:
        if self.columns is None:
            if not self.header:
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
        if self.label.column in self.drop_columns:
            raise ValueError(f"label.column '{self.label.column}' is also listed in drop_columns")
        encoded = [rule.column for rule in self.one_hot]
        for name in encoded:
            if encoded.count(name) > 1:
                raise ValueError(f"one_hot: column '{name}' is encoded twice")
            if name == self.label.column:
                raise ValueError(f"one_hot: column '{name}' is the label column")
            if name in self.drop_columns:
                raise ValueError(f"one_hot: column '{name}' is also listed in drop_columns")
        return self

    def reference_problem(self, available: Sequence[str]) -> str | None:
        """The first field that names a column not in `available`, described; else None."""
        references = [("label.column", self.label.column)]
        references += [("drop_columns", name) for name in self.drop_columns]
        references += [("one_hot.column", rule.column) for rule in self.one_hot]
        for field, name in references:
            if name not in available:
                return (
                    f"{field}: '{name}' is not a column of the dataset; "
                    f"available columns: {', '.join(available)}"
                )
        return None


@dataclass(frozen=True)
class TabularData:
    """Features and binary labels of one site, split into train and test."""

    feature_names: tuple[str, ...]
    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array

    def __post_init__(self) -> None:
        width = len(self.feature_names)
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if x.ndim != 2 or x.shape[1] != width:
                raise ValueError(f"x_{split} has shape {x.shape}, expected [n, {width}]")
            if y.shape != (x.shape[0],):
                raise ValueError(f"y_{split} has shape {y.shape}, expected ({x.shape[0]},)")

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def num_features(self) -> int:
        return len(self.feature_names)


def load_tabular(spec: TabularDatasetSpec) -> TabularData:
    """Read, clean, label, encode, split and standardise a declared dataset.

    Feature order is the file's column order (dropped and label columns removed), each one-hot
    column replaced in place by its indicator columns. Standardisation uses the train split's
    own mean and sample standard deviation (as FLamby does); a constant column keeps scale 1.
    """
    names, rows = _read_rows(spec)
    problem = spec.reference_problem(names)
    if problem:
        raise DatasetError(f"{spec.path}: {problem}")
    kept = [i for i, name in enumerate(names) if name not in spec.drop_columns]
    rows = _complete_rows(spec, names, kept, rows)
    lines = [line for line, _ in rows]

    def column(index: int) -> list[str]:
        return [cells[index] for _, cells in rows]

    label_index = names.index(spec.label.column)
    y = spec.label.apply(_parse_numbers(spec.path, names[label_index], column(label_index), lines))
    encoders = {rule.column: rule for rule in spec.one_hot}
    feature_names: list[str] = []
    blocks: list[NDArray[np.float64]] = []
    for index in kept:
        name = names[index]
        if index == label_index:
            continue
        if name in encoders:
            blocks.append(encoders[name].encode(column(index), lines, spec.path).astype(np.float64))
            feature_names += encoders[name].feature_names()
        else:
            blocks.append(_parse_numbers(spec.path, name, column(index), lines)[:, None])
            feature_names.append(name)
    if not feature_names:
        raise DatasetError(f"{spec.path}: no feature columns remain besides the label")
    x = np.hstack(blocks)
    train, test = stratified_split(y, spec.test_fraction, spec.split_seed, spec.stratify)
    x_train, x_test = x[train], x[test]
    if spec.standardize:
        x_train, x_test = _standardize(x_train, x_test)
    return TabularData(
        feature_names=tuple(feature_names),
        x_train=x_train.astype(np.float32),
        y_train=y[train],
        x_test=x_test.astype(np.float32),
        y_test=y[test],
    )


Rows = list[tuple[int, list[str]]]


def _read_rows(spec: TabularDatasetSpec) -> tuple[list[str], Rows]:
    """Column names and (line number, stripped cells) per non-blank row."""
    try:
        with spec.path.open(newline="") as handle:
            reader = csv.reader(handle, delimiter=spec.delimiter)
            rows = [
                (reader.line_num, [cell.strip() for cell in cells]) for cells in reader if cells
            ]
    except OSError as error:
        raise DatasetError(f"cannot read dataset file {spec.path}: {error.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise DatasetError(f"dataset file {spec.path} is not readable as CSV: {error}") from None
    if spec.header:
        if not rows:
            raise DatasetError(f"{spec.path}: the file is empty but header: true was declared")
        names = rows.pop(0)[1]
        if spec.columns is not None and spec.columns != names:
            raise DatasetError(
                f"{spec.path}: the header names columns {', '.join(names)} "
                f"but the declaration says {', '.join(spec.columns)}"
            )
    else:
        assert spec.columns is not None  # the spec's validator guarantees it
        names = spec.columns
    for line, cells in rows:
        if len(cells) != len(names):
            raise DatasetError(
                f"{spec.path} line {line}: {len(cells)} fields, expected {len(names)} "
                f"({', '.join(names)})"
            )
    return names, rows


def _complete_rows(spec: TabularDatasetSpec, names: list[str], kept: list[int], rows: Rows) -> Rows:
    missing = set(spec.missing_values)
    complete: Rows = []
    for line, cells in rows:
        absent = [names[i] for i in kept if cells[i] in missing]
        if not absent:
            complete.append((line, cells))
        elif not spec.drop_missing_rows:
            raise DatasetError(
                f"{spec.path} line {line}: missing value in {', '.join(absent)}; "
                "set drop_missing_rows: true to drop such rows"
            )
    if not complete:
        raise DatasetError(f"{spec.path}: no rows left after dropping rows with missing values")
    return complete


def _parse_numbers(
    path: Path, name: str, cells: Sequence[str], lines: Sequence[int]
) -> NDArray[np.float64]:
    out = np.empty(len(cells), dtype=np.float64)
    for row, (cell, line) in enumerate(zip(cells, lines, strict=True)):
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DatasetError(
                f"{path} line {line}: column '{name}' has value {cell!r}, which is not a finite "
                "number (declare it in missing_values or one_hot if it is not numeric)"
            )
        out[row] = value
    return out


def _standardize(
    x_train: NDArray[np.float64], x_test: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0, ddof=1) if x_train.shape[0] > 1 else np.ones(x_train.shape[1])
    # Exact test for a constant column: its float std may be a rounding residue, not 0.
    std = np.where(np.ptp(x_train, axis=0) > 0, std, 1.0)
    return (x_train - mean) / std, (x_test - mean) / std


def _category_key(level: Category) -> float | str:
    return level if isinstance(level, str) else float(level)


def _category_label(level: Category) -> str:
    return level if isinstance(level, str) else str(float(level))


def _cell_key(cell: str, known: set[float | str]) -> float | str | None:
    """The declared level a cell denotes: numerically equal, else the same text; else None."""
    try:
        number = float(cell)
    except ValueError:
        number = math.nan
    if number in known:
        return number
    return cell if cell in known else None
