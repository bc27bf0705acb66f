"""The job spec: what a data scientist submits (YAML or JSON), validated before anything runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedsilo.algorithms.registry import AlgorithmParams, FedAvgParams
from fedsilo.paillier import PackingSpec
from fedsilo.privacy import DifferentialPrivacy
from fedsilo.tasks import (
    Category,
    LossSpec,
    MetricName,
    TargetScaling,
    TaskName,
    default_metric,
    task_problem,
)


class JobSpecError(ValueError):
    """A job spec that does not validate; the message names every offending field."""


class ModelSpec(BaseModel):
    """A model from the zoo. Input and output sizes come from the dataset at each site."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["logistic_regression", "linear", "mlp", "cox"] = Field(
        "logistic_regression",
        description="logistic_regression or linear: one linear layer (a head per class for "
        "multiclass); mlp: hidden layers; cox: a linear risk score without intercept",
    )
    hidden: list[int] = Field(default_factory=list, description="hidden layer widths (mlp)")
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _hidden_matches_name(self) -> ModelSpec:
        if self.name == "mlp" and not self.hidden:
            raise ValueError("model 'mlp' needs at least one hidden layer width in 'hidden'")
        if self.name != "mlp" and self.hidden:
            raise ValueError(f"model '{self.name}' takes no 'hidden' layers")
        if any(width <= 0 for width in self.hidden):
            raise ValueError("hidden layer widths must be positive")
        return self


class PaillierSettings(BaseModel):
    """Packed Paillier: quantized, weighted updates packed many per plaintext (BatchCrypt)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_bits: int = Field(2048, ge=512, le=4096, description="Paillier modulus size")
    clip: float = Field(0.5, gt=0, description="per-coordinate bound of a weighted update")
    value_bits: int = Field(16, ge=4, le=32, description="quantization bits per value")
    max_clients: int = Field(64, ge=2, description="headroom: most uploads ever summed")

    def packing(self) -> PackingSpec:
        return PackingSpec(
            key_bits=self.key_bits,
            num_clients=self.max_clients,
            clip=self.clip,
            value_bits=self.value_bits,
        )


class SecAggSettings(BaseModel):
    """Secure aggregation: pairwise masks cancel in the sum; dropouts recovered from shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clip: float = Field(0.5, gt=0, description="per-coordinate bound of a weighted update")
    degree: int | None = Field(None, ge=2, description="SecAgg+ neighbours; None: O(log n)")


class AggregationSpec(BaseModel):
    """How the aggregators combine a coordinate range of the sites' updates: a rule by name
    (fedsilo.aggregator.rules), checked when the job is submitted, with its parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)

    rule: str = Field(
        "weighted_mean",
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="weighted_mean: the example-weighted mean of the updates (FedAvg's)",
    )


class JobSpec(BaseModel):
    """One federated training job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("job", min_length=1, max_length=120)
    dataset: str = Field(..., min_length=1, description="dataset name each site declares")
    task: TaskName | None = Field(
        None, description="binary, multiclass, regression, survival; None: what sites' labels imply"
    )
    classes: list[Category] | None = Field(
        None, min_length=2, description="the class labels, in output order (binary: neg, pos)"
    )
    loss: LossSpec = Field(default_factory=LossSpec)
    target: TargetScaling = Field(default_factory=TargetScaling)
    metric: MetricName | None = Field(
        None,
        description="the primary metric; None: the task's default (auc, macro_f1, r2, c_index)",
    )
    model: ModelSpec = Field(default_factory=ModelSpec)
    algorithm: AlgorithmParams = Field(default_factory=FedAvgParams)
    rounds: int = Field(15, ge=1, le=100_000)
    clients_per_round: int | None = Field(None, ge=1, description="None selects every client")
    min_clients: int = Field(1, ge=1)
    local_steps: int = Field(100, ge=1)
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(0.001, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    seed: int = 0
    round_timeout_s: float = Field(300.0, gt=0, description="deadline for training updates")
    evaluation_timeout_s: float = Field(60.0, gt=0)
    max_round_attempts: int = Field(3, ge=1, description="retries of a round without quorum")
    privacy: DifferentialPrivacy | None = Field(
        None, description="client-level (clip + noise per round) or sample-level (DP-SGD) DP"
    )
    aggregation: AggregationSpec = Field(default_factory=AggregationSpec)
    protection: Literal["none", "paillier", "secagg"] = Field(
        "none", description="paillier or secagg: the control plane never sees an update"
    )
    paillier: PaillierSettings = Field(default_factory=PaillierSettings)
    secagg: SecAggSettings = Field(default_factory=SecAggSettings)

    @model_validator(mode="after")
    def _protection_fits(self) -> JobSpec:
        if self.protection == "paillier":
            if self.privacy is not None and self.privacy.mode == "client":
                raise ValueError(
                    "privacy.mode 'client' adds noise at the aggregator, which sees only "
                    f"protected updates under {self.protection!r}: use privacy.mode 'sample'"
                )
            if self.protection == "paillier" and (
                (self.clients_per_round or 0) > self.paillier.max_clients
            ):
                raise ValueError(
                    f"clients_per_round ({self.clients_per_round}) exceeds "
                    f"paillier.max_clients ({self.paillier.max_clients}): sums would overflow"
                )
        return self

    @model_validator(mode="after")
    def _task_fits(self) -> JobSpec:
        if self.classes is not None and len({str(c) for c in self.classes}) != len(self.classes):
            raise ValueError(f"classes repeat a label: {self.classes}")
        if self.task is not None:
            problem = self.task_problem(self.task)
            if problem:
                raise ValueError(problem)
        return self

    def task_problem(self, task: str) -> str | None:
        """What does not fit if this job runs `task` (a site checks the task its labels
        imply when the job names none)."""
        return task_problem(
            task,
            classes=self.classes,
            loss=self.loss,
            target=self.target,
            metric=self.metric,
            model=self.model.name,
            sample_dp=self.privacy is not None and self.privacy.mode == "sample",
        )

    @property
    def primary_metric(self) -> str | None:
        """The metric that drives progress: the job's, else its task's default; None when
        the job leaves both to the sites' labels."""
        if self.metric is not None:
            return self.metric
        return default_metric(self.task) if self.task is not None else None

    @model_validator(mode="after")
    def _quorum_reachable(self) -> JobSpec:
        if self.clients_per_round is not None and self.min_clients > self.clients_per_round:
            raise ValueError(
                f"min_clients ({self.min_clients}) exceeds clients_per_round "
                f"({self.clients_per_round}): no round could reach quorum"
            )
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return parse_job_spec(json.loads(text))


def describe_validation_error(error: ValidationError, what: str) -> str:
    """One line per problem, each naming the field path, e.g. `algorithm.mu: ...`."""
    lines = [f"invalid {what}:"]
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        lines.append(f"  {location}: {problem['msg']}")
    return "\n".join(lines)


def parse_job_spec(data: Any) -> JobSpec:
    if not isinstance(data, dict):
        raise JobSpecError("invalid job spec: expected a mapping of fields")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as error:
        raise JobSpecError(describe_validation_error(error, "job spec")) from None


def load_job_spec(path: Path) -> JobSpec:
    """Read a job spec from YAML or JSON."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise JobSpecError(f"cannot read job spec {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise JobSpecError(f"job spec {path} is not valid YAML/JSON: {error}") from None
    return parse_job_spec(data)
