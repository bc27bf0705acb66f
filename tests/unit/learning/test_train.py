import numpy as np
import pytest
import torch
from torch import nn

from fedsilo.data import TabularData
from fedsilo.jobs import ModelSpec
from fedsilo.learning import (
    build_model,
    evaluate,
    flatten,
    train_centralized,
    train_local,
)
from fedsilo.tasks import LearningTask


def separable(num: int, seed: int = 0, num_features: int = 4) -> TabularData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * num, num_features)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)
    names = tuple(f"f{i}" for i in range(num_features))
    return TabularData(names, x[:num], y[:num], x[num:], y[num:])


def distance(model: nn.Module, reference: np.ndarray) -> float:
    return float(np.linalg.norm(flatten(model) - reference))


def test_training_lowers_the_loss_on_separable_data():
    data = separable(200)
    model = build_model(ModelSpec(), data.num_features, seed=0)
    before = evaluate(model, data.x_test, data.y_test)

    result = train_local(model, data, steps=300, batch_size=8, learning_rate=0.1, seed=0)

    after = evaluate(model, data.x_test, data.y_test)
    assert after.loss < before.loss / 2
    assert after.accuracy > 0.9
    assert (result.num_examples, result.steps) == (200, 300)
    assert 0 < result.mean_loss < before.loss


def test_the_same_seed_gives_identical_weights():
    data = separable(50)
    spec = ModelSpec(name="mlp", hidden=[16], dropout=0.3)

    def trained(seed: int) -> np.ndarray:
        model = build_model(spec, data.num_features, seed=0)
        train_local(model, data, steps=40, batch_size=4, learning_rate=0.05, seed=seed)
        return flatten(model)

    assert np.array_equal(trained(1), trained(1))
    assert not np.array_equal(trained(1), trained(2))


def test_training_leaves_the_global_generator_alone():
    data = separable(20)
    model = build_model(ModelSpec(name="mlp", hidden=[8], dropout=0.5), data.num_features)
    before = torch.get_rng_state()

    train_local(model, data, steps=10, batch_size=4, learning_rate=0.01, seed=0)

    assert torch.equal(torch.get_rng_state(), before)


def test_exactly_steps_updates_walk_through_reshuffled_epochs():
    num = 10
    x = np.arange(num, dtype=np.float32)[:, None]
    data = TabularData(("row",), x, np.zeros(num, np.float32), x[:1], np.zeros(1, np.float32))
    model = build_model(ModelSpec(), in_features=1)
    batches: list[list[int]] = []
    model.register_forward_hook(
        lambda _module, inputs, _output: batches.append(inputs[0][:, 0].int().tolist())
    )

    train_local(model, data, steps=7, batch_size=4, learning_rate=0.01, seed=0)

    assert [len(batch) for batch in batches] == [4, 4, 2, 4, 4, 2, 4]
    first_epoch = sorted(row for batch in batches[:3] for row in batch)
    second_epoch = [row for batch in batches[3:6] for row in batch]
    assert first_epoch == list(range(num))
    assert sorted(second_epoch) == list(range(num))
    assert second_epoch != [row for batch in batches[:3] for row in batch]


def test_a_huge_proximal_term_keeps_the_weights_near_the_global_ones():
    data = separable(100)
    start = build_model(ModelSpec(), data.num_features, seed=0)
    global_weights = flatten(start)

    def moved(mu: float) -> float:
        model = build_model(ModelSpec(), data.num_features, seed=0)
        anchors = [p.detach().clone() for p in model.parameters()]
        train_local(
            model, data, steps=200, batch_size=4, learning_rate=0.005, seed=0,
            proximal_mu=mu, global_params=anchors,
        )  # fmt: skip
        return distance(model, global_weights)

    assert moved(100.0) < 0.05 * moved(0.0)


def test_a_proximal_term_needs_the_global_weights():
    data = separable(10)
    model = build_model(ModelSpec(), data.num_features)

    with pytest.raises(ValueError, match="needs global_params"):
        train_local(model, data, steps=1, batch_size=4, learning_rate=0.1, seed=0, proximal_mu=1)


def test_adam_and_several_classes_train_too():
    rng = np.random.default_rng(0)
    centres = np.array([[3, 0], [-3, 0], [0, 3]], dtype=np.float32)
    y = rng.integers(0, 3, size=300).astype(np.float32)
    x = (centres[y.astype(int)] + rng.normal(size=(300, 2))).astype(np.float32)
    task = LearningTask(name="multiclass", classes=(0, 1, 2), metric="macro_f1")
    data = TabularData(("a", "b"), x[:200], y[:200], x[200:], y[200:], task=task)
    model = build_model(ModelSpec(), 2, num_outputs=3)

    train_local(model, data, steps=300, batch_size=16, learning_rate=0.05, optimizer="adam", seed=0)

    result = evaluate(model, data.x_test, data.y_test, task)
    assert result.accuracy is not None and result.accuracy > 0.9
    assert result.metrics["macro_f1"] > 0.9 and result.metrics["auc"] > 0.95


def test_evaluate_thresholds_the_probability_at_one_half():
    model = build_model(ModelSpec(), in_features=1)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(0.0)
    x = np.array([[-2.0], [-1.0], [0.0], [2.0]], dtype=np.float32)
    y = np.array([0.0, 1.0, 1.0, 1.0], dtype=np.float32)

    result = evaluate(model, x, y)

    expected_loss = np.mean(
        [np.log1p(np.exp(-2)), np.log1p(np.exp(1)), np.log(2), np.log1p(np.exp(-2))]
    )
    assert result.accuracy == 0.75
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)
    assert result.num_examples == 4


def test_pooled_training_runs_the_requested_budget_on_all_train_splits():
    sites = [separable(30, seed=1), separable(50, seed=2)]
    spec = ModelSpec()

    by_epochs = train_centralized(
        sites, model_spec=spec, epochs=10, batch_size=4, learning_rate=0.1, seed=0
    )
    by_steps = train_centralized(
        sites, model_spec=spec, steps=200, batch_size=4, learning_rate=0.1, seed=0
    )

    # 80 pooled examples in batches of 4: ten epochs are 200 steps
    assert np.array_equal(flatten(by_epochs), flatten(by_steps))
    assert evaluate(by_epochs, sites[1].x_test, sites[1].y_test).accuracy > 0.8


def test_pooling_needs_one_feature_layout_and_one_budget():
    sites = [separable(10, num_features=3), separable(10, num_features=4)]

    with pytest.raises(ValueError, match="exactly one of epochs and steps"):
        train_centralized(
            sites[:1], model_spec=ModelSpec(), batch_size=4, learning_rate=0.1, seed=0
        )
    with pytest.raises(ValueError, match="must declare the same columns"):
        train_centralized(
            sites, model_spec=ModelSpec(), epochs=1, batch_size=4, learning_rate=0.1, seed=0
        )
