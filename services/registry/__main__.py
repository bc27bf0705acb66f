"""The registry service: `python -m fedsilo_services.registry`, configured by FEDSILO_*."""

from __future__ import annotations

from pathlib import Path

import grpc
from fedsilo.registry.store import RegistryStore
from fedsilo.rpc.server import configure_logging, run_until_signalled, start_service
from fedsilo.settings import ServiceSettings
from fedsilo.v1 import registry_pb2_grpc
from fedsilo_services.registry.servicer import RegistryServicer
from pydantic import Field


class RegistrySettings(ServiceSettings):
    registry_db: Path = Path(".fedsilo/registry.db")
    heartbeat_interval_s: float = Field(2.0, gt=0)
    liveness_timeout_s: float = Field(10.0, gt=0, description="silent this long: not alive")


def main() -> None:
    settings = RegistrySettings()
    configure_logging("registry", settings.log_level)
    store = RegistryStore(settings.registry_db, liveness_timeout_s=settings.liveness_timeout_s)
    servicer = RegistryServicer(
        store, settings.heartbeat_interval_s, settings.audit_log("registry")
    )

    def register(server: grpc.Server) -> list[str]:
        registry_pb2_grpc.add_RegistryServicer_to_server(servicer, server)
        return ["fedsilo.v1.Registry"]

    running = start_service("registry", settings, register)
    running.add_stop_hook(store.close)
    run_until_signalled(running, settings)


if __name__ == "__main__":
    main()
