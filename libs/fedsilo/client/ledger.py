"""A site's own privacy ledger: what each job has spent of its records' privacy, kept in the
site's state folder across restarts, and recorded before an update leaves."""

from __future__ import annotations

import json
from pathlib import Path

from fedsilo.privacy import DifferentialPrivacy, PrivacyAccountant
from fedsilo.telemetry import SITE_EPSILON


class PrivacyLedger:
    def __init__(self, site: str, state_dir: Path | None) -> None:
        self._site = site
        self._state_dir = state_dir
        self._accountants: dict[str, PrivacyAccountant] = {}

    def _path(self, job_id: str) -> Path | None:
        if self._state_dir is None:
            return None
        return self._state_dir / self._site / f"privacy-{job_id}.json"

    def _accountant(self, job_id: str, delta: float) -> PrivacyAccountant:
        if job_id not in self._accountants:
            path = self._path(job_id)
            self._accountants[job_id] = (
                PrivacyAccountant.from_dict(json.loads(path.read_text()))
                if path is not None and path.exists()
                else PrivacyAccountant(delta)
            )
        return self._accountants[job_id]

    def spend(
        self,
        job_id: str,
        privacy: DifferentialPrivacy,
        sampling_probability: float,
        count: int,
    ) -> float:
        """Record what the update about to leave spends, before it leaves (a failed upload
        counts as spent, never the reverse); returns ε so far."""
        accountant = self._accountant(job_id, privacy.delta)
        accountant.record_round(privacy.require_noise_multiplier(), sampling_probability, count)
        path = self._path(job_id)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(accountant.to_dict()))
        epsilon = accountant.epsilon()
        SITE_EPSILON.labels(self._site, job_id).set(epsilon)
        return epsilon
