"""The control plane as local processes: what `fedsilo up` and the demo start.

Trust comes first: the CA, one certificate per service and the operator token are created
under the state folder (never in the repository), and every service is started with mutual
TLS. Clients join as real sites do: the operator asks for a one-time token, the client enrolls
with it and from then on presents its own certificate.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsilo.cli.api import OperatorApi
from fedsilo.cli.processes import ServiceProcess, spawn, stop_all
from fedsilo.pki.bootstrap import LocalTrust, bootstrap_local_trust
from fedsilo.rpc.tls import TlsConfig

START_TIMEOUT_S = 60.0
PROCESSES_FILE = "processes.json"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalControlPlane:
    state_dir: Path
    trust: LocalTrust | None
    processes: list[ServiceProcess] = field(default_factory=list)

    def service(self, name: str) -> ServiceProcess:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(name)

    @property
    def api_url(self) -> str:
        scheme = "https" if self.trust is not None else "http"
        return f"{scheme}://127.0.0.1:{self.service('scheduler').info['http_port']}"

    def api(self) -> OperatorApi:
        if self.trust is None:
            return OperatorApi(self.api_url)
        return OperatorApi(
            self.api_url, token=self.trust.operator_token, ca_cert=self.trust.ca_cert
        )

    def tls_as(self, service: str) -> TlsConfig | None:
        """Credentials of one of the services (tests and tools acting inside the plane)."""
        if self.trust is None:
            return None
        files = self.trust.service(service)
        return TlsConfig.load(files.ca, files.cert, files.key)

    def endpoints(self) -> dict[str, str]:
        endpoints = {
            "api": self.api_url,
            "registry": self.service("registry").grpc_address,
            "scheduler": self.service("scheduler").grpc_address,
            "modelstore": self.service("modelstore").grpc_address,
            "keymanager": self.service("keymanager").grpc_address,
            # What a site is given: the rest it learns from the registry.
            "registry_sites": self.service("registry").grpc_address,
        }
        if self.trust is not None:
            endpoints["registry_enroll"] = (
                f"127.0.0.1:{self.service('registry').info['enroll_port']}"
            )
            endpoints["registry_sites"] = endpoints["registry_enroll"]
            endpoints["ca_cert"] = str(self.trust.ca_cert)
            endpoints["operator_token_file"] = str(self.trust.operator_token_file)
        return endpoints

    def client_env(self) -> dict[str, str]:
        """What a site is given, as settings: the registry's address and the platform CA
        (the token is per site); every other address comes from the registry."""
        endpoints = self.endpoints()
        env = {"FEDSILO_REGISTRY_ADDRESS": endpoints["registry_sites"]}
        if self.trust is None:
            env["FEDSILO_INSECURE"] = "true"
        else:
            env["FEDSILO_TLS_CA"] = endpoints["ca_cert"]
        return env

    def write_endpoints(self) -> Path:
        path = self.state_dir / "endpoints.json"
        path.write_text(json.dumps(self.endpoints(), indent=2))
        return path

    def write_processes(self) -> dict[str, Any]:
        """What `fedsilo down` stops and `fedsilo status` checks: this process and each
        service's pid and ports; returns what it wrote."""
        record = {
            "pid": os.getpid(),
            "services": [
                {"name": p.name, "pid": p.pid, **p.info, "log": str(p.log_path)}
                for p in self.processes
            ],
        }
        (self.state_dir / PROCESSES_FILE).write_text(json.dumps(record, indent=2))
        return record

    def start_client(
        self,
        site: str,
        site_config: Path,
        *,
        module: str = "fedsilo_services.client",
        **extra_env: str,
    ) -> ServiceProcess:
        """A site's client process (`module`: another entry point that runs the agent)."""
        env = {
            **self.client_env(),
            "FEDSILO_AUDIT_DIR": str(self.state_dir / "audit"),
            "FEDSILO_STATE_DIR": str(self.state_dir / "clients"),
            "FEDSILO_SITE": site,
            "FEDSILO_SITE_CONFIG": str(site_config),
        }
        if self.trust is not None:
            env["FEDSILO_ENROLLMENT_TOKEN"] = self.api().add_site(site)["token"]
        process = spawn(
            f"client-{site}",
            module,
            {**env, **extra_env},
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
    insecure: bool = False,
) -> LocalControlPlane:
    """Start keymanager, then modelstore and registry, then the scheduler, then aggregators."""
    state_dir = state_dir.resolve()
    run_dir = state_dir / "run"
    trust = None if insecure else bootstrap_local_trust(state_dir)
    plane = LocalControlPlane(state_dir, trust)
    common = {"FEDSILO_AUDIT_DIR": str(state_dir / "audit"), **(extra_env or {})}
    if insecure:
        common["FEDSILO_INSECURE"] = "true"

    def env(service: str, **settings: str) -> dict[str, str]:
        identity = {} if trust is None else trust.service(service).env()
        return {**common, **identity, **settings}

    def start(name: str, module: str, settings: dict[str, str]) -> ServiceProcess:
        process = spawn(name, module, settings, run_dir)
        plane.processes.append(process)
        return process

    # The keymanager reads encrypted uploads from the model store, and the model store asks
    # the keymanager for revocations: the keymanager's port is fixed before either starts.
    # The registry tells sites where the scheduler and itself are: those are fixed too.
    keymanager_address = f"127.0.0.1:{free_port()}"
    registry_port, scheduler_port = free_port(), free_port()
    try:
        modelstore = start(
            "modelstore",
            "fedsilo_services.modelstore",
            env(
                "modelstore",
                FEDSILO_STORAGE_PATH=str(state_dir / "objects"),
                FEDSILO_KEYMANAGER_ADDRESS=keymanager_address,
            ),
        )
        modelstore.wait_ready(START_TIMEOUT_S)
        keymanager = start(
            "keymanager",
            "fedsilo_services.keymanager",
            env(
                "keymanager",
                FEDSILO_GRPC_PORT=keymanager_address.rsplit(":", 1)[1],
                FEDSILO_KEYMANAGER_DB=str(state_dir / "keymanager.db"),
                FEDSILO_CA_DIR=str(state_dir / "keymanager" / "ca"),
                FEDSILO_KEYMANAGER_STATE=str(state_dir / "keymanager"),
                FEDSILO_MODELSTORE_ADDRESS=modelstore.grpc_address,
            ),
        )
        keymanager.wait_ready(START_TIMEOUT_S)
        start(
            "registry",
            "fedsilo_services.registry",
            env(
                "registry",
                FEDSILO_GRPC_PORT=str(registry_port),
                FEDSILO_REGISTRY_DB=str(state_dir / "registry.db"),
                FEDSILO_KEYMANAGER_ADDRESS=keymanager.grpc_address,
                FEDSILO_SITE_ENDPOINTS=json.dumps(
                    {
                        "registry": f"127.0.0.1:{registry_port}",
                        "scheduler": f"127.0.0.1:{scheduler_port}",
                        "modelstore": modelstore.grpc_address,
                        "keymanager": keymanager.grpc_address,
                    }
                ),
            ),
        ).wait_ready(START_TIMEOUT_S)
        scheduler_settings = {
            "FEDSILO_GRPC_PORT": str(scheduler_port),
            "FEDSILO_SCHEDULER_DB": str(state_dir / "scheduler.db"),
            "FEDSILO_REGISTRY_ADDRESS": plane.service("registry").grpc_address,
            "FEDSILO_MODELSTORE_ADDRESS": plane.service("modelstore").grpc_address,
            "FEDSILO_KEYMANAGER_ADDRESS": keymanager.grpc_address,
            "FEDSILO_HTTP_PORT": "0",
        }
        if trust is not None:
            scheduler_settings["FEDSILO_OPERATOR_TOKEN_FILE"] = str(trust.operator_token_file)
        if shard_parameters is not None:
            scheduler_settings["FEDSILO_SHARD_PARAMETERS"] = str(shard_parameters)
        scheduler = start(
            "scheduler", "fedsilo_services.scheduler", env("scheduler", **scheduler_settings)
        )
        scheduler.wait_ready(START_TIMEOUT_S)
        workers = [
            start(
                f"aggregator-{index}",
                "fedsilo_services.aggregator",
                env(
                    "aggregator",
                    FEDSILO_SCHEDULER_ADDRESS=scheduler.grpc_address,
                    FEDSILO_MODELSTORE_ADDRESS=plane.service("modelstore").grpc_address,
                    FEDSILO_WORKER_ID=f"aggregator-{index}",
                    # Updates are read from the model store's objects, in parallel.
                    FEDSILO_DIRECT_STORAGE="true",
                    FEDSILO_STORAGE_PATH=str(state_dir / "objects"),
                ),
            )
            for index in range(aggregators)
        ]
        for worker in workers:
            worker.wait_ready(START_TIMEOUT_S)
    except BaseException:
        plane.stop()
        raise
    plane.write_endpoints()
    return plane
