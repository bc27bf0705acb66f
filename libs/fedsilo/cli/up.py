"""The control plane as local processes: what `fedsilo up` and the demo start."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fedsilo.cli.processes import ServiceProcess, spawn, stop_all

START_TIMEOUT_S = 60.0


@dataclass
class LocalControlPlane:
    state_dir: Path
    processes: list[ServiceProcess] = field(default_factory=list)

    def service(self, name: str) -> ServiceProcess:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(name)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.service('scheduler').info['http_port']}"

    def endpoints(self) -> dict[str, str]:
        return {
            "api": self.api_url,
            "registry": self.service("registry").grpc_address,
            "scheduler": self.service("scheduler").grpc_address,
            "modelstore": self.service("modelstore").grpc_address,
            "keymanager": self.service("keymanager").grpc_address,
        }

    def client_env(self) -> dict[str, str]:
        endpoints = self.endpoints()
        return {
            "FEDSILO_REGISTRY_ADDRESS": endpoints["registry"],
            "FEDSILO_SCHEDULER_ADDRESS": endpoints["scheduler"],
            "FEDSILO_MODELSTORE_ADDRESS": endpoints["modelstore"],
        }

    def write_endpoints(self) -> Path:
        path = self.state_dir / "endpoints.json"
        path.write_text(json.dumps(self.endpoints(), indent=2))
        return path

    def start_client(self, site: str, site_config: Path, **extra_env: str) -> ServiceProcess:
        process = spawn(
            f"client-{site}",
            "fedsilo_services.client",
            {
                **self.client_env(),
                "FEDSILO_AUDIT_DIR": str(self.state_dir / "audit"),
                "FEDSILO_STATE_DIR": str(self.state_dir / "clients"),
                "FEDSILO_SITE": site,
                "FEDSILO_SITE_CONFIG": str(site_config),
                **extra_env,
            },
            self.state_dir / "run",
        )
        self.processes.append(process)
        return process

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait for every process started so far (clients start in parallel, then this)."""
        for process in self.processes:
            if not process.info:
                process.wait_ready(timeout_s)

    def stop(self) -> dict[str, int]:
        return stop_all(self.processes)


def start_control_plane(
    state_dir: Path,
    *,
    aggregators: int = 2,
    shard_parameters: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> LocalControlPlane:
    """Start modelstore, registry and keymanager, then the scheduler, then aggregators."""
    state_dir = state_dir.resolve()
    run_dir = state_dir / "run"
    plane = LocalControlPlane(state_dir)
    common = {"FEDSILO_AUDIT_DIR": str(state_dir / "audit"), **(extra_env or {})}
    try:
        first = [
            spawn(
                "modelstore",
                "fedsilo_services.modelstore",
                {**common, "FEDSILO_STORAGE_PATH": str(state_dir / "objects")},
                run_dir,
            ),
            spawn(
                "registry",
                "fedsilo_services.registry",
                {**common, "FEDSILO_REGISTRY_DB": str(state_dir / "registry.db")},
                run_dir,
            ),
            spawn(
                "keymanager",
                "fedsilo_services.keymanager",
                {**common, "FEDSILO_KEYMANAGER_DB": str(state_dir / "keymanager.db")},
                run_dir,
            ),
        ]
        plane.processes.extend(first)
        for process in first:
            process.wait_ready(START_TIMEOUT_S)
        scheduler_env = {
            **common,
            "FEDSILO_SCHEDULER_DB": str(state_dir / "scheduler.db"),
            "FEDSILO_REGISTRY_ADDRESS": plane.service("registry").grpc_address,
            "FEDSILO_MODELSTORE_ADDRESS": plane.service("modelstore").grpc_address,
            "FEDSILO_HTTP_PORT": "0",
        }
        if shard_parameters is not None:
            scheduler_env["FEDSILO_SHARD_PARAMETERS"] = str(shard_parameters)
        scheduler = spawn("scheduler", "fedsilo_services.scheduler", scheduler_env, run_dir)
        plane.processes.append(scheduler)
        scheduler.wait_ready(START_TIMEOUT_S)
        workers = [
            spawn(
                f"aggregator-{index}",
                "fedsilo_services.aggregator",
                {
                    **common,
                    "FEDSILO_SCHEDULER_ADDRESS": scheduler.grpc_address,
                    "FEDSILO_MODELSTORE_ADDRESS": plane.service("modelstore").grpc_address,
                    "FEDSILO_WORKER_ID": f"aggregator-{index}",
                },
                run_dir,
            )
            for index in range(aggregators)
        ]
        plane.processes.extend(workers)
        for worker in workers:
            worker.wait_ready(START_TIMEOUT_S)
    except BaseException:
        plane.stop()
        raise
    plane.write_endpoints()
    return plane
