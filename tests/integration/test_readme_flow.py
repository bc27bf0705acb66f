"""The README's "Running a federation" block, run literally as a new user would: each line is
a shell command in a fresh folder holding only `.venv` and `examples` (as the repository's
root does), through the installed `fedsilo` command, not internal helpers.

The block shows one site; the test runs its `site add` and `client` lines for each of the four
hospitals (the site's name substituted), fills in the REGISTRY, CA_CERT and TOKEN that `site
add` printed, and runs the `job submit` line for the plain, secure-aggregation, Paillier and
DP example jobs. Each client is given only the registry's address, the CA and its token."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, require_heart_data

pytestmark = pytest.mark.slow

SITES = ("cleveland", "hungarian", "switzerland", "va")
JOBS = {
    "none": "heart-disease-fedyogi.yaml",
    "secagg": "heart-disease-secagg.yaml",
    "paillier": "heart-disease-paillier.yaml",
    "dp": "heart-disease-dp.yaml",
}


def readme_block(heading: str) -> list[str]:
    """The first shell block under a README heading, one command per entry."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(f"## {heading}\n") :]
    block = section[section.index("```sh\n") + 6 :]
    block = block[: block.index("```")]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]


class Shell:
    """Runs README lines in a user's folder; long-running ones in the background."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FEDSILO_")}
        self.background: list[tuple[str, subprocess.Popen[bytes]]] = []

    def run(self, line: str, timeout_s: float = 300) -> str:
        done = subprocess.run(
            line,
            shell=True,
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        assert done.returncode == 0, (
            f"`{line}` exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
        return done.stdout

    def start(self, name: str, line: str) -> None:
        log = (self.cwd / f"{name}.log").open("wb")
        process = subprocess.Popen(
            f"exec {line}",
            shell=True,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.background.append((name, process))

    def stop_background(self) -> dict[str, int]:
        for _, process in self.background:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in self.background:
            try:
                codes[name] = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    require_heart_data()
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    user = Shell(tmp_path)
    yield user
    user.stop_background()
    if (tmp_path / ".fedsilo" / "processes.json").exists():  # the test failed before `down`
        subprocess.run(
            [str(REPO / ".venv/bin/fedsilo"), "down"], cwd=tmp_path, timeout=120, check=False
        )


def test_the_readme_commands_run_a_federation_of_four_sites(shell: Shell) -> None:
    block = readme_block("Running a federation")
    up, add, client, submit, status, down = block
    assert "fedsilo up" in up and "fedsilo down" in down and "fedsilo status" in status

    shell.run(up, timeout_s=180)
    for site in SITES:
        printed = shell.run(add.replace("cleveland", site))
        given = dict(re.findall(r"--(registry|ca-cert|token) (\S+)", printed))
        assert set(given) == {"registry", "ca-cert", "token"}, printed
        line = client.replace("cleveland", site)
        for placeholder, key in (("REGISTRY", "registry"), ("CA_CERT", "ca-cert")):
            line = line.replace(placeholder, given[key])
        line = line.replace("TOKEN", given["token"])
        # Only the registry's address, the CA and the token: no other address is given.
        assert not re.search(r"--(scheduler|modelstore|keymanager)", line)
        shell.start(f"client-{site}", line)
    # As an operator would before submitting: every site is up (`fedsilo site list`).
    deadline = time.monotonic() + 90
    while sum(s["alive"] for s in json.loads(shell.run(".venv/bin/fedsilo site list --json"))) < 4:
        assert time.monotonic() < deadline, "the four sites did not all enroll"
        time.sleep(0.5)

    results = {}
    for protection, spec in JOBS.items():
        printed = shell.run(submit.replace("heart-disease-secagg.yaml", spec), timeout_s=300)
        job_id = re.search(r"submitted (job-[0-9a-f]+) \(completed\)", printed)
        assert job_id is not None, f"{spec} did not complete:\n{printed}"
        results[protection] = json.loads(
            shell.run(f".venv/bin/fedsilo job status {job_id[1]} --json")
        )

    for protection, result in results.items():
        last = result["history"][-1]
        assert result["state"] == "completed", protection
        assert sorted(last["participants"]) == sorted(SITES), protection
        assert last["mean_test_accuracy"] > 0.65, (protection, last["mean_test_accuracy"])
        assert result["declines"] == [], protection
    assert results["dp"]["history"][-1]["epsilon"] <= 3.0 + 1e-6

    health = shell.run(status)
    assert health.count("SERVING") == 6, health  # five services, two aggregators
    shell.run(down, timeout_s=120)
    assert shell.stop_background() == {f"client-{site}": 0 for site in SITES}
    done = subprocess.run(status, shell=True, cwd=shell.cwd, env=shell.env, capture_output=True)
    assert done.returncode == 1  # nothing left running
