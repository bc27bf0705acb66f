"""What a job learns: its task (binary, multiclass, regression, survival), the task's loss and
metrics. Torch-free: the control plane validates jobs with it and never needs to know more
(it moves and sums tensors); the sites train and score with fedsilo.learning.

A job may leave its task out: each site then takes the one its label declaration implies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TaskName = Literal["binary", "multiclass", "regression", "survival"]
MetricName = Literal[
    "accuracy",
    "balanced_accuracy",
    "auc",
    "average_precision",
    "macro_f1",
    "log_loss",
    "mse",
    "mae",
    "r2",
    "c_index",
]
LossName = Literal["bce", "cross_entropy", "mse", "huber", "cox"]
Category = float | int | str

# Every metric a site computes for the task, the default (primary) one first.
METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auc", "accuracy", "balanced_accuracy", "average_precision", "macro_f1", "log_loss"),
    "multiclass": ("macro_f1", "accuracy", "balanced_accuracy", "auc", "log_loss"),
    "regression": ("r2", "mse", "mae"),
    "survival": ("c_index",),
}
LOSSES: dict[str, tuple[str, ...]] = {
    "binary": ("bce",),
    "multiclass": ("cross_entropy",),
    "regression": ("mse", "huber"),
    "survival": ("cox",),
}
LOWER_IS_BETTER = frozenset({"log_loss", "mse", "mae"})


def default_metric(task: str) -> str:
    return METRICS[task][0]


class LossSpec(BaseModel):
    """The task's loss and its options; `name` defaults to the task's (bce, cross_entropy,
    mse, cox)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: LossName | None = None
    pos_weight: float | None = Field(
        None, gt=0, description="binary: weight of the positive class's examples"
    )
    class_weights: list[float] | None = Field(
        None, min_length=2, description="multiclass: one weight per class, in classes order"
    )
    huber_delta: float = Field(1.0, gt=0, description="huber: where the loss turns linear")

    @model_validator(mode="after")
    def _weights_positive(self) -> LossSpec:
        if self.class_weights is not None and min(self.class_weights) <= 0:
            raise ValueError("class_weights must all be positive")
        return self


class TargetScaling(BaseModel):
    """Regression: the model learns (y - center) / scale; predictions and metrics are in the
    target's own units. One pair for the whole job, so every site's target means the same."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    center: float = 0.0
    scale: float = Field(1.0, gt=0)


_NO_SCALING = TargetScaling()


def task_problem(
    task: str,
    *,
    classes: list[Category] | None,
    loss: LossSpec,
    target: TargetScaling,
    metric: str | None,
    model: str,
    sample_dp: bool,
) -> str | None:
    """What is wrong with these settings for `task`, described; None if they fit."""
    if metric is not None and metric not in METRICS[task]:
        return (
            f"metric '{metric}' does not apply to a {task} task; choose {', '.join(METRICS[task])}"
        )
    if loss.name is not None and loss.name not in LOSSES[task]:
        choices = ", ".join(LOSSES[task])
        return f"loss.name '{loss.name}' does not apply to a {task} task; choose {choices}"
    if loss.pos_weight is not None and task != "binary":
        return f"loss.pos_weight applies to binary tasks, not {task}"
    if loss.class_weights is not None:
        if task != "multiclass":
            return f"loss.class_weights applies to multiclass tasks, not {task}"
        if classes is not None and len(loss.class_weights) != len(classes):
            return (
                f"loss.class_weights has {len(loss.class_weights)} weights for "
                f"{len(classes)} classes"
            )
    if classes is not None:
        if task not in ("binary", "multiclass"):
            return f"classes applies to binary and multiclass tasks, not {task}"
        if task == "binary" and len(classes) != 2:
            return f"a binary task has two classes (negative, positive), got {classes}"
    if target != _NO_SCALING and task != "regression":
        return f"target scaling applies to regression tasks, not {task}"
    if model == "cox" and task != "survival":
        return f"model 'cox' is a survival model; the task is {task}"
    if sample_dp and task == "survival":
        return (
            "privacy.mode 'sample' (DP-SGD) bounds each example's own loss term, but the Cox "
            "partial likelihood couples every example with its risk set, so the accounting "
            "would not hold: use privacy.mode 'client' for survival jobs"
        )
    return None


@dataclass(frozen=True)
class LearningTask:
    """A job's task as a site runs it: the job's settings, resolved against the site's label
    declaration (the task it implies, the classes it declares)."""

    name: TaskName = "binary"
    classes: tuple[Category, ...] = ()
    loss: LossSpec = field(default_factory=LossSpec)
    target: TargetScaling = field(default_factory=TargetScaling)
    metric: str = "auc"

    @property
    def num_outputs(self) -> int:
        return len(self.classes) if self.name == "multiclass" else 1

    @property
    def loss_name(self) -> str:
        return self.loss.name or LOSSES[self.name][0]

    @property
    def metrics(self) -> tuple[str, ...]:
        return METRICS[self.name]

    def key(self) -> str:
        """A stable text key (a dataset loaded for one task is cached under it)."""
        return json.dumps(self.to_json(), sort_keys=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "classes": list(self.classes),
            "loss": self.loss.model_dump(),
            "target": self.target.model_dump(),
            "metric": self.metric,
        }


BINARY = LearningTask()
