"""A site's own privacy policy. The site owns it, not the job: the client agent refuses a task
that would break it, and the refusal (with its reason) reaches the operator."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fedsilo.jobs import JobSpec
from fedsilo.privacy import DifferentialPrivacy, epsilon_after


class SitePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_epsilon: float | None = Field(
        None,
        gt=0,
        description="refuse jobs whose differential privacy (or lack of it) would "
        "spend more than this epsilon of this site's data over the whole job",
    )
    min_clients: int | None = Field(
        None,
        ge=1,
        description="refuse jobs that may aggregate fewer clients in a round",
    )
    protections: list[Literal["none", "secagg", "paillier"]] | None = Field(
        None,
        min_length=1,
        description="the update protections this site accepts (e.g. [secagg, paillier]: "
        "never an update the control plane could read); default: any",
    )


def opacus_sample_rate(num_train: int, batch_size: int) -> float:
    """The Poisson sampling rate Opacus uses for DP-SGD: one expected batch per step."""
    return 1.0 / math.ceil(num_train / batch_size)


def site_privacy(spec: JobSpec, num_train: int) -> DifferentialPrivacy | None:
    """The job's DP with a concrete noise multiplier for this site. Sample-level targets are
    resolved per site, from its own number of examples."""
    privacy = spec.privacy
    if privacy is None or privacy.target_epsilon is None:
        return privacy
    if privacy.mode == "client":
        return privacy.resolved(rounds=spec.rounds, sampling_probability=1.0)
    return privacy.resolved(
        rounds=spec.rounds * spec.local_steps,
        sampling_probability=opacus_sample_rate(num_train, spec.batch_size),
    )


def projected_epsilon(spec: JobSpec, num_train: int) -> float:
    """The epsilon this site's data would have spent once the whole job has run."""
    privacy = site_privacy(spec, num_train)
    if privacy is None:
        return math.inf
    noise = privacy.require_noise_multiplier()
    if privacy.mode == "client":
        return epsilon_after(spec.rounds, noise, 1.0, privacy.delta)
    return epsilon_after(
        spec.rounds * spec.local_steps,
        noise,
        opacus_sample_rate(num_train, spec.batch_size),
        privacy.delta,
    )


def policy_violation(policy: SitePolicy, spec: JobSpec, num_train: int) -> str | None:
    """Why this site refuses the job, or None when the job is within its policy."""
    if policy.protections is not None and spec.protection not in policy.protections:
        return (
            f"the job's protection is {spec.protection!r}; this site's policy accepts only "
            f"{', '.join(policy.protections)}"
        )
    if policy.min_clients is not None and spec.min_clients < policy.min_clients:
        return (
            f"the job may aggregate rounds of {spec.min_clients} clients; this site's "
            f"policy requires at least {policy.min_clients}"
        )
    if policy.max_epsilon is not None:
        epsilon = projected_epsilon(spec, num_train)
        if not math.isfinite(epsilon):
            return (
                f"the job has no differential privacy; this site's policy allows at most "
                f"epsilon {policy.max_epsilon:g}"
            )
        if epsilon > policy.max_epsilon:
            assert spec.privacy is not None
            return (
                f"the job would spend epsilon {epsilon:.2f} (delta {spec.privacy.delta:g}) "
                f"over {spec.rounds} rounds; this site's policy allows at most "
                f"{policy.max_epsilon:g}"
            )
    return None
