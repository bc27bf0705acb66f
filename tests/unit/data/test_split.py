import math

import numpy as np
import pytest

from fedsilo.data import held_out_count, stratified_split


@pytest.mark.parametrize(
    ("num_rows", "fraction", "expected"),
    [(303, 0.34, 104), (261, 0.34, 89), (46, 0.34, 16), (130, 0.34, 45), (10, 0.7, 7)],
)
def test_test_count_is_the_ceiling_of_the_fraction(num_rows: int, fraction: float, expected: int):
    labels = np.arange(num_rows) % 2

    train, test = stratified_split(labels, fraction, seed=0)

    assert held_out_count(num_rows, fraction) == expected
    assert test.size == expected
    assert train.size == num_rows - expected


def test_train_and_test_partition_the_rows():
    labels = np.array([0] * 30 + [1] * 20)

    train, test = stratified_split(labels, 0.34, seed=3)

    assert np.intersect1d(train, test).size == 0
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(50))


def test_each_class_is_held_out_in_proportion():
    labels = np.array([0] * 60 + [1] * 40)

    _, test = stratified_split(labels, 0.25, seed=0)

    assert np.bincount(labels[test]).tolist() == [15, 10]


@pytest.mark.parametrize("seed", range(10))
def test_uneven_shares_round_to_a_neighbouring_integer(seed: int):
    labels = np.array([0] * 7 + [1] * 13 + [2] * 11)
    num_test = math.ceil(31 * 0.34)

    _, test = stratified_split(labels, 0.34, seed=seed)

    held_out = np.bincount(labels[test], minlength=3)
    shares = np.array([7, 13, 11]) * num_test / 31
    assert held_out.sum() == num_test
    assert np.all(held_out >= np.floor(shares))
    assert np.all(held_out <= np.ceil(shares))


def test_a_singleton_class_falls_back_to_an_unstratified_split():
    labels = np.array([0] + [1] * 45)

    placements = set()
    for seed in range(40):
        train, test = stratified_split(labels, 0.34, seed=seed)
        assert (train.size, test.size) == (30, 16)
        placements.add("test" if 0 in test else "train")

    assert placements == {"train", "test"}


def test_unstratified_split_ignores_the_labels():
    labels = np.array([0] * 50 + [1] * 50)

    results = {
        tuple(np.bincount(labels[stratified_split(labels, 0.3, seed=s, stratify=False)[1]]))
        for s in range(20)
    }

    assert len(results) > 1
    assert all(sum(counts) == 30 for counts in results)


def test_the_same_seed_gives_the_same_split_and_another_seed_another():
    labels = np.array([0, 1] * 40)

    first = stratified_split(labels, 0.34, seed=7)
    again = stratified_split(labels, 0.34, seed=7)
    other = stratified_split(labels, 0.34, seed=8)

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_the_open_interval_is_refused(fraction: float):
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(np.array([0, 1, 0, 1]), fraction, seed=0)


def test_too_few_rows_for_a_training_split_is_refused():
    with pytest.raises(ValueError, match="training split would be empty"):
        stratified_split(np.array([1]), 0.34, seed=0)


def test_matches_scikit_learns_documented_train_test_split_example():
    # sklearn docs: train_test_split(X, y, test_size=0.33, random_state=42) on five rows
    # gives X_train rows 2, 0, 3 and X_test rows 1, 4 (unstratified: every class is single).
    train, test = stratified_split(np.arange(5), 0.33, seed=42)

    assert (train.tolist(), test.tolist()) == ([0, 2, 3], [1, 4])


def test_matches_scikit_learns_documented_stratified_shuffle_split_example():
    # sklearn docs: StratifiedShuffleSplit(test_size=0.5, random_state=0), first fold:
    # train [5 2 3], test [4 1 0].
    train, test = stratified_split(np.array([0, 0, 0, 1, 1, 1]), 0.5, seed=0)

    assert (train.tolist(), test.tolist()) == ([2, 3, 5], [0, 1, 4])


def test_a_seed_outside_the_generator_range_is_refused():
    with pytest.raises(ValueError, match=r"seed must lie in \[0, 2\*\*32\)"):
        stratified_split(np.array([0, 1, 0, 1]), 0.5, seed=-1)
