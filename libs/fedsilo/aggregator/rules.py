"""Aggregation rules: pure functions that combine the sites' inputs over one coordinate range,
chosen by name in a job (`aggregation: {rule: weighted_mean}`). Every rule decomposes over
coordinate ranges, so aggregator replicas divide the work as they do for FedAvg.

A rule is a function with AggregationRule's signature, in its own module, and one line:
`register_rule("name", function)`. A rule that is a weighted sum of the inputs (`linear=True`)
also runs under secure aggregation and Paillier, where only the sum exists; any other rule
needs visible updates (`protection: none`), and a job that asks otherwise is refused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from numpy.typing import NDArray

from fedsilo.aggregator.fold import weighted_sum
from fedsilo.aggregator.sources import BlobSource
from fedsilo.algorithms.aggregate import Vector
from fedsilo.jobs import JobSpec
from fedsilo.v1 import aggregator_pb2


class AggregationRule(Protocol):
    def __call__(
        self,
        source: BlobSource,
        inputs: list[aggregator_pb2.ShardInput],
        weights: NDArray[Any],
        begin: int,
        end: int,
        threads: int,
        params: Mapping[str, Any],
    ) -> Vector:
        """The combined delta over [begin, end), from the inputs (read with fold_inputs) and
        their normalized weights; `params` are the job's other `aggregation` fields."""
        ...


@dataclass(frozen=True)
class RegisteredRule:
    name: str
    combine: AggregationRule
    linear: bool


RULES: dict[str, RegisteredRule] = {}


def register_rule(name: str, combine: AggregationRule, *, linear: bool = False) -> None:
    if name in RULES:
        raise ValueError(f"an aggregation rule named {name!r} is already registered")
    RULES[name] = RegisteredRule(name, combine, linear)


def aggregation_rule(name: str) -> RegisteredRule:
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(
            f"unknown aggregation rule {name!r}; registered: {', '.join(sorted(RULES))}"
        ) from None


def check_rule(spec: JobSpec) -> None:
    """ValueError, naming the problem, when the job's rule is unknown or cannot run under its
    protection."""
    rule = aggregation_rule(spec.aggregation.rule)
    if spec.protection != "none" and not rule.linear:
        raise ValueError(
            f"aggregation rule {rule.name!r} needs to see each update; under protection "
            f"{spec.protection!r} only their sum exists: use weighted_mean or protection none"
        )


def weighted_mean(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    weights: NDArray[Any],
    begin: int,
    end: int,
    threads: int,
    params: Mapping[str, Any],
) -> Vector:
    """FedAvg's combination: sum_i w_i * delta_i with the normalized example weights."""
    return weighted_sum(source, inputs, weights, begin, end, threads)


register_rule("weighted_mean", weighted_mean, linear=True)
