"""Differential privacy as the scheduler accounts for it: the noise a client-level target
needs, and the epsilon a job has spent after each round."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from fedsilo.jobs import JobSpec
from fedsilo.privacy import PrivacyAccountant
from fedsilo.rpc.errors import invalid_argument
from fedsilo.scheduler.store import AcceptedUpdate, SchedulerStore
from fedsilo.telemetry import PRIVACY_EPSILON

log = logging.getLogger("fedsilo.scheduler")


def resolve_privacy(spec: JobSpec) -> JobSpec:
    """Turn a client-level `target_epsilon` into the noise multiplier that spends it over the
    job's rounds (q = 1), so every party works with one concrete setting."""
    if spec.privacy is None or spec.privacy.mode != "client" or spec.privacy.target_epsilon is None:
        return spec
    try:
        resolved = spec.privacy.resolved(rounds=spec.rounds, sampling_probability=1.0)
    except ValueError as error:
        raise invalid_argument(f"privacy.target_epsilon: {error}") from None
    return spec.model_copy(update={"privacy": resolved})


def account_privacy(
    store: SchedulerStore, job: Mapping[str, Any], spec: JobSpec, updates: list[AcceptedUpdate]
) -> dict[str, float]:
    """ε spent so far. Client-level DP: the job's RDP accountant, one Gaussian event per
    round with q = 1 (selection is deterministic, so no amplification by sampling is
    claimed). DP-SGD: each site accounts for its own examples; the job reports the largest.
    Recorded before the model is stored: a crash in between counts a round twice, never
    zero times."""
    if spec.privacy is None:
        return {}
    if spec.privacy.mode == "client":
        history = json.loads(job["privacy"] or "{}")
        accountant = (
            PrivacyAccountant.from_dict(history)
            if history
            else PrivacyAccountant(spec.privacy.delta)
        )
        accountant.record_round(spec.privacy.require_noise_multiplier(), 1.0)
        store.update_job(job["job_id"], privacy=json.dumps(accountant.to_dict()))
        epsilon = accountant.epsilon()
    else:
        reported = [u.metrics["epsilon"] for u in updates if "epsilon" in u.metrics]
        epsilon = max(reported) if reported else math.inf
    if not math.isfinite(epsilon):
        return {"delta": spec.privacy.delta}
    PRIVACY_EPSILON.labels(job["job_id"]).set(epsilon)
    log.info(
        "job %s round %d: privacy spent epsilon=%.3f at delta=%g",
        job["job_id"],
        job["round"],
        epsilon,
        spec.privacy.delta,
    )
    return {"epsilon": epsilon, "delta": spec.privacy.delta}
