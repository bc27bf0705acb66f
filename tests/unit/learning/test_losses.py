"""The tasks' losses: the Cox partial likelihood against lifelines' fit and against its formula
with tied times (Breslow), the weighted and scaled variants."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter

from fedsilo.learning.losses import cox_partial_likelihood, task_loss
from fedsilo.tasks import LearningTask, LossSpec, TargetScaling


def test_minimising_the_cox_loss_gives_lifelines_coefficients() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3))
    beta = np.array([0.8, -0.5, 0.0])
    times = rng.exponential(1.0 / np.exp(x @ beta))  # continuous: no ties
    censor = rng.exponential(2.0, size=300)
    observed, events = np.minimum(times, censor), (times <= censor).astype(float)
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(t=observed, e=events)
    reference = CoxPHFitter().fit(frame, duration_col="t", event_col="e").params_.to_numpy()

    weights = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    features = torch.from_numpy(x)
    targets = torch.from_numpy(np.stack([observed, events], axis=1))
    optimizer = torch.optim.LBFGS([weights], max_iter=200, tolerance_grad=1e-10)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = cox_partial_likelihood(features @ weights, targets)
        torch.autograd.backward(loss)
        return loss

    optimizer.step(closure)
    assert weights.detach().numpy() == pytest.approx(reference, abs=1e-4)


def test_tied_times_share_one_risk_set_as_breslow_counts_them() -> None:
    risk = torch.tensor([0.2, -0.1, 0.5, 0.0], dtype=torch.float64)
    times = torch.tensor([[2.0, 1.0], [1.0, 1.0], [1.0, 1.0], [3.0, 0.0]], dtype=torch.float64)
    e = [math.exp(r) for r in risk.tolist()]
    everyone = sum(e)  # at t = 1 all four are at risk, both tied events included
    at_two = e[0] + e[3]
    expected = (
        -(
            (risk[1].item() - math.log(everyone))
            + (risk[2].item() - math.log(everyone))
            + (risk[0].item() - math.log(at_two))
        )
        / 3
    )
    assert cox_partial_likelihood(risk, times).item() == pytest.approx(expected)


def test_a_batch_without_events_has_zero_loss_and_a_gradient() -> None:
    risk = torch.tensor([0.3, 0.1], requires_grad=True)
    loss = cox_partial_likelihood(risk, torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    torch.autograd.backward(loss)
    assert loss.item() == 0.0 and risk.grad is not None


def test_positive_class_weight_and_class_weights_change_the_loss() -> None:
    logits = torch.tensor([[0.0], [0.0]])
    labels = torch.tensor([1.0, 0.0])
    plain = task_loss(LearningTask())(logits, labels).item()
    weighted = task_loss(LearningTask(loss=LossSpec(pos_weight=3.0)))(logits, labels).item()
    assert plain == pytest.approx(math.log(2)) and weighted == pytest.approx(2 * math.log(2))
    task = LearningTask(
        name="multiclass",
        classes=(0, 1),
        loss=LossSpec(class_weights=[1.0, 4.0]),
        metric="macro_f1",
    )
    both = task_loss(task)(torch.zeros(2, 2), torch.tensor([0.0, 1.0])).item()
    assert both == pytest.approx((1 + 4) * math.log(2) / 2)


def test_regression_losses_see_the_scaled_target() -> None:
    task = LearningTask(name="regression", target=TargetScaling(center=100, scale=10), metric="r2")
    outputs = torch.tensor([[0.0], [1.0]])
    assert task_loss(task)(outputs, torch.tensor([100.0, 110.0])).item() == pytest.approx(0.0)
    huber = LearningTask(
        name="regression", loss=LossSpec(name="huber", huber_delta=1.0), metric="r2"
    )
    # |error| 3 > delta: delta * (|e| - delta / 2) = 2.5
    assert task_loss(huber)(torch.tensor([[0.0]]), torch.tensor([3.0])).item() == pytest.approx(2.5)
