"""Aggregation rules: pure functions that combine the sites' inputs over one coordinate range,
chosen by name in a job (`aggregation: {rule: weighted_mean}`). Every rule decomposes over
coordinate ranges, so aggregator replicas divide the work as they do for FedAvg.

A rule is a function with AggregationRule's signature, in its own module, and one line:
`register_rule("name", function)`. A rule that is a weighted sum of the inputs (`linear=True`)
also runs under secure aggregation and Paillier, where only the sum exists; any other rule
needs visible updates (`protection: none`), and a job that asks otherwise is refused."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from fedsilo.aggregator import geometry, robust
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


# (the job's other `aggregation` fields, its min_clients) -> what is wrong, or None
ParamsCheck = Callable[[Mapping[str, Any], int], str | None]


@dataclass(frozen=True)
class RegisteredRule:
    name: str
    combine: AggregationRule
    linear: bool
    check: ParamsCheck | None = None
    # Weighs the sites from their updates' Gram matrix (fedsilo.aggregator.geometry): a first
    # aggregation pass returns it, the second combines with the coefficients it gives.
    needs_gram: bool = False


RULES: dict[str, RegisteredRule] = {}


def register_rule(
    name: str,
    combine: AggregationRule,
    *,
    linear: bool = False,
    check: ParamsCheck | None = None,
    needs_gram: bool = False,
) -> None:
    if name in RULES:
        raise ValueError(f"an aggregation rule named {name!r} is already registered")
    RULES[name] = RegisteredRule(name, combine, linear, check, needs_gram)


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
        hidden = "secure aggregation" if spec.protection == "secagg" else "Paillier encryption"
        raise ValueError(
            f"aggregation rule {rule.name!r} needs each site's update, which {hidden} hides by "
            "design (only the sum is ever decrypted or unmasked): use weighted_mean under "
            f"{spec.protection!r} (with privacy.mode 'sample' or 'client', every site's "
            "influence is bounded by clipping), or protection 'none' to aggregate robustly"
        )
    if not rule.linear and spec.privacy is not None and spec.privacy.mode == "client":
        raise ValueError(
            f"aggregation rule {rule.name!r} with privacy.mode 'client': the aggregator's noise "
            "is calibrated to the mean's sensitivity, not to this rule's; use weighted_mean, or "
            "privacy.mode 'sample' (each site's DP-SGD holds whatever the rule)"
        )
    if rule.check is not None:
        params = spec.aggregation.model_dump(exclude={"rule"})
        problem = rule.check(params, spec.min_clients)
        if problem:
            raise ValueError(problem)


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


def with_coefficients(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    weights: NDArray[Any],
    begin: int,
    end: int,
    threads: int,
    params: Mapping[str, Any],
) -> Vector:
    """The second pass of a Gram rule: sum_i c_i * delta_i with the coefficients the scheduler
    computed from the first pass (`params["coefficients"]`, by client id)."""
    coefficients = params.get("coefficients")
    if not isinstance(coefficients, dict):
        raise ValueError("a Gram rule's combining pass needs its coefficients")
    try:
        chosen = np.array([float(coefficients[item.client_id]) for item in inputs])
    except KeyError as missing:
        raise ValueError(f"no coefficient for input {missing}") from None
    return weighted_sum(source, inputs, chosen, begin, end, threads)


register_rule("median", robust.coordinate_median, check=robust.median_problem)
register_rule("trimmed_mean", robust.trimmed_mean, check=robust.trimmed_mean_problem)
register_rule("krum", with_coefficients, check=geometry.krum_problem, needs_gram=True)
register_rule(
    "centered_clipping",
    with_coefficients,
    check=geometry.centered_clipping_problem,
    needs_gram=True,
)
register_rule(
    "norm_bounded_mean", with_coefficients, check=geometry.norm_bounded_problem, needs_gram=True
)
