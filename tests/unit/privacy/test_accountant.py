from __future__ import annotations

import json
import math

import dp_accounting
import pytest
from dp_accounting.rdp import RdpAccountant

from fedsilo.privacy import PrivacyAccountant, epsilon_after, noise_for_target_epsilon

DELTA = 1e-5


def test_more_noise_gives_smaller_epsilon() -> None:
    epsilons = [epsilon_after(15, noise, 1.0, DELTA) for noise in (0.5, 1.0, 2.0, 4.0)]

    assert epsilons == sorted(epsilons, reverse=True)
    assert len(set(epsilons)) == 4


def test_more_rounds_give_larger_epsilon() -> None:
    epsilons = [epsilon_after(rounds, 1.0, 0.5, DELTA) for rounds in (1, 5, 25)]

    assert epsilons == sorted(epsilons)
    assert len(set(epsilons)) == 3


def test_zero_noise_gives_no_guarantee() -> None:
    accountant = PrivacyAccountant(DELTA)
    accountant.record_round(2.0, 1.0, count=3)

    accountant.record_round(0.0, 0.5)

    assert accountant.epsilon() == math.inf


def test_no_rounds_spend_nothing() -> None:
    assert PrivacyAccountant(DELTA).epsilon() == 0.0


def test_matches_dp_accounting_used_directly() -> None:
    noise, probability, rounds = 1.1, 0.5, 20
    direct = RdpAccountant()
    gaussian = dp_accounting.GaussianDpEvent(noise)
    direct.compose(dp_accounting.PoissonSampledDpEvent(probability, gaussian), rounds)
    accountant = PrivacyAccountant(DELTA)

    for _ in range(rounds):
        accountant.record_round(noise, probability)

    assert accountant.epsilon() == pytest.approx(direct.get_epsilon(DELTA), rel=1e-9)
    assert accountant.rounds == rounds
    assert len(accountant.history) == 1  # identical rounds merge


def test_projected_epsilon_records_nothing() -> None:
    accountant = PrivacyAccountant(DELTA)
    accountant.record_round(1.0, 1.0, count=4)

    projected = accountant.projected_epsilon(1.0, 1.0, count=2)

    assert accountant.rounds == 4
    assert projected == pytest.approx(epsilon_after(6, 1.0, 1.0, DELTA), rel=1e-9)


def test_persistence_round_trip_gives_the_same_epsilon() -> None:
    accountant = PrivacyAccountant(DELTA)
    accountant.record_round(1.0, 1.0, count=3)
    accountant.record_round(1.5, 0.25)
    accountant.record_round(1.0, 1.0)

    restored = PrivacyAccountant.from_dict(json.loads(json.dumps(accountant.to_dict())))

    assert restored.epsilon() == accountant.epsilon()
    assert restored.history == accountant.history
    assert restored.delta == DELTA


def test_restoring_a_damaged_state_names_the_problem() -> None:
    state = PrivacyAccountant(DELTA).to_dict()

    with pytest.raises(ValueError, match="accountant"):
        PrivacyAccountant.from_dict({**state, "accountant": "pld"})
    with pytest.raises(ValueError, match="delta"):
        PrivacyAccountant.from_dict({"accountant": "rdp", "history": []})
    bad = [{"noise_multiplier": 1.0, "sampling_probability": 2.0, "count": 1}]
    with pytest.raises(ValueError, match=r"history\[0\].*sampling_probability"):
        PrivacyAccountant.from_dict({**state, "history": bad})


@pytest.mark.parametrize(
    ("noise", "probability", "count", "field"),
    [
        (-1.0, 1.0, 1, "noise_multiplier"),
        (1.0, 0.0, 1, "sampling_probability"),
        (1.0, 1.5, 1, "sampling_probability"),
        (1.0, 1.0, 0, "count"),
    ],
)
def test_bad_rounds_are_refused_by_name(
    noise: float, probability: float, count: int, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        PrivacyAccountant(DELTA).record_round(noise, probability, count)


def test_delta_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="delta"):
        PrivacyAccountant(0.0)


@pytest.mark.parametrize(("target", "probability"), [(3.0, 1.0), (1.0, 0.25), (8.0, 1.0)])
def test_target_epsilon_bisection_reaches_the_target(target: float, probability: float) -> None:
    noise = noise_for_target_epsilon(
        target, rounds=15, sampling_probability=probability, delta=DELTA
    )

    reached = epsilon_after(15, noise, probability, DELTA)
    assert reached <= target
    assert reached == pytest.approx(target, rel=0.01)


def test_an_unreachable_target_is_refused() -> None:
    with pytest.raises(ValueError, match="target_epsilon"):
        noise_for_target_epsilon(0.0, rounds=15, sampling_probability=1.0, delta=DELTA)
