from __future__ import annotations

import numpy as np
import pytest

from fedsilo.algorithms import normalized_weights, weighted_average, weighted_sum_into


def test_weighted_average_weights_by_examples() -> None:
    updates = [np.array([1.0, 0.0], np.float32), np.array([0.0, 3.0], np.float32)]
    result = weighted_average(updates, [30, 10])
    np.testing.assert_allclose(result, [0.75, 0.75])
    assert result.dtype == np.float32


def test_weighted_average_matches_a_matrix_product() -> None:
    rng = np.random.default_rng(0)
    stacked = rng.normal(size=(7, 1000)).astype(np.float32)
    counts = rng.integers(1, 500, size=7)
    expected = (counts / counts.sum()) @ stacked
    np.testing.assert_allclose(
        weighted_average(list(stacked), counts), expected, rtol=1e-5, atol=1e-6
    )


def test_combining_ranges_equals_combining_the_whole_vector() -> None:
    rng = np.random.default_rng(1)
    updates = [rng.normal(size=101).astype(np.float32) for _ in range(4)]
    weights = normalized_weights([5, 1, 9, 3])
    whole = weighted_sum_into(np.empty(101, np.float32), updates, weights)
    parts = [
        weighted_sum_into(
            np.empty(end - begin, np.float32), [u[begin:end] for u in updates], weights
        )
        for begin, end in [(0, 33), (33, 70), (70, 101)]
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("counts", [[], [0, 3], [-1]])
def test_invalid_example_counts_are_named(counts: list[int]) -> None:
    with pytest.raises(ValueError, match="count"):
        normalized_weights(counts)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        weighted_average([np.zeros(3, np.float32), np.zeros(4, np.float32)], [1, 1])
