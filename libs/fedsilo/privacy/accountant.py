"""Privacy accounting: ε for δ after a history of (subsampled) Gaussian mechanisms.

Every figure comes from dp-accounting's RDP accountant (Mironov 2017; Mironov, Talwar and
Zhang 2019 for Poisson subsampling), under add-or-remove-one adjacency. Nothing here is a
closed-form ε formula.

What "one" is depends on the mode:

- client-level DP: one unit is a whole site. A round is a Poisson-subsampled Gaussian event
  with q = clients_per_round / total_clients and the round's noise multiplier (q = 1 when every
  client takes part). Amplification by subsampling (q < 1) holds only when the selection is
  random and kept from the adversary; a selection that is deterministic, or known to the party
  being defended against, must be recorded with q = 1 for the rounds a site took part in.
- sample-level DP-SGD: one unit is a training example at one site. An optimizer step is a
  Poisson-subsampled Gaussian event with q = (expected batch size) / (examples at the site).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dp_accounting import dp_event
    from dp_accounting.rdp import RdpAccountant

ACCOUNTANT_NAME = "rdp"


def _rdp_accountant() -> RdpAccountant:
    # dp_accounting (and scipy) load on first use: ~110 MB that services without a private
    # job never need.
    from dp_accounting.rdp import RdpAccountant

    return RdpAccountant()


@dataclass(frozen=True)
class RecordedRounds:
    """`count` identical rounds (or steps) of one subsampled Gaussian mechanism."""

    noise_multiplier: float
    sampling_probability: float
    count: int

    def to_event(self) -> dp_event.DpEvent:
        from dp_accounting import dp_event

        gaussian = dp_event.GaussianDpEvent(self.noise_multiplier)
        sampled = dp_event.PoissonSampledDpEvent(self.sampling_probability, gaussian)
        return dp_event.SelfComposedDpEvent(sampled, self.count)


class PrivacyAccountant:
    """The rounds a job (or one site) has spent, and ε for a fixed δ over all of them.

    The history is kept as data so that a restarted scheduler can rebuild the accountant
    from `to_dict()`; consecutive identical records are merged so it stays short.
    """

    def __init__(self, delta: float) -> None:
        _check_delta(delta)
        self._delta = delta
        self._history: list[RecordedRounds] = []
        self._rdp = _rdp_accountant()

    @property
    def delta(self) -> float:
        return self._delta

    @property
    def history(self) -> tuple[RecordedRounds, ...]:
        return tuple(self._history)

    @property
    def rounds(self) -> int:
        """How many rounds (or DP-SGD steps) have been recorded."""
        return sum(entry.count for entry in self._history)

    def record_round(
        self, noise_multiplier: float, sampling_probability: float, count: int = 1
    ) -> None:
        """Add `count` rounds of a Gaussian mechanism applied to a Poisson sample."""
        entry = _checked(noise_multiplier, sampling_probability, count)
        self._rdp.compose(entry.to_event())
        last = self._history[-1] if self._history else None
        if last is not None and (last.noise_multiplier, last.sampling_probability) == (
            entry.noise_multiplier,
            entry.sampling_probability,
        ):
            self._history[-1] = RecordedRounds(
                last.noise_multiplier, last.sampling_probability, last.count + count
            )
        else:
            self._history.append(entry)

    def epsilon(self) -> float:
        """ε at this accountant's δ so far: 0 before any round, math.inf once a round had no
        noise."""
        if not self._history:
            return 0.0
        return _finite_or_inf(self._rdp.get_epsilon(self._delta))

    def projected_epsilon(
        self, noise_multiplier: float, sampling_probability: float, count: int = 1
    ) -> float:
        """ε if `count` more such rounds were recorded; lets a site check its cap beforehand."""
        entry = _checked(noise_multiplier, sampling_probability, count)
        trial = _rdp_accountant()
        for recorded in (*self._history, entry):
            trial.compose(recorded.to_event())
        return _finite_or_inf(trial.get_epsilon(self._delta))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state: the accountant kind, δ and the merged history."""
        return {
            "accountant": ACCOUNTANT_NAME,
            "delta": self._delta,
            "history": [
                {
                    "noise_multiplier": entry.noise_multiplier,
                    "sampling_probability": entry.sampling_probability,
                    "count": entry.count,
                }
                for entry in self._history
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyAccountant:
        """Rebuild an accountant from `to_dict()` output by replaying its history."""
        kind = data.get("accountant")
        if kind != ACCOUNTANT_NAME:
            raise ValueError(
                f"accountant state: 'accountant' is {kind!r}, this code reads {ACCOUNTANT_NAME!r}"
            )
        if "delta" not in data or not isinstance(data.get("history"), list):
            raise ValueError("accountant state: needs 'delta' and a 'history' list")
        accountant = cls(float(data["delta"]))
        for index, entry in enumerate(data["history"]):
            try:
                accountant.record_round(
                    float(entry["noise_multiplier"]),
                    float(entry["sampling_probability"]),
                    int(entry["count"]),
                )
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"accountant state: history[{index}]: {error}") from None
        return accountant


def epsilon_after(
    rounds: int, noise_multiplier: float, sampling_probability: float, delta: float
) -> float:
    """ε for δ after `rounds` identical subsampled Gaussian rounds."""
    accountant = PrivacyAccountant(delta)
    accountant.record_round(noise_multiplier, sampling_probability, rounds)
    return accountant.epsilon()


def noise_for_target_epsilon(
    target_epsilon: float,
    *,
    rounds: int,
    sampling_probability: float,
    delta: float,
    relative_tolerance: float = 1e-4,
) -> float:
    """The smallest noise multiplier whose ε over `rounds` rounds is at most `target_epsilon`.

    Bisection on the accountant's ε, which falls as the noise grows; the answer is the upper
    end of the final bracket, so its ε never exceeds the target.
    """
    if not math.isfinite(target_epsilon) or target_epsilon <= 0:
        raise ValueError(f"target_epsilon must be a positive number, got {target_epsilon}")
    if relative_tolerance <= 0:
        raise ValueError(f"relative_tolerance must be positive, got {relative_tolerance}")
    _checked(1.0, sampling_probability, rounds)
    _check_delta(delta)

    def epsilon(noise: float) -> float:
        return epsilon_after(rounds, noise, sampling_probability, delta)

    lower, upper = 0.0, 1.0
    while epsilon(upper) > target_epsilon:
        lower, upper = upper, 2 * upper
        if upper > 1e6:
            raise ValueError(
                f"target_epsilon {target_epsilon} is out of reach: even noise multiplier 1e6 "
                f"gives more over {rounds} rounds at delta {delta}; raise the target or delta"
            )
    while upper - lower > relative_tolerance * upper:
        middle = (lower + upper) / 2
        if epsilon(middle) > target_epsilon:
            lower = middle
        else:
            upper = middle
    return upper


def _checked(noise_multiplier: float, sampling_probability: float, count: int) -> RecordedRounds:
    if not math.isfinite(noise_multiplier) or noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    if not 0 < sampling_probability <= 1:
        raise ValueError(f"sampling_probability must be in (0, 1], got {sampling_probability}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count (rounds) must be an integer >= 1, got {count!r}")
    return RecordedRounds(float(noise_multiplier), float(sampling_probability), count)


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def _finite_or_inf(epsilon: float) -> float:
    # inf is the accountant's answer for a noiseless round; a NaN would bound nothing either.
    value = float(epsilon)
    return value if math.isfinite(value) else math.inf
