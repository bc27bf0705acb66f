from __future__ import annotations

import json
import math

import pytest

from fedsilo.federations import heart_disease
from fedsilo.jobs import JobSpec, parse_job_spec
from fedsilo.policy import SitePolicy, policy_violation, projected_epsilon
from fedsilo.privacy import epsilon_after


def job(**changes: object) -> JobSpec:
    data = json.loads(heart_disease.flamby_job(heart_disease.algorithm_params("fedavg")).to_json())
    data.update(changes)
    return parse_job_spec(data)


def test_an_empty_policy_accepts_everything() -> None:
    assert policy_violation(SitePolicy(), job(), num_train=100) is None


def test_a_job_without_dp_breaks_an_epsilon_cap() -> None:
    reason = policy_violation(SitePolicy(max_epsilon=3), job(), num_train=100)
    assert reason is not None and "no differential privacy" in reason


def test_client_level_dp_is_projected_over_the_whole_job() -> None:
    spec = job(privacy={"mode": "client", "clip_norm": 0.1, "noise_multiplier": 2.0})
    expected = epsilon_after(15, 2.0, 1.0, 1e-5)
    assert projected_epsilon(spec, num_train=100) == pytest.approx(expected)
    assert policy_violation(SitePolicy(max_epsilon=expected * 1.01), spec, 100) is None
    reason = policy_violation(SitePolicy(max_epsilon=expected * 0.99), spec, 100)
    assert reason is not None and "15 rounds" in reason


def test_a_target_epsilon_is_met_per_site_for_dp_sgd() -> None:
    spec = job(privacy={"mode": "sample", "clip_norm": 1.0, "target_epsilon": 3.0})
    for examples in (30, 199):  # Switzerland's and Cleveland's training sets
        assert projected_epsilon(spec, examples) == pytest.approx(3.0, rel=1e-3)


def test_too_few_clients_per_round_breaks_a_minimum() -> None:
    reason = policy_violation(SitePolicy(min_clients=3), job(min_clients=2), 100)
    assert reason is not None and "at least 3" in reason
    assert policy_violation(SitePolicy(min_clients=3), job(min_clients=3), 100) is None
    assert math.isinf(projected_epsilon(job(), 100))


def test_a_site_can_refuse_protections_it_does_not_accept() -> None:
    policy = SitePolicy(protections=["paillier"])
    reason = policy_violation(policy, job(protection="secagg"), num_train=100)
    assert reason is not None and "'secagg'" in reason and "paillier" in reason
    assert policy_violation(policy, job(protection="paillier"), num_train=100) is None
    with pytest.raises(ValueError, match="protections"):
        SitePolicy.model_validate({"protections": ["rot13"]})
