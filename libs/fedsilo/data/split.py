"""Train/test split of one site's rows, stratified by label where the classes allow it."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

Indices = NDArray[np.int64]


def held_out_count(num_rows: int, test_fraction: float) -> int:
    """ceil(n * fraction), as scikit-learn counts; rounding first keeps 0.7 * 10 at 7, not 8."""
    return math.ceil(round(num_rows * test_fraction, 9))


def stratified_split(
    labels: NDArray[np.generic], test_fraction: float, seed: int, stratify: bool = True
) -> tuple[Indices, Indices]:
    """(train indices, test indices), each sorted; the same seed gives the same split.

    With stratification each class contributes to the test set in proportion to its size.
    A class with fewer than two members cannot be on both sides, so the split then falls back
    to an unstratified shuffle (Switzerland's single negative case in Fed-Heart-Disease).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    num_rows = labels.size
    num_test = held_out_count(num_rows, test_fraction)
    if num_test >= num_rows:
        raise ValueError(
            f"cannot split {num_rows} rows with test_fraction {test_fraction}: "
            "the training split would be empty"
        )
    rng = np.random.default_rng(seed)
    classes, class_sizes = np.unique(labels, return_counts=True)
    if not stratify or classes.size < 2 or class_sizes.min() < 2:
        test = rng.permutation(num_rows)[:num_test]
    else:
        per_class = _allocate(class_sizes, num_test, rng)
        test = np.concatenate(
            [
                rng.permutation(np.flatnonzero(labels == label))[:count]
                for label, count in zip(classes, per_class, strict=True)
            ]
        )
    is_test = np.zeros(num_rows, dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)


def _allocate(
    class_sizes: NDArray[np.int64], total: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Split `total` across classes in proportion to their sizes, summing exactly to `total`.

    Each class gets the floor of its share; the remainder goes to the largest fractional parts,
    ties broken at random (scikit-learn's approximate mode).
    """
    exact = class_sizes * total / class_sizes.sum()
    counts: NDArray[np.int64] = np.floor(exact).astype(np.int64)
    remainder = total - int(counts.sum())
    order = np.lexsort((rng.random(class_sizes.size), -(exact - counts)))
    counts[order[:remainder]] += 1
    return counts
