"""The modelstore service: `python -m fedsilo_services.modelstore`, configured by FEDSILO_*."""

from __future__ import annotations

import grpc
from pydantic import Field

from fedsilo.rpc.auth import Authorizer, RevocationCache
from fedsilo.rpc.channels import connect
from fedsilo.rpc.server import configure_logging, run_until_signalled, start_service
from fedsilo.settings import ObjectStorageSettings, ServiceSettings
from fedsilo.storage import BlobStore, DocumentStore, open_store
from fedsilo.v1 import keymanager_pb2_grpc, modelstore_pb2_grpc
from fedsilo_services.modelstore.servicer import ModelStoreServicer


class ModelStoreSettings(ServiceSettings, ObjectStorageSettings):
    keymanager_address: str = Field(..., description="host:port of the keymanager")
    revocation_refresh_s: float = Field(2.0, gt=0)


def main() -> None:
    settings = ModelStoreSettings()
    configure_logging("modelstore", settings.log_level)
    tls = settings.tls()
    store = open_store(settings.storage())
    revoked = RevocationCache(
        keymanager_pb2_grpc.KeyManagerStub(connect(settings.keymanager_address, tls)),
        settings.revocation_refresh_s,
    )
    servicer = ModelStoreServicer(
        BlobStore(store),
        DocumentStore(store),
        Authorizer(tls is not None, revoked),
        settings.audit_log("modelstore"),
    )

    def register(server: grpc.Server) -> list[str]:
        modelstore_pb2_grpc.add_ModelStoreServicer_to_server(servicer, server)
        return ["fedsilo.v1.ModelStore"]

    running = start_service("modelstore", settings, register, tls=tls)
    if tls is not None:
        revoked.start()
        running.add_stop_hook(revoked.stop, before_drain=True)
    run_until_signalled(running, settings)


if __name__ == "__main__":
    main()
