"""Sample-level DP-SGD at one site with Opacus (Abadi et al. 2016).

Each step draws a Poisson sample of the train split (every example independently with
probability q), clips every example's gradient to `max_grad_norm`, adds Gaussian noise of
std noise_multiplier · max_grad_norm to the sum and divides by the expected batch size.
Opacus sets q = 1 / ceil(num_train / batch_size), which is the rate its accountant records;
`PrivateTrainResult.sample_rate` reports it so that a site's job-long accountant can record
the same events (`PrivacyAccountant.record_round(z, sample_rate, count=steps)` per round).

Reproducibility: batches and noise come from two torch Generators seeded from `seed`, and
dropout from the global generator, seeded inside and restored afterwards, so a run on CPU is
repeatable bit for bit. GPU kernels may still differ in the last bits between runs. Seeded
noise is for experiments: Opacus's secure_mode (a CSPRNG, needs torchcsprng, which this
platform does not ship) refuses a seed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsilo.data import TabularData
from fedsilo.learning.losses import task_loss
from fedsilo.learning.train import OptimizerName, make_optimizer

# Opacus warns on every engine built without secure_mode (the module docstring says why), and
# torch on every backward through Opacus's hooks when the inputs need no gradient, as here.
_SECURE_RNG_WARNING = "Secure RNG turned off"
_BACKWARD_HOOK_WARNING = "Full backward hook is firing"


@dataclass(frozen=True)
class PrivateTrainResult:
    """What train_private reports: train_local's fields, ε at δ from Opacus's RDP accountant
    for these steps alone, and the sample rate its events used."""

    num_examples: int
    mean_loss: float
    steps: int
    epsilon: float
    sample_rate: float


@dataclass
class PrivateTraining:
    """The Opacus-wrapped model, optimizer and Poisson data loader, and their accountant.

    `module` wraps the caller's model (which trains in place); call `release()` when done so
    that the model is left without Opacus's hooks and per-sample gradient attributes.
    """

    module: nn.Module
    optimizer: torch.optim.Optimizer
    data_loader: DataLoader[Any]
    engine: Any  # opacus.PrivacyEngine, untyped
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float

    def epsilon(self, delta: float) -> float:
        """ε at `delta` for the steps taken so far, from Opacus's RDP accountant."""
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if not self.engine.accountant.history:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf  # Opacus gets there too, with a warning about its orders
        return float(self.engine.get_epsilon(delta))

    def release(self) -> nn.Module:
        """The original model, Opacus's hooks and attributes removed."""
        standard: nn.Module = self.module.to_standard_module()  # type: ignore[operator]
        return standard


def make_private_training(
    model: nn.Module,
    data: TabularData,
    *,
    batch_size: int,
    learning_rate: float,
    optimizer: OptimizerName = "sgd",
    noise_multiplier: float,
    max_grad_norm: float,
    seed: int,
) -> PrivateTraining:
    """Wrap `model`, an optimizer over its parameters and a loader over the train split with
    Opacus's PrivacyEngine (Poisson sampling, flat clipping, RDP accountant)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if not math.isfinite(noise_multiplier) or noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    if not math.isfinite(max_grad_norm) or max_grad_norm <= 0:
        raise ValueError(f"max_grad_norm must be finite and > 0, got {max_grad_norm}")
    if data.num_train == 0:
        raise ValueError("the dataset has no training examples")
    params = list(model.parameters())
    if not params:
        raise ValueError("the model has no parameters to train")
    device = params[0].device
    # Separate streams: batch selection and noise must not be drawn from one sequence.
    sampling_seed, noise_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    dataset = TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(sampling_seed),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SECURE_RNG_WARNING)
        engine = PrivacyEngine(accountant="rdp")
    module, dp_optimizer, dp_loader = engine.make_private(
        module=model,
        optimizer=make_optimizer(optimizer, params, learning_rate),
        data_loader=loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        poisson_sampling=True,
        noise_generator=torch.Generator(device=device).manual_seed(noise_seed),
    )
    return PrivateTraining(
        module=module,
        optimizer=dp_optimizer,
        data_loader=dp_loader,
        engine=engine,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        sample_rate=float(dp_loader.sample_rate),
    )


def train_private(
    model: nn.Module,
    data: TabularData,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    optimizer: OptimizerName = "sgd",
    seed: int,
    noise_multiplier: float,
    max_grad_norm: float,
    delta: float,
) -> PrivateTrainResult:
    """Exactly `steps` DP-SGD steps on the train split, in place; `model` keeps its parameter
    names and shapes and carries no Opacus state afterwards.

    mean_loss averages the batches' data loss over the steps whose Poisson sample was not
    empty (an empty sample is still a step: it adds noise and counts for the accountant).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    training = make_private_training(
        model,
        data,
        batch_size=batch_size,
        learning_rate=learning_rate,
        optimizer=optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        seed=seed,
    )
    device = next(model.parameters()).device
    devices = [device.index or 0] if device.type == "cuda" else []
    if data.task.name == "survival":
        raise ValueError(
            "DP-SGD bounds each example's own loss term; the Cox partial likelihood couples "
            "examples through their risk sets, so use client-level DP for survival"
        )
    data_loss = task_loss(data.task)
    total_loss, nonempty = 0.0, 0
    try:
        # Dropout draws from the global generator: seed it for reproducibility, then restore.
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_BACKWARD_HOOK_WARNING)
            torch.manual_seed(seed)
            training.module.train()
            batches = _endless(training.data_loader)
            for _ in range(steps):
                x, y = next(batches)
                training.optimizer.zero_grad()
                loss = data_loss(training.module(x.to(device)), y.to(device))
                torch.autograd.backward(loss)
                training.optimizer.step()
                if x.shape[0] > 0:
                    total_loss += float(loss.item())
                    nonempty += 1
        epsilon = training.epsilon(delta)
    finally:
        training.release()
    return PrivateTrainResult(
        num_examples=data.num_train,
        mean_loss=total_loss / nonempty if nonempty else math.nan,
        steps=steps,
        epsilon=epsilon,
        sample_rate=training.sample_rate,
    )


def _endless(loader: DataLoader[Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    # Opacus's loader yields about 1/q batches per pass; each pass draws fresh Poisson samples.
    while True:
        yield from loader
