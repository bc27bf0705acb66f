"""The registry service: `python -m fedsilo_services.registry`, configured by FEDSILO_*."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import grpc
from pydantic import Field, field_validator

from fedsilo.discovery import validate_endpoints
from fedsilo.registry.store import RegistryStore
from fedsilo.rpc.auth import Authorizer, RevocationCache
from fedsilo.rpc.channels import connect
from fedsilo.rpc.server import configure_logging, run_until_signalled, start_service
from fedsilo.settings import ServiceSettings
from fedsilo.v1 import keymanager_pb2_grpc, registry_pb2_grpc
from fedsilo_services.registry.servicer import RegistryServicer

log = logging.getLogger("fedsilo.registry")


class RegistrySettings(ServiceSettings):
    registry_db: Path = Path(".fedsilo/registry.db")
    heartbeat_interval_s: float = Field(2.0, gt=0)
    liveness_timeout_s: float = Field(10.0, gt=0, description="silent this long: not alive")
    keymanager_address: str = Field(..., description="host:port of the keymanager")
    enroll_port: int = Field(0, ge=0, le=65535, description="server-TLS port for first Enroll")
    revocation_refresh_s: float = Field(2.0, gt=0)
    site_endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="JSON: service name -> the host:port sites dial (registry, scheduler, "
        "modelstore, keymanager); what clients learn by discovery",
    )

    @field_validator("site_endpoints")
    @classmethod
    def _endpoints_are_addresses(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_endpoints(value)


def main() -> None:
    settings = RegistrySettings()
    configure_logging("registry", settings.log_level)
    tls = settings.tls()
    store = RegistryStore(settings.registry_db, liveness_timeout_s=settings.liveness_timeout_s)
    keymanager = keymanager_pb2_grpc.KeyManagerStub(connect(settings.keymanager_address, tls))
    revoked = RevocationCache(keymanager, settings.revocation_refresh_s)
    servicer = RegistryServicer(
        store,
        settings.heartbeat_interval_s,
        Authorizer(tls is not None, revoked),
        keymanager,
        settings.audit_log("registry"),
        settings.site_endpoints,
    )

    def register(server: grpc.Server) -> list[str]:
        registry_pb2_grpc.add_RegistryServicer_to_server(servicer, server)
        return ["fedsilo.v1.Registry"]

    extra = (
        {} if tls is None else {"enroll_port": (settings.enroll_port, tls.enrollment_credentials())}
    )
    running = start_service("registry", settings, register, tls=tls, extra_ports=extra)
    if tls is not None:
        revoked.start()
        running.add_stop_hook(revoked.stop, before_drain=True)

    # One write of the changed last-seen times per heartbeat interval, however many agents.
    def persist_liveness(stop: threading.Event) -> None:
        while not stop.wait(settings.heartbeat_interval_s):
            try:
                store.persist_liveness()
            except sqlite3.Error:
                log.exception("cannot write last-seen times; trying again")

    running.run_in_background(persist_liveness, "liveness", join_timeout_s=10)
    running.add_stop_hook(store.close)  # after the drain: writes the last beats too
    run_until_signalled(running, settings)


if __name__ == "__main__":
    main()
