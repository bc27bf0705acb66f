"""Train/test split of one site's rows, stratified by label where the classes allow it.

The index sets are those scikit-learn's `train_test_split(test_size=f, random_state=seed,
stratify=labels)` returns (StratifiedShuffleSplit, or ShuffleSplit unstratified), so a split
declared with a benchmark's seed reproduces that benchmark's test sets (FLamby uses 43). The
draws come from numpy's legacy RandomState, whose stream numpy keeps fixed across releases: a
site's split never changes with an upgrade.
"""

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

    With stratification each class keeps its share on both sides (within one row). A class
    with fewer than two members cannot be on both sides, so the split then falls back to an
    unstratified shuffle (Switzerland's single negative case in Fed-Heart-Disease), as it does
    when either side has fewer rows than there are classes.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must lie in [0, 2**32), got {seed}")
    num_rows = labels.size
    num_test = held_out_count(num_rows, test_fraction)
    num_train = num_rows - num_test
    if num_train < 1:
        raise ValueError(
            f"cannot split {num_rows} rows with test_fraction {test_fraction}: "
            "the training split would be empty"
        )
    rng = np.random.RandomState(seed)
    classes, class_sizes = np.unique(labels, return_counts=True)
    stratifiable = classes.size >= 2 and class_sizes.min() >= 2
    if stratify and stratifiable and min(num_train, num_test) >= classes.size:
        train_sizes = _approximate_mode(class_sizes, num_train, rng)
        test_sizes = _approximate_mode(class_sizes - train_sizes, num_test, rng)
        train_parts, test_parts = [], []
        for label, size, to_train, to_test in zip(
            classes, class_sizes, train_sizes, test_sizes, strict=True
        ):
            members = np.flatnonzero(labels == label)[rng.permutation(size)]
            train_parts.append(members[:to_train])
            test_parts.append(members[to_train : to_train + to_test])
        train, test = np.concatenate(train_parts), np.concatenate(test_parts)
    else:
        permutation = rng.permutation(num_rows)
        test, train = permutation[:num_test], permutation[num_test:]
    return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)


def _approximate_mode(
    class_sizes: NDArray[np.int64], draws: int, rng: np.random.RandomState
) -> NDArray[np.int64]:
    """Split `draws` across classes in proportion to their sizes, summing exactly to `draws`.

    Each class gets the floor of its share; the remainder goes to the largest fractional parts,
    ties drawn at random. This is scikit-learn's `_approximate_mode`, draw for draw: its random
    tie-breaks are part of the stream that the permutations after it use.
    """
    exact = class_sizes / class_sizes.sum() * draws
    counts: NDArray[np.int64] = np.floor(exact).astype(np.int64)
    missing = draws - int(counts.sum())
    remainder = exact - counts
    for value in np.sort(np.unique(remainder))[::-1]:
        if missing == 0:
            break
        (tied,) = np.nonzero(remainder == value)
        chosen = rng.choice(tied, size=min(tied.size, missing), replace=False)
        counts[chosen] += 1
        missing -= chosen.size
    return counts
