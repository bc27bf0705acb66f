"""The task's training loss: each a mean over the batch, 0 for an empty batch (which DP-SGD's
Poisson sampling can draw)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional

from fedsilo.tasks import LearningTask

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def task_loss(task: LearningTask) -> Loss:
    """loss(outputs, targets) for `task`: binary cross-entropy (optional positive-class
    weight), cross-entropy (optional class weights), MSE or Huber on the scaled target, or the
    Cox partial likelihood with Breslow ties over the batch."""
    name = task.loss_name
    if name == "bce":
        pos_weight = task.loss.pos_weight

        def bce(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            weight = None if pos_weight is None else torch.tensor(pos_weight, device=outputs.device)
            total = functional.binary_cross_entropy_with_logits(
                outputs.squeeze(-1), labels, pos_weight=weight, reduction="sum"
            )
            return total / max(int(labels.shape[0]), 1)

        return bce
    if name == "cross_entropy":
        weights = task.loss.class_weights

        def cross_entropy(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            weight = None if weights is None else torch.tensor(weights, device=outputs.device)
            per_example = functional.cross_entropy(
                outputs, labels.long(), weight=weight, reduction="none"
            )
            return per_example.sum() / max(int(labels.shape[0]), 1)

        return cross_entropy
    if name in ("mse", "huber"):
        center, scale, delta = task.target.center, task.target.scale, task.loss.huber_delta

        def regression(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            scaled = (targets - center) / scale
            if name == "mse":
                total = functional.mse_loss(outputs.squeeze(-1), scaled, reduction="sum")
            else:
                total = functional.huber_loss(
                    outputs.squeeze(-1), scaled, delta=delta, reduction="sum"
                )
            return total / max(int(targets.shape[0]), 1)

        return regression
    if name == "cox":
        return cox_partial_likelihood
    raise ValueError(f"unknown loss '{name}'")


def cox_partial_likelihood(risk: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The negative Cox log partial likelihood of the batch, per event, Breslow's handling of
    ties: each event's risk set is everyone in the batch still at risk at its time, tied
    times included. targets[:, 0] is the time, targets[:, 1] the event (1) or censoring (0);
    a batch without events has loss 0."""
    scores = risk.reshape(-1)
    times, events = targets[:, 0], targets[:, 1]
    if scores.numel() == 0 or float(events.sum()) == 0:
        return scores.sum() * 0.0
    order = torch.argsort(times, descending=True)
    scores, times, events = scores[order], times[order], events[order]
    # log of the sum of exp(risk) over everyone with time >= t_i: a running logsumexp down the
    # descending times, read at the last member of each group of tied times.
    running = torch.logcumsumexp(scores, dim=0)
    _, group, counts = torch.unique_consecutive(times, return_inverse=True, return_counts=True)
    last_of_group = torch.cumsum(counts, dim=0) - 1
    log_risk_set = running[last_of_group][group]
    return -((scores - log_risk_set) * events).sum() / events.sum()
