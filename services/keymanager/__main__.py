"""The keymanager service: `python -m fedsilo_services.keymanager`, configured by FEDSILO_*."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
from pydantic import Field

from fedsilo.keymanager.certificates import ClientCertificates
from fedsilo.keymanager.directory import KeyDirectory
from fedsilo.keymanager.jobkeys import JobKeys
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.pki import CertificateAuthority
from fedsilo.rpc.auth import Authorizer
from fedsilo.rpc.channels import connect
from fedsilo.rpc.server import configure_logging, run_until_signalled, start_service
from fedsilo.settings import ServiceSettings
from fedsilo.v1 import keymanager_pb2_grpc
from fedsilo_services.keymanager.servicer import KeyManagerServicer


class KeyManagerSettings(ServiceSettings):
    keymanager_db: Path = Path(".fedsilo/keymanager.db")
    ca_dir: Path = Field(Path(".fedsilo/keymanager/ca"), description="CA key (0600) and cert")
    keymanager_state: Path = Field(Path(".fedsilo/keymanager"), description="tokens, issued")
    client_cert_days: float = Field(30.0, gt=0, description="validity of client certificates")
    modelstore_address: str | None = Field(None, description="for Paillier: reads uploads")


def main() -> None:
    settings = KeyManagerSettings()
    configure_logging("keymanager", settings.log_level)
    tls = settings.tls()
    directory = KeyDirectory(settings.keymanager_db)
    certificates = ClientCertificates(
        CertificateAuthority.load_or_create(settings.ca_dir),
        settings.keymanager_state,
        dt.timedelta(days=settings.client_cert_days),
    )
    models = (
        ModelStoreClient(connect(settings.modelstore_address, tls))
        if settings.modelstore_address
        else None
    )
    servicer = KeyManagerServicer(
        directory,
        certificates,
        Authorizer(tls is not None, certificates.revoked_serials),
        settings.audit_log("keymanager"),
        JobKeys(settings.keymanager_state / "job-keys"),
        models,
    )

    def register(server: grpc.Server) -> list[str]:
        keymanager_pb2_grpc.add_KeyManagerServicer_to_server(servicer, server)
        return ["fedsilo.v1.KeyManager"]

    running = start_service("keymanager", settings, register, tls=tls)
    running.add_stop_hook(directory.close)
    running.add_stop_hook(certificates.close)
    run_until_signalled(running, settings)


if __name__ == "__main__":
    main()
