"""The differential-privacy part of a job spec."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedsilo.privacy.accountant import noise_for_target_epsilon


class DifferentialPrivacy(BaseModel):
    """Client-level DP (clip each site's update, Gaussian noise on the sum) or sample-level
    DP-SGD (clip each example's gradient, Gaussian noise on each step, with Opacus).

    Give exactly one of `noise_multiplier` and `target_epsilon`; a target is turned into a
    noise multiplier for the whole job with `resolved(...)` before training starts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["client", "sample"]
    clip_norm: float = Field(
        ...,
        gt=0,
        allow_inf_nan=False,
        description="client: L2 bound of each site's update; sample: per-example gradient clip",
    )
    noise_multiplier: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="noise standard deviation over clip_norm; 0 clips without privacy",
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="the δ that ε is reported for")
    target_epsilon: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="ε to reach at the end of the job, instead of a noise_multiplier",
    )

    @model_validator(mode="after")
    def _one_noise_setting(self) -> DifferentialPrivacy:
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError(
                "noise_multiplier, target_epsilon: give one of them (the noise multiplier, "
                "or the ε the job may spend)"
            )
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            raise ValueError(
                "noise_multiplier, target_epsilon: give only one of them; the noise multiplier "
                "is computed from target_epsilon"
            )
        return self

    def resolved(self, *, rounds: int, sampling_probability: float) -> DifferentialPrivacy:
        """This spec with a concrete noise_multiplier: unchanged when one was given, else the
        smallest one that keeps ε at `delta` within target_epsilon over `rounds` events.

        Client mode: rounds = the job's rounds, sampling_probability = clients per round over
        all clients (1 when every client takes part). Sample mode, per site: rounds = the job's
        rounds times local steps, sampling_probability = that site's DP-SGD sample rate.
        """
        if self.noise_multiplier is not None:
            return self
        assert self.target_epsilon is not None  # the validator guarantees one of the two
        noise = noise_for_target_epsilon(
            self.target_epsilon,
            rounds=rounds,
            sampling_probability=sampling_probability,
            delta=self.delta,
        )
        return DifferentialPrivacy(
            mode=self.mode, clip_norm=self.clip_norm, noise_multiplier=noise, delta=self.delta
        )

    def require_noise_multiplier(self) -> float:
        """The noise multiplier, or an error that says target_epsilon must be resolved first."""
        if self.noise_multiplier is None:
            raise ValueError(
                "noise_multiplier: not set; this spec gives target_epsilon, call "
                "resolved(rounds=..., sampling_probability=...) before training"
            )
        return self.noise_multiplier
