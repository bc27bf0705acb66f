from __future__ import annotations

import numpy as np
import pytest

from fedsilo.fixedpoint import to_levels
from fedsilo.secagg import RingSpec, dequantize_sum, quantization_step, quantize

SPEC = RingSpec(clip=1.0, num_clients=5)


def test_clipped_values_map_to_the_ends_of_the_range() -> None:
    values = np.array([-3.0, -1.0, 0.0, 1.0, 7.5], np.float32)
    quantized = quantize(values, SPEC)
    assert quantized.dtype == np.uint32
    assert quantized[0] == quantized[1] == 0
    assert quantized[3] == quantized[4] == SPEC.max_level


def test_the_sum_of_num_clients_maximal_values_fits_the_ring() -> None:
    for spec in [
        SPEC,
        RingSpec(bits=32, clip=0.1, num_clients=1000),
        RingSpec(bits=16, clip=2.0, num_clients=3),
    ]:
        assert spec.num_clients * spec.max_level < 2**spec.bits
        rng = np.random.default_rng(0)
        quantized = quantize(np.full(1000, spec.clip, np.float32), spec, rng)
        assert quantized.max() <= spec.max_level


def test_the_sum_of_clients_dequantizes_within_one_step_per_client() -> None:
    rng = np.random.default_rng(1)
    updates = rng.uniform(-1.0, 1.0, size=(5, 10_000)).astype(np.float32)
    ring_sum = np.zeros(10_000, np.uint32)
    for update in updates:
        ring_sum += quantize(update, SPEC, rng)
    recovered = dequantize_sum(ring_sum, SPEC, count=5)
    assert recovered.dtype == np.float32
    np.testing.assert_allclose(
        recovered,
        updates.astype(np.float64).sum(axis=0),
        atol=5 * quantization_step(SPEC),
        rtol=2**-23,  # the float32 result itself
    )


def test_nearest_rounding_is_within_half_a_step() -> None:
    spec = RingSpec(bits=12, clip=1.0, num_clients=4)
    values = np.linspace(-1.0, 1.0, 1001, dtype=np.float32)
    recovered = dequantize_sum(quantize(values, spec), spec, count=1)
    assert np.max(np.abs(recovered - values)) <= quantization_step(spec) / 2 + 1e-6


def test_stochastic_rounding_is_unbiased() -> None:
    spec = RingSpec(bits=8, clip=1.0, num_clients=2)
    value = np.full(100_000, 0.3, np.float32)
    recovered = dequantize_sum(quantize(value, spec, np.random.default_rng(2)), spec, count=1)
    assert abs(float(recovered.mean()) - 0.3) < quantization_step(spec) / 50


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError, match="1 NaN"):
        quantize(np.array([0.0, np.nan], np.float32), SPEC)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bits": 33, "clip": 1.0, "num_clients": 2}, "bits"),
        ({"bits": 0, "clip": 1.0, "num_clients": 2}, "bits"),
        ({"clip": 0.0, "num_clients": 2}, "clip"),
        ({"clip": float("inf"), "num_clients": 2}, "clip"),
        ({"clip": 1.0, "num_clients": 0}, "num_clients"),
        ({"bits": 4, "clip": 1.0, "num_clients": 16}, "num_clients"),
    ],
)
def test_invalid_specs_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RingSpec(**kwargs)  # type: ignore[arg-type]


def test_dequantizing_more_clients_than_the_spec_allows_is_refused() -> None:
    with pytest.raises(ValueError, match="count"):
        dequantize_sum(np.zeros(3, np.uint32), SPEC, count=6)


def test_nearest_rounding_matches_the_shared_fixed_point_arithmetic() -> None:
    spec = RingSpec(clip=0.5, num_clients=100)
    values = np.random.default_rng(3).uniform(-0.8, 0.8, 200_003).astype(np.float32)
    expected = to_levels(values, spec.clip, spec.scale, spec.max_level).astype(np.uint32)
    np.testing.assert_array_equal(quantize(values, spec), expected)


def test_stochastic_rounding_is_reproducible_from_a_seeded_generator() -> None:
    values = np.random.default_rng(4).uniform(-1, 1, 150_000).astype(np.float32)
    first = quantize(values, SPEC, np.random.default_rng(9))
    np.testing.assert_array_equal(first, quantize(values, SPEC, np.random.default_rng(9)))
    assert not np.array_equal(first, quantize(values, SPEC, np.random.default_rng(10)))
    nearest = quantize(values, SPEC).astype(np.int64)
    assert np.abs(first.astype(np.int64) - nearest).max() <= 1


def test_nan_in_a_later_chunk_is_refused_with_the_count() -> None:
    values = np.zeros(300_000, np.float32)
    values[[250_000, 299_999]] = np.nan
    with pytest.raises(ValueError, match="2 NaN"):
        quantize(values, SPEC, np.random.default_rng(0))
