"""Flower's deployment engine on localhost: its own virtualenv, one SuperLink and one SuperNode
per hospital as processes, and `flwr run` of bench/flower_app against them.

The virtualenv (bench/.venv-flower, ignored by git) is made on first use: torch by its exact
pin first (the CPU wheel; anything unpinned would fetch a CUDA build), then flwr, then the
packages fedsilo's data, model and algorithm modules import, at the versions the root
pyproject.toml pins. fedsilo itself comes from libs/ on PYTHONPATH, so the ClientApp runs the
very loader, split, model and training loop the fedsilo client runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fedsilo.cli.up import free_port
from fedsilo.jobs import JobSpec

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV = BENCH / ".venv-flower"
APP_PACKAGE = BENCH / "flower_app"

TORCH = "torch==2.13.0"
TORCH_BUILD = "2.13.0+cpu"
# The newest flwr that installs here: 1.42.0 needs certifi>=2026.10.19, not yet on the index.
FLWR = "flwr==1.41.0"
# What `fedsilo.data`, `fedsilo.learning` and `fedsilo.algorithms` import besides torch.
FEDSILO_IMPORTS = ("numpy", "pydantic", "PyYAML", "phe", "gmpy2", "dp-accounting")
START_TIMEOUT_S = 60.0
SUPERLINK_CONNECTION = "bench"


class FlowerError(RuntimeError):
    pass


def pinned(names: tuple[str, ...]) -> list[str]:
    """`name==version` for each name, as the root pyproject.toml pins it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {line.split("==")[0].lower(): line for line in project["dependencies"]}
    missing = [name for name in names if name.lower() not in pins]
    if missing:
        raise FlowerError(f"pyproject.toml pins none of {missing}; update FEDSILO_IMPORTS")
    return [pins[name.lower()] for name in names]


def ensure_venv(venv: Path = VENV) -> Path:
    """The Flower virtualenv, made or brought to the pins above when it is not; its bin/."""
    requirements = [TORCH, FLWR, *pinned(FEDSILO_IMPORTS)]
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text().split() == requirements:
        return venv / "bin"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} for Flower ({FLWR}, {TORCH})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, TORCH], check=True)
    subprocess.run([*pip, *requirements[1:]], check=True)
    torch_version = subprocess.run(
        [str(python), "-c", "import torch; print(torch.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if torch_version != TORCH_BUILD:
        raise FlowerError(
            f"{venv} has torch {torch_version}, not {TORCH_BUILD}: some package pulled "
            f"another build; remove {venv} and check the pins"
        )
    stamp.write_text("\n".join(requirements) + "\n")
    return venv / "bin"


def write_app(
    app_dir: Path, spec: JobSpec, *, num_features: int, data_dir: Path, report_file: Path
) -> Path:
    """A Flower app folder: bench/flower_app plus the pyproject.toml Flower reads, whose run
    config carries the fedsilo job spec unchanged."""
    shutil.rmtree(app_dir, ignore_errors=True)
    shutil.copytree(
        APP_PACKAGE, app_dir / APP_PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__")
    )
    # json.dumps of a str is a valid TOML basic string.
    (app_dir / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedsilo-heart-disease"
version = "1.0.0"
description = "fedsilo's heart-disease job on Flower, for bench/rounds.py"
license = "Apache-2.0"
dependencies = ["{FLWR}", "{TORCH}"]

[tool.flwr.app]
publisher = "fedsilo"

[tool.flwr.app.components]
serverapp = "{APP_PACKAGE.name}.server_app:app"
clientapp = "{APP_PACKAGE.name}.client_app:app"

[tool.flwr.app.config]
job-spec = {json.dumps(spec.to_json())}
num-features = {num_features}
data-dir = {json.dumps(str(data_dir))}
report-file = {json.dumps(str(report_file))}
"""
    )
    return app_dir


@dataclass
class FlowerProcess:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class FlowerDeployment:
    """One SuperLink and `sites` SuperNodes (partition-id 0..sites-1), insecure, on free
    localhost ports, each in its own FLWR_HOME under `workdir`."""

    bin_dir: Path
    workdir: Path
    sites: int
    port: int = field(default_factory=free_port)
    processes: list[FlowerProcess] = field(default_factory=list)

    @property
    def superlink(self) -> FlowerProcess:
        return self.processes[0]

    def env(self, home: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
        return {
            **env,
            "PATH": f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(REPO / "libs"),
            "FLWR_HOME": str(self.workdir / home),
            # This machine reaches no server of Flower's: no telemetry, no update check.
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
        }

    def _spawn(self, name: str, command: list[str]) -> FlowerProcess:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            command,
            env=self.env(name),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends its children too
        )
        started = FlowerProcess(name, command, process, log)
        self.processes.append(started)
        return started

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        address = f"127.0.0.1:{self.port}"
        try:
            self._spawn(
                "superlink",
                [
                    str(self.bin_dir / "flower-superlink"),
                    "--insecure",
                    "--host=127.0.0.1",
                    f"--port={self.port}",
                    # The app's dependencies are installed already; no `uv sync` per run.
                    "--disable-runtime-dependency-installation",
                ],
            )
            for index in range(self.sites):
                self._spawn(
                    f"supernode-{index}",
                    [
                        str(self.bin_dir / "flower-supernode"),
                        "--insecure",
                        f"--superlink={address}",
                        f"--port={free_port()}",
                        f"--node-config=partition-id={index} num-partitions={self.sites}",
                    ],
                )
            home = self.workdir / "cli"
            home.mkdir(exist_ok=True)
            (home / "config.toml").write_text(
                f'[superlink]\ndefault = "{SUPERLINK_CONNECTION}"\n\n'
                f'[superlink.{SUPERLINK_CONNECTION}]\naddress = "{address}"\ninsecure = true\n'
            )
            self._wait_for_nodes()
        except BaseException:
            self.stop()
            raise

    def flwr(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        """The flwr CLI against this deployment's SuperLink."""
        return subprocess.run(
            [str(self.bin_dir / "flwr"), *args],
            env=self.env("cli"),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def _wait_for_nodes(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.process.poll() is not None:
                    raise FlowerError(
                        f"{process.name} exited with code {process.process.returncode}; "
                        f"see {process.log.name}"
                    )
            listed = self.flwr(
                "supernode", "ls", SUPERLINK_CONNECTION, "--format=json", timeout_s=30
            )
            if listed.returncode == 0:
                nodes = json.loads(listed.stdout).get("nodes", [])
                if sum(node["status"] == "online" for node in nodes) >= self.sites:
                    return
            time.sleep(0.5)
        raise FlowerError(f"{self.sites} SuperNodes not online within {START_TIMEOUT_S:.0f}s")

    def run(self, app_dir: Path, timeout_s: float) -> float:
        """`flwr run APP bench --stream`: submit the app and follow it to the end; seconds."""
        started = time.perf_counter()
        result = self.flwr(
            "run", str(app_dir), SUPERLINK_CONNECTION, "--stream", timeout_s=timeout_s
        )
        seconds = time.perf_counter() - started
        with (self.workdir / "flwr-run.log").open("a") as log:
            log.write(result.stdout + result.stderr)
        if result.returncode != 0:
            raise FlowerError(f"flwr run failed ({result.returncode}):\n{result.stdout[-2000:]}")
        return seconds

    def commands(self) -> dict[str, str]:
        return {p.name: " ".join(p.command) for p in self.processes}

    def stop(self, timeout_s: float = 20.0) -> dict[str, int]:
        """SIGTERM each process group (SuperNodes first), then wait; SIGKILL what lingers."""
        for process in reversed(self.processes):
            signal_group(process.pid, signal.SIGTERM)
        codes = {}
        for process in reversed(self.processes):
            try:
                codes[process.name] = process.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                signal_group(process.pid, signal.SIGKILL)
                codes[process.name] = process.process.wait()
            process.log.close()
        return codes


def signal_group(leader: int, signum: signal.Signals) -> None:
    """Signal a process group this module started; nothing when all of it has exited."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, signum)
