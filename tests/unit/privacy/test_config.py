from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from fedsilo.jobs import describe_validation_error
from fedsilo.privacy import DifferentialPrivacy, epsilon_after


def problems(**fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        DifferentialPrivacy.model_validate(fields)
    return describe_validation_error(caught.value, "privacy")


def test_a_valid_spec_keeps_its_defaults() -> None:
    spec = DifferentialPrivacy(mode="client", clip_norm=1.0, noise_multiplier=1.0)

    assert spec.delta == 1e-5
    assert spec.target_epsilon is None
    assert spec.resolved(rounds=15, sampling_probability=1.0) is spec


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"mode": "local", "clip_norm": 1.0, "noise_multiplier": 1.0}, "mode"),
        ({"mode": "client", "clip_norm": 0.0, "noise_multiplier": 1.0}, "clip_norm"),
        ({"mode": "client", "clip_norm": 1.0, "noise_multiplier": -1.0}, "noise_multiplier"),
        ({"mode": "client", "clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1.0}, "delta"),
        ({"mode": "client", "clip_norm": 1.0, "target_epsilon": 0.0}, "target_epsilon"),
        ({"mode": "client", "clip_norm": 1.0, "noise_multiplier": 1.0, "eps": 3}, "eps"),
        ({"mode": "client", "clip_norm": float("inf"), "noise_multiplier": 1.0}, "clip_norm"),
    ],
)
def test_validation_names_the_field(fields: dict[str, Any], named: str) -> None:
    assert f"  {named}:" in problems(**fields)


def test_one_of_noise_multiplier_and_target_epsilon_is_required() -> None:
    neither = problems(mode="client", clip_norm=1.0)
    both = problems(mode="client", clip_norm=1.0, noise_multiplier=1.0, target_epsilon=3.0)

    assert "noise_multiplier, target_epsilon: give one" in neither
    assert "noise_multiplier, target_epsilon: give only one" in both


def test_specs_are_frozen() -> None:
    spec = DifferentialPrivacy(mode="sample", clip_norm=1.0, noise_multiplier=1.0)

    with pytest.raises(ValidationError):
        spec.clip_norm = 2.0  # type: ignore[misc]


def test_resolving_a_target_gives_a_noise_multiplier_that_meets_it() -> None:
    spec = DifferentialPrivacy(mode="client", clip_norm=0.5, target_epsilon=4.0, delta=1e-6)

    resolved = spec.resolved(rounds=15, sampling_probability=1.0)

    assert resolved.noise_multiplier is not None
    assert (resolved.mode, resolved.clip_norm, resolved.delta) == ("client", 0.5, 1e-6)
    reached = epsilon_after(15, resolved.noise_multiplier, 1.0, 1e-6)
    assert 0.99 * 4.0 <= reached <= 4.0
