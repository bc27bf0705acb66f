from __future__ import annotations

import numpy as np
import pytest

from fedsilo.paillier import PackingSpec, dequantize_sum, pack, quantize, unpack

SPEC = PackingSpec(key_bits=512, num_clients=5, clip=1.0)


def test_derived_layout() -> None:
    assert SPEC.headroom_bits == 3  # ceil(log2(6))
    assert SPEC.slot_bits == 19  # 16 + 3: every bit of the plaintext is used
    assert SPEC.slots_per_plaintext == 510 // 19
    assert SPEC.scale == (2**16 - 1) / 2.0
    assert SPEC.num_ciphertexts(0) == 1
    assert SPEC.num_ciphertexts(26) == 2
    assert SPEC.num_ciphertexts(27) == 3


@pytest.mark.parametrize(
    "spec",
    [
        SPEC,
        PackingSpec(key_bits=2048, num_clients=1, clip=0.5, value_bits=8),
        PackingSpec(key_bits=2048, num_clients=255, clip=1.0),
        PackingSpec(key_bits=2048, num_clients=256, clip=1.0),
        PackingSpec(key_bits=1024, num_clients=1000, clip=0.1, value_bits=32),
    ],
)
def test_the_sum_of_num_clients_maximal_levels_does_not_carry(spec: PackingSpec) -> None:
    assert spec.num_clients * spec.max_level < 2**spec.slot_bits
    assert spec.slots_per_plaintext * spec.slot_bits <= spec.key_bits - 2
    num_values = 2 * spec.slots_per_plaintext + 3
    levels = np.full(num_values, spec.max_level, np.uint64)
    plaintexts = pack(levels, spec)

    summed = [spec.num_clients * p for p in plaintexts]

    assert all(s.bit_length() <= spec.key_bits - 2 for s in summed)
    expected = np.full(num_values, spec.num_clients * spec.max_level, np.uint64)
    np.testing.assert_array_equal(unpack(summed, spec, num_values), expected)


def test_pack_unpack_round_trip_with_a_padded_last_plaintext() -> None:
    rng = np.random.default_rng(0)
    num_values = 5 * SPEC.slots_per_plaintext + 7
    levels = rng.integers(0, SPEC.max_level, num_values, endpoint=True).astype(np.uint64)

    plaintexts = pack(levels, SPEC)

    assert len(plaintexts) == SPEC.num_ciphertexts(num_values) - 1
    np.testing.assert_array_equal(unpack(plaintexts, SPEC, num_values), levels)


def test_slots_are_big_endian_within_a_plaintext() -> None:
    levels = np.zeros(SPEC.slots_per_plaintext, np.uint64)
    levels[0], levels[-1] = 3, 5
    (plaintext,) = pack(levels, SPEC)
    assert plaintext == (3 << SPEC.slot_bits * (SPEC.slots_per_plaintext - 1)) + 5


def test_pack_refuses_levels_that_eat_the_headroom() -> None:
    with pytest.raises(ValueError, match="levels must be in"):
        pack(np.array([SPEC.max_level + 1], np.uint64), SPEC)


def test_unpack_refuses_plaintexts_that_do_not_match() -> None:
    plaintexts = pack(np.ones(30, np.uint64), SPEC)
    with pytest.raises(ValueError, match="take 1 plaintexts, got 2"):
        unpack(plaintexts, SPEC, 10)
    with pytest.raises(ValueError, match="padding slots"):
        unpack(plaintexts, SPEC, SPEC.slots_per_plaintext + 1)
    with pytest.raises(ValueError, match="plaintext 1 has"):
        unpack([plaintexts[0], 1 << 600], SPEC, 30)


def test_nearest_rounding_is_within_half_a_step_and_clips() -> None:
    values = np.linspace(-1.5, 1.5, 3001)
    levels = quantize(values, SPEC)
    assert levels.dtype == np.uint64
    assert int(levels.min()) == 0 and int(levels.max()) == SPEC.max_level
    recovered = dequantize_sum(levels, SPEC, count=1)
    clipped = np.clip(values, -1.0, 1.0)
    assert np.max(np.abs(recovered - clipped)) <= 0.5 / SPEC.scale + 1e-6


def test_stochastic_rounding_is_within_one_step_and_unbiased() -> None:
    rng = np.random.default_rng(1)
    values = rng.uniform(-1.0, 1.0, 100_000)
    recovered = dequantize_sum(quantize(values, SPEC, rng), SPEC, count=1)
    assert np.max(np.abs(recovered - values)) <= 1 / SPEC.scale + 1e-6
    assert abs(float(np.mean(recovered - values))) < 0.02 / SPEC.scale


def test_quantize_refuses_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([0.0, np.nan]), SPEC)


def test_dequantize_sum_refuses_a_count_beyond_num_clients() -> None:
    with pytest.raises(ValueError, match="count must be in"):
        dequantize_sum(np.zeros(3, np.uint64), SPEC, count=6)


def test_spec_refuses_layouts_that_cannot_work() -> None:
    with pytest.raises(ValueError, match="no room"):
        PackingSpec(key_bits=20, num_clients=5, clip=1.0)
    with pytest.raises(ValueError, match="more than 64"):
        PackingSpec(key_bits=2048, num_clients=2**20, clip=1.0, value_bits=48)
    with pytest.raises(ValueError, match="clip"):
        PackingSpec(key_bits=2048, num_clients=5, clip=0.0)
