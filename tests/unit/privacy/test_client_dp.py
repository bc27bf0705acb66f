from __future__ import annotations

import numpy as np
import pytest

from fedsilo.privacy import (
    DifferentialPrivacy,
    add_gaussian_noise,
    clip_update,
    noise_std_per_client,
    privatize_update,
)


def test_clipping_bounds_the_norm_and_reports_the_original() -> None:
    delta = np.random.default_rng(0).normal(size=10_000).astype(np.float32)
    norm = float(np.linalg.norm(delta.astype(np.float64)))

    clipped, original = clip_update(delta, clip_norm=1.5)

    assert original == pytest.approx(norm, rel=1e-9)
    assert np.linalg.norm(clipped.astype(np.float64)) <= 1.5 * (1 + 1e-6)
    assert np.linalg.norm(clipped.astype(np.float64)) == pytest.approx(1.5, rel=1e-6)
    np.testing.assert_allclose(clipped / np.linalg.norm(clipped), delta / norm, rtol=1e-5)
    assert clipped.dtype == np.float32


def test_small_updates_come_back_unchanged_as_a_copy() -> None:
    delta = np.array([0.3, -0.4], dtype=np.float32)

    clipped, original = clip_update(delta, clip_norm=1.0)

    assert np.array_equal(clipped, delta)
    assert clipped is not delta
    assert original == pytest.approx(0.5)


def test_clipping_leaves_the_input_alone() -> None:
    delta = np.full(4, 10.0, dtype=np.float32)

    clip_update(delta, clip_norm=1.0)

    assert np.array_equal(delta, np.full(4, 10.0, dtype=np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_updates_are_refused(bad: float) -> None:
    delta = np.array([1.0, bad, 2.0], dtype=np.float32)

    with pytest.raises(ValueError, match="1 non-finite"):
        clip_update(delta, clip_norm=1.0)


def test_clipping_wants_a_flat_vector_and_a_positive_bound() -> None:
    with pytest.raises(ValueError, match="flat vector"):
        clip_update(np.zeros((2, 2), dtype=np.float32), clip_norm=1.0)
    with pytest.raises(ValueError, match="clip_norm"):
        clip_update(np.zeros(2, dtype=np.float32), clip_norm=0.0)


def test_noise_has_the_requested_standard_deviation() -> None:
    update = np.full(1_000_000, 2.0, dtype=np.float32)

    noisy = add_gaussian_noise(update, std=0.7, rng=np.random.default_rng(1))

    noise = noisy.astype(np.float64) - 2.0
    assert noisy.dtype == np.float32
    assert abs(noise.mean()) < 0.01
    assert noise.std() == pytest.approx(0.7, rel=0.01)


def test_zero_std_adds_nothing() -> None:
    update = np.arange(5, dtype=np.float32)

    assert np.array_equal(add_gaussian_noise(update, 0.0, np.random.default_rng(0)), update)


def test_central_noise_is_z_times_c_on_the_sum() -> None:
    assert noise_std_per_client(2.0, 1.5, num_clients=8, distributed=False) == pytest.approx(3.0)


def test_distributed_noise_shares_sum_to_z_times_c() -> None:
    clip_norm, noise_multiplier, clients = 0.5, 1.2, 9
    std = noise_std_per_client(clip_norm, noise_multiplier, clients, distributed=True)
    rng = np.random.default_rng(2)
    zeros = np.zeros(300_000, dtype=np.float32)

    total = sum(add_gaussian_noise(zeros, std, rng).astype(np.float64) for _ in range(clients))

    assert std == pytest.approx(noise_multiplier * clip_norm / 3)
    assert np.std(total) == pytest.approx(noise_multiplier * clip_norm, rel=0.01)


def test_noise_std_rejects_a_bad_client_count() -> None:
    with pytest.raises(ValueError, match="num_clients"):
        noise_std_per_client(1.0, 1.0, num_clients=0, distributed=True)


def test_privatize_update_clips_then_adds_this_clients_share() -> None:
    spec = DifferentialPrivacy(mode="client", clip_norm=1.0, noise_multiplier=2.0)
    delta = np.full(100_000, 0.1, dtype=np.float32)  # norm 31.6

    result = privatize_update(delta, spec, num_clients=4, rng=np.random.default_rng(3))

    assert result.clipped
    assert result.original_norm == pytest.approx(np.sqrt(1000.0), rel=1e-6)
    assert result.noise_std == pytest.approx(1.0)
    clipped_value = 1.0 / np.sqrt(100_000)
    assert np.std(result.vector) == pytest.approx(1.0, rel=0.02)
    assert np.mean(result.vector) == pytest.approx(clipped_value, abs=0.01)


def test_privatize_update_reports_an_unclipped_update() -> None:
    spec = DifferentialPrivacy(mode="client", clip_norm=10.0, noise_multiplier=0.0)
    delta = np.array([1.0, 2.0], dtype=np.float32)

    result = privatize_update(delta, spec, num_clients=1, rng=np.random.default_rng(0))

    assert not result.clipped
    assert result.noise_std == 0.0
    assert np.array_equal(result.vector, delta)


def test_privatize_update_refuses_sample_mode_and_unresolved_targets() -> None:
    delta = np.zeros(3, dtype=np.float32)
    rng = np.random.default_rng(0)
    sample = DifferentialPrivacy(mode="sample", clip_norm=1.0, noise_multiplier=1.0)
    target = DifferentialPrivacy(mode="client", clip_norm=1.0, target_epsilon=3.0)

    with pytest.raises(ValueError, match=r"privacy\.mode"):
        privatize_update(delta, sample, 1, rng)
    with pytest.raises(ValueError, match="resolved"):
        privatize_update(delta, target, 1, rng)
