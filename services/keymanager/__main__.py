"""The keymanager service: `python -m fedsilo_services.keymanager`, configured by FEDSILO_*."""

from __future__ import annotations

from pathlib import Path

import grpc
from fedsilo.keymanager.directory import KeyDirectory
from fedsilo.rpc.server import configure_logging, run_until_signalled, start_service
from fedsilo.settings import ServiceSettings
from fedsilo.v1 import keymanager_pb2_grpc
from fedsilo_services.keymanager.servicer import KeyManagerServicer


class KeyManagerSettings(ServiceSettings):
    keymanager_db: Path = Path(".fedsilo/keymanager.db")


def main() -> None:
    settings = KeyManagerSettings()
    configure_logging("keymanager", settings.log_level)
    directory = KeyDirectory(settings.keymanager_db)
    servicer = KeyManagerServicer(directory, settings.audit_log("keymanager"))

    def register(server: grpc.Server) -> list[str]:
        keymanager_pb2_grpc.add_KeyManagerServicer_to_server(servicer, server)
        return ["fedsilo.v1.KeyManager"]

    running = start_service("keymanager", settings, register)
    running.add_stop_hook(directory.close)
    run_until_signalled(running, settings)


if __name__ == "__main__":
    main()
