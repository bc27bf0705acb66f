"""A dataset's label declaration, the task it implies, and the label column(s) turned into
targets for the job's task, checked row by row.

Forms of `label:` in a site config:
  {column: num, op: ">", value: 0}          binary: 1 where the comparison holds
  {column: outcome, task: binary}           binary: values 0 and 1 (or the job's two classes)
  {column: digit, task: multiclass, classes: [0, 1, 2]}
  {column: price, task: regression}
  {time: time, event: cens}                 survival: time to event (>= 0), event 0 or 1
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedsilo.data.encoding import DatasetError, category_key, cell_key, parse_numbers
from fedsilo.tasks import Category, LearningTask, TaskName, default_metric

Comparison = Literal[">", ">=", "<", "<=", "==", "!="]
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class LabelRule(BaseModel):
    """What a dataset's rows are labelled with; see the module's docstring for the forms."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | None = Field(None, min_length=1)
    op: Comparison | None = None
    value: float | None = None
    task: TaskName | None = None
    classes: list[Category] | None = Field(None, min_length=2)
    time: str | None = Field(None, min_length=1, description="survival: the time column")
    event: str | None = Field(None, min_length=1, description="survival: the event column (1/0)")

    @model_validator(mode="after")
    def _one_form(self) -> LabelRule:
        if (self.time is None) != (self.event is None):
            raise ValueError("label: a survival label needs both time and event columns")
        if self.time is not None:
            if self.column is not None or self.op is not None:
                raise ValueError("label: a survival label takes time and event, not column/op")
            if self.task not in (None, "survival"):
                raise ValueError(f"label: time and event make a survival label, not {self.task}")
            return self
        if self.column is None:
            raise ValueError("label: name the label column (or time and event for survival)")
        if (self.op is None) != (self.value is None):
            raise ValueError("label: a comparison needs both op and value")
        if self.op is not None and self.task not in (None, "binary"):
            raise ValueError(f"label: a comparison makes a binary label, not {self.task}")
        if self.classes is not None and self.implied_task not in ("binary", "multiclass"):
            raise ValueError("label: classes apply to binary and multiclass labels")
        return self

    @property
    def implied_task(self) -> TaskName | None:
        if self.time is not None:
            return "survival"
        if self.op is not None:
            return "binary"
        if self.task is not None:
            return self.task
        return "multiclass" if self.classes is not None else None

    @property
    def columns(self) -> list[str]:
        return [name for name in (self.column, self.time, self.event) if name is not None]

    def describe(self) -> str:
        if self.time is not None:
            return f"survival (time {self.time}, event {self.event})"
        if self.op is not None:
            return f"binary ({self.column} {self.op} {self.value:g})"
        task = self.implied_task or "the job's task"
        return f"{task} ({self.column})"


def resolve_task(job: Any, label: LabelRule) -> LearningTask:
    """The task a site runs for `job` (a JobSpec) on a dataset labelled by `label`: the job's
    task, else the one the label implies; classes from the job, else from the label. A
    mismatch is a ValueError saying what disagrees."""
    implied = label.implied_task
    task = job.task or implied
    if task is None:
        raise ValueError(
            f"the job names no task and the label ({label.column}) implies none: set the job's "
            "task or the label's task"
        )
    if implied is not None and implied != task:
        raise ValueError(f"the job's task is {task} but this dataset's label is {label.describe()}")
    problem = job.task_problem(task)
    if problem:
        raise ValueError(problem)
    classes = tuple(job.classes or label.classes or ())
    if task == "multiclass" and not classes:
        raise ValueError(
            "a multiclass task needs its classes: declare them in the job (classes:) or in "
            "the site's label"
        )
    if task == "binary" and label.op is not None:
        classes = ()
    if job.loss.class_weights is not None and len(job.loss.class_weights) != len(classes):
        raise ValueError(
            f"loss.class_weights has {len(job.loss.class_weights)} weights for "
            f"{len(classes)} classes"
        )
    return LearningTask(
        name=task,
        classes=classes,
        loss=job.loss,
        target=job.target,
        metric=job.metric or default_metric(task),
    )


def encode_labels(
    label: LabelRule,
    task: LearningTask,
    columns: Mapping[str, Sequence[str]],
    where: Sequence[str],
    path: Path,
) -> NDArray[np.float32]:
    """Targets for `task` from the label cells: 0/1 (binary), class indices (multiclass), the
    value (regression), or [time, event] rows (survival). A cell that does not fit is an
    error naming the file, the row and the value."""
    if task.name == "survival":
        assert label.time is not None and label.event is not None
        times = parse_numbers(path, label.time, columns[label.time], where, "survival time")
        events = parse_numbers(path, label.event, columns[label.event], where, "event (0 or 1)")
        for value, location, cell in zip(times, where, columns[label.time], strict=True):
            if value < 0:
                raise DatasetError(
                    f"{path} {location}: column '{label.time}' has value {cell!r}: a survival "
                    "time cannot be negative"
                )
        for value, location, cell in zip(events, where, columns[label.event], strict=True):
            if value not in (0.0, 1.0):
                raise DatasetError(
                    f"{path} {location}: column '{label.event}' has value {cell!r}: an event "
                    "is 1 (observed) or 0 (censored)"
                )
        return np.stack([times, events], axis=1).astype(np.float32)
    assert label.column is not None
    cells = columns[label.column]
    if task.name == "regression":
        return parse_numbers(
            path, label.column, cells, where, "number (a regression target)"
        ).astype(np.float32)
    if label.op is not None:
        assert label.value is not None
        values = parse_numbers(path, label.column, cells, where)
        return np.asarray(_COMPARE[label.op](values, label.value), dtype=np.float32)
    classes = list(task.classes) or [0, 1]
    position = {category_key(level): i for i, level in enumerate(classes)}
    out = np.empty(len(cells), dtype=np.float32)
    for row, (cell, location) in enumerate(zip(cells, where, strict=True)):
        key = cell_key(cell, set(position))
        if key is None:
            raise DatasetError(
                f"{path} {location}: column '{label.column}' has value {cell!r}, which is not "
                f"among the job's classes {classes}"
            )
        out[row] = position[key]
    return out
