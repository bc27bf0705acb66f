"""Local training and evaluation on a site's tabular data for its task, and the pooled
baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fedsilo.data import TabularData
from fedsilo.jobs import ModelSpec
from fedsilo.learning.losses import task_loss
from fedsilo.learning.metrics import task_metrics
from fedsilo.learning.models import build_model
from fedsilo.tasks import BINARY, LearningTask

OptimizerName = Literal["sgd", "adam"]


@dataclass(frozen=True)
class TrainResult:
    """What a client reports besides its weights: examples (the FedAvg weight) and loss."""

    num_examples: int
    mean_loss: float
    steps: int


@dataclass(frozen=True)
class EvalResult:
    loss: float
    num_examples: int
    # The task's metrics (fedsilo.learning.metrics), and those undefined here with why.
    metrics: dict[str, float] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")


def train_local(
    model: nn.Module,
    data: TabularData,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    optimizer: OptimizerName = "sgd",
    seed: int,
    proximal_mu: float = 0.0,
    global_params: Sequence[torch.Tensor] | None = None,
) -> TrainResult:
    """Exactly `steps` minibatch updates on the train split, in place.

    Minibatches walk through a fresh seeded permutation each epoch, the last batch of an epoch
    possibly short (a shuffled DataLoader's order). With proximal_mu > 0 the objective adds
    FedProx's (mu/2)·||w - w_global||², w_global given as `global_params` in parameters() order.
    mean_loss is the data loss alone, averaged over the steps.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps} and {batch_size}")
    if learning_rate <= 0 or proximal_mu < 0:
        raise ValueError(
            f"need learning_rate > 0 and proximal_mu >= 0, got {learning_rate} and {proximal_mu}"
        )
    if data.num_train == 0:
        raise ValueError("the dataset has no training examples")
    params = list(model.parameters())
    if not params:
        raise ValueError("the model has no parameters to train")
    anchors = _proximal_anchors(params, global_params) if proximal_mu > 0 else []
    device = params[0].device
    x = torch.from_numpy(data.x_train).to(device)
    y = torch.from_numpy(data.y_train).to(device)
    data_loss = task_loss(data.task)
    step_optimizer = make_optimizer(optimizer, params, learning_rate)
    sampler = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    position = 0
    total_loss = 0.0
    devices = [device.index or 0] if device.type == "cuda" else []
    # Dropout draws from the global generator: seed it for reproducibility, then restore it.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model.train()
        for _ in range(steps):
            if position >= order.numel():
                order = torch.randperm(data.num_train, generator=sampler)
                position = 0
            batch = order[position : position + batch_size].to(device)
            position += batch_size
            step_optimizer.zero_grad()
            loss = data_loss(model(x[batch]), y[batch])
            objective = loss
            if anchors:
                objective = loss + 0.5 * proximal_mu * _squared_distance(params, anchors)
            torch.autograd.backward(objective)  # typed, unlike Tensor.backward
            step_optimizer.step()
            total_loss += float(loss.item())
    return TrainResult(num_examples=data.num_train, mean_loss=total_loss / steps, steps=steps)


def evaluate(
    model: nn.Module, x: NDArray[np.float32], y: NDArray[np.float32], task: LearningTask = BINARY
) -> EvalResult:
    """The task's mean loss and every metric of the task on (x, y)."""
    if x.shape[0] == 0:
        raise ValueError("cannot evaluate on zero examples")
    outputs = _outputs(model, x)
    labels = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)).to(outputs.device)
    loss = task_loss(task)(outputs, labels)
    report = task_metrics(task, np.asarray(y, dtype=np.float64), _scores(task, outputs))
    return EvalResult(
        loss=float(loss),
        num_examples=int(x.shape[0]),
        metrics=report.values,
        undefined=report.undefined,
    )


def predict(model: nn.Module, x: NDArray[np.float32], task: LearningTask) -> NDArray[np.float64]:
    """What the metrics score: the positive class's probability (binary), the classes'
    probabilities (multiclass), the prediction in the target's units (regression), the risk
    score (survival: higher means an earlier event)."""
    return _scores(task, _outputs(model, x))


def _outputs(model: nn.Module, x: NDArray[np.float32]) -> torch.Tensor:
    device = next(iter(model.parameters()), torch.empty(0)).device
    features = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        outputs: torch.Tensor = model(features)
    model.train(was_training)
    return outputs


def _scores(task: LearningTask, outputs: torch.Tensor) -> NDArray[np.float64]:
    values = outputs.double().cpu()
    match task.name:
        case "binary":
            return torch.sigmoid(values.squeeze(-1)).numpy()
        case "multiclass":
            return torch.softmax(values, dim=-1).numpy()
        case "regression":
            return (values.squeeze(-1) * task.target.scale + task.target.center).numpy()
    return values.squeeze(-1).numpy()


def train_centralized(
    datasets: Sequence[TabularData],
    *,
    model_spec: ModelSpec,
    batch_size: int,
    learning_rate: float,
    seed: int,
    epochs: int | None = None,
    steps: int | None = None,
    optimizer: OptimizerName = "sgd",
) -> nn.Module:
    """The pooled baseline: one model trained on the union of the sites' train splits.

    Each split keeps its own site's standardisation. The budget is either `epochs` over the
    pooled data (ceil(n / batch_size) steps each) or a number of `steps`, not both.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs and steps")
    pooled = pool_train_splits(datasets)
    if epochs is not None:
        steps = epochs * math.ceil(pooled.num_train / batch_size)
    assert steps is not None
    model = build_model(
        model_spec, pooled.num_features, num_outputs=pooled.task.num_outputs, seed=seed
    )
    train_local(
        model,
        pooled,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        optimizer=optimizer,
        seed=seed,
    )
    return model


def pool_train_splits(datasets: Sequence[TabularData]) -> TabularData:
    """Concatenated train (and test) splits of sites that share one feature layout."""
    if not datasets:
        raise ValueError("no datasets to pool")
    names = datasets[0].feature_names
    for index, data in enumerate(datasets):
        if data.feature_names != names:
            raise ValueError(
                f"dataset {index} has features {list(data.feature_names)}, "
                f"dataset 0 has {list(names)}: sites must declare the same columns to pool"
            )
        if data.task != datasets[0].task:
            raise ValueError(f"dataset {index} was loaded for another task than dataset 0")
    return TabularData(
        feature_names=names,
        x_train=np.concatenate([data.x_train for data in datasets]),
        y_train=np.concatenate([data.y_train for data in datasets]),
        x_test=np.concatenate([data.x_test for data in datasets]),
        y_test=np.concatenate([data.y_test for data in datasets]),
        task=datasets[0].task,
    )


def make_optimizer(
    name: OptimizerName, params: list[nn.Parameter], learning_rate: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate)
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate)
    raise ValueError(f"unknown optimizer '{name}'; choose sgd or adam")


def _squared_distance(params: list[nn.Parameter], anchors: list[torch.Tensor]) -> torch.Tensor:
    total = torch.zeros((), device=anchors[0].device, dtype=anchors[0].dtype)
    for param, anchor in zip(params, anchors, strict=True):
        total = total + ((param - anchor) ** 2).sum()
    return total


def _proximal_anchors(
    params: list[nn.Parameter], global_params: Sequence[torch.Tensor] | None
) -> list[torch.Tensor]:
    if global_params is None:
        raise ValueError("proximal_mu > 0 needs global_params, the round's global weights")
    if len(global_params) != len(params):
        raise ValueError(
            f"global_params has {len(global_params)} tensors, the model {len(params)} parameters"
        )
    anchors = []
    for index, (param, anchor) in enumerate(zip(params, global_params, strict=True)):
        if anchor.shape != param.shape:
            raise ValueError(
                f"global_params[{index}] has shape {tuple(anchor.shape)}, "
                f"the parameter {tuple(param.shape)}"
            )
        anchors.append(anchor.detach().to(param.device, param.dtype))
    return anchors
