"""Starting services as local OS processes: each one binds free ports and reports them in a
readiness file, so nothing here guesses a port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


class ServiceStartError(RuntimeError):
    pass


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    ready_file: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.info['grpc_port']}"

    @property
    def health_address(self) -> str:
        return f"127.0.0.1:{self.info['health_port']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.info['metrics_port']}/metrics"

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                self.info = json.loads(self.ready_file.read_text())
                return
            if self.process.poll() is not None:
                raise ServiceStartError(
                    f"{self.name} exited with code {self.process.returncode} while starting; "
                    f"last log lines:\n{tail(self.log_path)}"
                )
            time.sleep(0.05)
        raise ServiceStartError(
            f"{self.name} not ready after {timeout_s:.0f}s; see {self.log_path}"
        )

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(
    name: str,
    module: str,
    env: Mapping[str, str],
    run_dir: Path,
    *,
    log_stream: IO[bytes] | None = None,
) -> ServiceProcess:
    """Start `python -m module` with FEDSILO_* settings; its log goes to run_dir/NAME.log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ready_file = run_dir / f"{name}.ready.json"
    ready_file.unlink(missing_ok=True)
    log_path = run_dir / f"{name}.log"
    full_env = {
        **os.environ,
        "FEDSILO_GRPC_PORT": "0",
        "FEDSILO_METRICS_PORT": "0",
        **env,
        "FEDSILO_READY_FILE": str(ready_file),
        "PYTHONUNBUFFERED": "1",
    }
    output = log_stream if log_stream is not None else log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        env=full_env,
        stdout=output,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return ServiceProcess(name, process, ready_file, log_path, dict(env))


def stop_all(processes: list[ServiceProcess], timeout_s: float = 20.0) -> dict[str, int]:
    """SIGTERM everything (clients and workers first), then wait; returns exit codes."""
    for service in reversed(processes):
        service.terminate()
    return {service.name: service.wait_stopped(timeout_s) for service in reversed(processes)}
