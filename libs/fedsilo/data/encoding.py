"""Categorical columns as features: one-hot indicators or ordinal codes, over declared levels.

The levels are declared rather than discovered so that every site produces the same feature
columns, even where a level never occurs in its own data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedsilo.tasks import Category

Array = NDArray[np.float32]


class DatasetError(ValueError):
    """A dataset file that does not match its declaration; the message names file and row."""


class _Levels(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    categories: list[Category] = Field(min_length=1)

    @model_validator(mode="after")
    def _levels_distinct(self) -> _Levels:
        keys = [category_key(category) for category in self.categories]
        if len(set(keys)) != len(keys):
            raise ValueError(f"'{self.column}': categories repeat a level {self.categories}")
        return self

    def codes(self, cells: Sequence[str], where: Sequence[str], path: Path) -> list[int]:
        """Each cell's position among the declared levels; an undeclared value is an error."""
        position = {category_key(level): i for i, level in enumerate(self.categories)}
        out = []
        for cell, location in zip(cells, where, strict=True):
            key = cell_key(cell, set(position))
            if key is None:
                raise DatasetError(
                    f"{path} {location}: column '{self.column}' has value {cell!r}, which is "
                    f"not among its declared categories {self.categories}"
                )
            out.append(position[key])
        return out


class OneHot(_Levels):
    """Indicator columns for a categorical column, one per declared level (the first dropped
    unless drop_first is false)."""

    drop_first: bool = True

    @model_validator(mode="after")
    def _leaves_a_column(self) -> OneHot:
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
        return [f"{self.column}={category_label(level)}" for level in self.encoded_categories]

    def encode(self, cells: Sequence[str], where: Sequence[str], path: Path) -> Array:
        """[rows, levels] indicators."""
        codes = np.asarray(self.codes(cells, where, path), dtype=np.int64)
        offset = 1 if self.drop_first else 0
        out = np.zeros((len(cells), len(self.encoded_categories)), dtype=np.float32)
        rows = np.flatnonzero(codes >= offset)
        out[rows, codes[rows] - offset] = 1.0
        return out


class Ordinal(_Levels):
    """One column of codes 0, 1, 2, ... in the declared order of the levels (tumour grade
    I < II < III), standardised like any numeric column."""

    def feature_names(self) -> list[str]:
        return [self.column]

    def encode(self, cells: Sequence[str], where: Sequence[str], path: Path) -> Array:
        return np.asarray(self.codes(cells, where, path), dtype=np.float32)[:, None]


def category_key(level: Category) -> float | str:
    return level if isinstance(level, str) else float(level)


def category_label(level: Category) -> str:
    return level if isinstance(level, str) else str(float(level))


def cell_key(cell: str, known: set[float | str]) -> float | str | None:
    """The declared level a cell denotes: numerically equal, else the same text; else None."""
    try:
        number = float(cell)
    except ValueError:
        number = math.nan
    if number in known:
        return number
    return cell if cell in known else None


def parse_numbers(
    path: Path, name: str, cells: Sequence[str], where: Sequence[str], what: str = ""
) -> NDArray[np.float64]:
    """Finite floats, else an error naming the file, the row and the column."""
    out = np.empty(len(cells), dtype=np.float64)
    for row, (cell, location) in enumerate(zip(cells, where, strict=True)):
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DatasetError(
                f"{path} {location}: column '{name}' has value {cell!r}, which is not a finite "
                + (
                    what
                    or "number (declare it in missing_values, one_hot or ordinal if it is "
                    "not numeric)"
                )
            )
        out[row] = value
    return out
