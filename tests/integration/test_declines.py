"""A site that declines is seen at once, through the operator's own command: `fedsilo job
status --json` shows its reason while the round is still in its first attempt, and a job that
every site refuses fails in that attempt, naming why, long before the round's deadline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from fedsilo.policy import SitePolicy

from .conftest import FAST_LIVENESS, Federation, require_heart_data, small_job, start_federation

# Far beyond the test's own run time: a job that ends must have ended because of the declines.
ROUND_TIMEOUT_S = 600
DP = {"mode": "sample", "clip_norm": 1.0, "target_epsilon": 3.0}


def fedsilo(federation: Federation, *args: str, timeout_s: float = 120) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "fedsilo.cli.main", "--api", federation.plane.api_url, *args],
        env=federation.cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return done


def test_declines_show_at_once_and_a_job_every_site_refuses_fails_naming_why(
    tmp_path: Path,
) -> None:
    # Every hospital wants DP; va also cannot serve secure aggregation (only Paillier).
    policies = {
        site: SitePolicy(max_epsilon=10, protections=["none", "secagg"])
        for site in ("cleveland", "hungarian", "switzerland")
    }
    policies["va"] = SitePolicy(max_epsilon=10, protections=["none", "paillier"])
    federation = start_federation(
        tmp_path / "state",
        require_heart_data(),
        aggregators=1,
        extra_env=FAST_LIVENESS,
        policies=policies,
    )
    try:
        secure = small_job(
            {"name": "fedavg"},
            rounds=2,
            protection="secagg",
            privacy=DP,
            round_timeout_s=ROUND_TIMEOUT_S,
        )
        job_id = federation.api.submit_job(secure)["job_id"]
        submitted = time.monotonic()
        while True:
            status = json.loads(fedsilo(federation, "job", "status", job_id, "--json").stdout)
            if status["declines"] or status["state"] != "running":
                break
            time.sleep(0.2)
        seen_after_s = time.monotonic() - submitted
        secure_done = federation.wait_for_job(job_id, timeout_s=240)

        spec = tmp_path / "no-dp.yaml"
        spec.write_text(
            yaml.safe_dump(small_job({"name": "fedavg"}, rounds=2, round_timeout_s=ROUND_TIMEOUT_S))
        )
        started = time.monotonic()
        waited = fedsilo(federation, "job", "submit", str(spec), "--wait", timeout_s=240)
        refused_in_s = time.monotonic() - started
        refused_id = re.search(r"submitted (job-[0-9a-f]+)", waited.stdout)
        assert refused_id is not None, waited.stdout + waited.stderr
        refused = json.loads(fedsilo(federation, "job", "status", refused_id[1], "--json").stdout)
    finally:
        federation.plane.stop()

    # va's reason, while the job was still running its round's first attempt.
    round_one = next(row for row in status["history"] if row["round"] == 1)
    print(
        f"va's decline visible {seen_after_s:.2f} s after submission, recorded "
        f"{status['declines'][0]['at'] - round_one['started_at']:.3f} s after round 1 opened"
    )
    assert status["state"] == "running" and status["attempt"] == 0, status
    (decline,) = status["declines"]
    assert decline["site"] == "va" and not decline["transient"]
    assert decline["reason"] == (
        "site policy: the job's protection is 'secagg'; this site's policy accepts only "
        "none, paillier"
    )
    # The round went on without va.
    assert secure_done["state"] == "completed", secure_done["error"]
    assert all("va" not in row["participants"] for row in secure_done["history"] if row["round"])

    # Every site refused the job without DP: it failed in round 1's first attempt.
    print(f"the job every site refused failed {refused_in_s:.2f} s after submission")
    assert waited.returncode == 1
    assert refused["state"] == "failed" and refused["round"] == 1 and refused["attempt"] == 0
    # Quorum is out of reach once three of the four have refused; the fourth may be in time.
    failure = re.match(
        r"no quorum in round 1: ([34]) of 4 sites declined \(quorum 2\): ([a-z, ]+): site "
        r"policy: the job has no differential privacy; this site's policy allows at most "
        r"epsilon 10$",
        refused["error"],
    )
    assert failure is not None, refused["error"]
    named = failure[2].split(", ")
    assert len(named) == int(failure[1]) and named == sorted(named)
    assert set(named) <= {"cleveland", "hungarian", "switzerland", "va"}
    assert f"failed: {refused['error']}" in " ".join(waited.stdout.split())
    assert {d["site"] for d in refused["declines"]} >= set(named)
