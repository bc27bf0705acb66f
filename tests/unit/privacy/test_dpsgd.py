from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedsilo.data import TabularData
from fedsilo.jobs import ModelSpec
from fedsilo.learning import build_model, evaluate, flatten, load_flat, manifest
from fedsilo.privacy import epsilon_after
from fedsilo.privacy.dpsgd import make_private_training, train_private

DELTA = 1e-5


def separable(num: int, seed: int = 0, num_features: int = 4) -> TabularData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * num, num_features)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)
    names = tuple(f"f{i}" for i in range(num_features))
    return TabularData(names, x[:num], y[:num], x[num:], y[num:])


def train(
    model: torch.nn.Module, data: TabularData, *, noise: float = 1.0, steps: int = 100
) -> float:
    return train_private(
        model,
        data,
        steps=steps,
        batch_size=16,
        learning_rate=0.5,
        seed=0,
        noise_multiplier=noise,
        max_grad_norm=1.0,
        delta=DELTA,
    ).epsilon


def test_dp_sgd_trains_a_logistic_regression() -> None:
    data = separable(200)
    model = build_model(ModelSpec(), data.num_features, seed=0)
    names = manifest(model)
    before = evaluate(model, data.x_test, data.y_test)

    result = train_private(
        model,
        data,
        steps=100,
        batch_size=16,
        learning_rate=0.5,
        seed=0,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        delta=DELTA,
    )

    after = evaluate(model, data.x_test, data.y_test)
    assert after.loss < before.loss / 2
    assert after.accuracy > 0.9
    assert 0 < result.epsilon < math.inf
    assert (result.num_examples, result.steps) == (200, 100)
    assert 0 < result.mean_loss < before.loss
    assert manifest(model) == names
    assert isinstance(model, torch.nn.Sequential)


def test_the_trained_model_is_free_of_opacus_state() -> None:
    data = separable(50)
    model = build_model(ModelSpec(), data.num_features, seed=0)

    train(model, data, steps=5)

    vector = flatten(model)
    load_flat(model, vector * 2)
    assert np.array_equal(flatten(model), vector * 2)
    assert all(not hasattr(p, "grad_sample") for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_epsilon_is_opacus_rdp_for_the_steps_taken() -> None:
    data = separable(200)
    model = build_model(ModelSpec(), data.num_features, seed=0)

    result = train_private(
        model,
        data,
        steps=60,
        batch_size=16,
        learning_rate=0.1,
        seed=0,
        noise_multiplier=1.2,
        max_grad_norm=1.0,
        delta=DELTA,
    )

    assert result.sample_rate == pytest.approx(1 / math.ceil(200 / 16))
    ours = epsilon_after(60, 1.2, result.sample_rate, DELTA)
    assert result.epsilon == pytest.approx(ours, rel=0.02)


def test_more_noise_gives_smaller_epsilon() -> None:
    data = separable(100)

    low, high = (
        train(build_model(ModelSpec(), data.num_features), data, noise=noise, steps=20)
        for noise in (0.8, 2.0)
    )

    assert high < low


def test_no_noise_gives_infinite_epsilon() -> None:
    data = separable(50)

    assert train(build_model(ModelSpec(), data.num_features), data, noise=0.0, steps=3) == math.inf


def test_an_mlp_with_dropout_trains_reproducibly() -> None:
    data = separable(100)
    spec = ModelSpec(name="mlp", hidden=[16], dropout=0.2)

    def trained(seed: int) -> np.ndarray:
        model = build_model(spec, data.num_features, seed=0)
        train_private(
            model,
            data,
            steps=30,
            batch_size=8,
            learning_rate=0.2,
            optimizer="adam",
            seed=seed,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            delta=DELTA,
        )
        return flatten(model)

    first = trained(1)
    assert np.array_equal(first, trained(1))
    assert not np.array_equal(first, trained(2))


def test_training_leaves_the_global_generator_alone() -> None:
    data = separable(20)
    before = torch.get_rng_state()

    train(build_model(ModelSpec(name="mlp", hidden=[4], dropout=0.5), data.num_features), data)

    assert torch.equal(torch.get_rng_state(), before)


def test_make_private_training_exposes_the_wrapped_objects() -> None:
    data = separable(40)
    model = build_model(ModelSpec(), data.num_features)

    training = make_private_training(
        model,
        data,
        batch_size=10,
        learning_rate=0.1,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        seed=0,
    )

    assert training.sample_rate == pytest.approx(0.25)
    assert training.epsilon(DELTA) == 0.0
    assert training.release() is model


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"delta": 0.0}, "delta"),
        ({"steps": 0}, "steps"),
    ],
)
def test_bad_arguments_are_named(overrides: dict[str, float], named: str) -> None:
    data = separable(10)
    arguments: dict[str, float] = {
        "steps": 1,
        "batch_size": 4,
        "learning_rate": 0.1,
        "seed": 0,
        "noise_multiplier": 1.0,
        "max_grad_norm": 1.0,
        "delta": DELTA,
    }
    arguments.update(overrides)

    with pytest.raises(ValueError, match=named):
        train_private(build_model(ModelSpec(), data.num_features), data, **arguments)  # type: ignore[arg-type]


def test_empty_poisson_samples_are_steps_without_nan() -> None:
    data = separable(3)  # batch_size 1: q = 1/3, so about 30% of the samples are empty
    model = build_model(ModelSpec(), data.num_features)

    result = train_private(
        model,
        data,
        steps=30,
        batch_size=1,
        learning_rate=0.1,
        seed=0,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        delta=DELTA,
    )

    assert np.all(np.isfinite(flatten(model)))
    assert math.isfinite(result.mean_loss)
    assert result.steps == 30
