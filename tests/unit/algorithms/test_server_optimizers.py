from __future__ import annotations

import numpy as np
import pytest

from fedsilo.algorithms import server_optimizer
from fedsilo.algorithms.registry import (
    FedAdagradParams,
    FedAdamParams,
    FedAvgParams,
    FedProxParams,
    FedYogiParams,
    proximal_mu,
)

W = np.array([1.0, -2.0, 0.5], np.float32)
D = np.array([0.1, -0.3, 0.0], np.float32)


def test_fedavg_moves_by_the_mean_delta() -> None:
    optimizer = server_optimizer(FedAvgParams(server_lr=0.5))
    new, state = optimizer.step(W, D, optimizer.initial_state(3))
    np.testing.assert_allclose(new, W + 0.5 * D)
    assert state == {}


def test_fedadam_follows_reddi_et_al() -> None:
    params = FedAdamParams(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    optimizer = server_optimizer(params)
    state = optimizer.initial_state(3)
    m = 0.1 * D
    v = 0.99 * np.full(3, 1e-6) + 0.01 * D**2
    new, state = optimizer.step(W, D, state)
    np.testing.assert_allclose(state["m"], m, rtol=1e-6)
    np.testing.assert_allclose(state["v"], v, rtol=1e-5)
    np.testing.assert_allclose(new, W + 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-5)


def test_fedyogi_second_moment_changes_additively() -> None:
    optimizer = server_optimizer(FedYogiParams(beta2=0.99, tau=1e-3))
    state = {"m": np.zeros(3, np.float32), "v": np.array([1.0, 0.0, 0.5], np.float32)}
    _, new_state = optimizer.step(W, D, state)
    expected_v = state["v"] - 0.01 * D**2 * np.sign(state["v"] - D**2)
    np.testing.assert_allclose(new_state["v"], expected_v, rtol=1e-6)


def test_fedadagrad_accumulates_squares() -> None:
    optimizer = server_optimizer(FedAdagradParams(tau=1e-3))
    state = optimizer.initial_state(3)
    _, state = optimizer.step(W, D, state)
    _, state = optimizer.step(W, D, state)
    np.testing.assert_allclose(state["v"], 1e-6 + 2 * D**2, rtol=1e-5)


@pytest.mark.parametrize("params", [FedAdamParams(), FedYogiParams(), FedAdagradParams()])
def test_adaptive_steps_decompose_over_coordinate_ranges(params: FedAdamParams) -> None:
    optimizer = server_optimizer(params)
    rng = np.random.default_rng(0)
    weights = rng.normal(size=50).astype(np.float32)
    delta = rng.normal(size=50).astype(np.float32)
    whole, whole_state = optimizer.step(weights, delta, optimizer.initial_state(50))
    left, left_state = optimizer.step(weights[:20], delta[:20], optimizer.initial_state(20))
    right, right_state = optimizer.step(weights[20:], delta[20:], optimizer.initial_state(30))
    np.testing.assert_array_equal(np.concatenate([left, right]), whole)
    for name in optimizer.state_names:
        np.testing.assert_array_equal(
            np.concatenate([left_state[name], right_state[name]]), whole_state[name]
        )


def test_only_fedprox_has_a_proximal_term() -> None:
    assert proximal_mu(FedProxParams(mu=0.3)) == 0.3
    assert proximal_mu(FedAdamParams()) == 0.0
