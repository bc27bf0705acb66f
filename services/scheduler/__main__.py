"""The scheduler service: `python -m fedsilo_services.scheduler`, configured by FEDSILO_*.

Serves the client and aggregation gRPC APIs and the operator REST API in one process.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import grpc
import uvicorn
from pydantic import Field

from fedsilo.jobs import JobSpec
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.rpc.auth import Authorizer, RevocationCache
from fedsilo.rpc.channels import connect
from fedsilo.rpc.errors import RpcRejection
from fedsilo.rpc.server import configure_logging, run_until_signalled, start_service
from fedsilo.scheduler.engine import Scheduler
from fedsilo.scheduler.interfaces import SchedulerConfig
from fedsilo.scheduler.store import SchedulerStore
from fedsilo.settings import ServiceSettings
from fedsilo.v1 import (
    aggregator_pb2_grpc,
    keymanager_pb2,
    keymanager_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    scheduler_pb2_grpc,
)
from fedsilo_services.scheduler.rest import build_app
from fedsilo_services.scheduler.servicer import AggregationQueueServicer, SchedulerServicer

log = logging.getLogger("fedsilo.scheduler")


class SchedulerSettings(ServiceSettings):
    # Every client agent holds one long poll (WaitForTask) open: the handler pool must exceed
    # the number of sites, or no thread is left for their uploads. Threads start only as
    # calls need them; an idle long poll costs a blocked thread, no CPU.
    max_workers: int = Field(2048, ge=8, description="gRPC handler threads (> number of sites)")
    scheduler_db: Path = Path(".fedsilo/scheduler.db")
    registry_address: str
    modelstore_address: str
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535, description="operator REST API; 0 picks")
    shard_parameters: int = Field(1 << 20, ge=1, description="coordinates per aggregation shard")
    lease_s: float = Field(30.0, gt=0, description="an aggregator's hold on a shard")
    anomaly_threshold: float = Field(
        2.0, gt=0, description="a site's anomaly score above this counts as anomalous"
    )
    keymanager_address: str = Field(..., description="host:port of the keymanager")
    operator_token_file: Path | None = Field(None, description="bearer token of the REST API")
    revocation_refresh_s: float = Field(2.0, gt=0)


class RegistryDirectory:
    """The scheduler's view of live clients, from the registry service."""

    def __init__(self, stub: registry_pb2_grpc.RegistryStub) -> None:
        self._stub = stub

    def _alive(self, dataset: str) -> list[registry_pb2.Client]:
        response = self._stub.ListClients(
            registry_pb2.ListClientsRequest(alive_only=True, dataset=dataset), timeout=10
        )
        return list(response.clients)

    def alive_clients(self, dataset: str) -> dict[str, str]:
        return {client.client_id: client.site for client in self._alive(dataset)}

    def examples(self, dataset: str) -> dict[str, int]:
        return {
            client.client_id: sum(
                d.num_train for d in client.capabilities.datasets if d.name == dataset
            )
            for client in self._alive(dataset)
        }


class KeyManagerRoundKeys:
    """Round keys as clients published them, authenticated, to the keymanager."""

    def __init__(self, stub: keymanager_pb2_grpc.KeyManagerStub) -> None:
        self._stub = stub

    def round_keys(self, job_id: str, key_round: int) -> dict[str, bytes]:
        response = self._stub.ListRoundKeys(
            keymanager_pb2.ListRoundKeysRequest(job_id=job_id, round=key_round), timeout=10
        )
        return {key.client_id: bytes(key.public_key) for key in response.keys}


class KeyManagerKeys:
    """The scheduler's use of the keymanager's Paillier side."""

    def __init__(self, stub: keymanager_pb2_grpc.KeyManagerStub) -> None:
        self._stub = stub

    def create_job_key(self, job_id: str, spec: JobSpec) -> bytes:
        settings = spec.paillier
        try:
            key = self._stub.CreateJobKey(
                keymanager_pb2.CreateJobKeyRequest(
                    job_id=job_id,
                    min_clients=spec.min_clients,
                    packing=keymanager_pb2.PackingParameters(
                        key_bits=settings.key_bits,
                        max_clients=settings.max_clients,
                        clip=settings.clip,
                        value_bits=settings.value_bits,
                    ),
                ),
                timeout=120,
            )
        except grpc.RpcError as error:
            raise RpcRejection(error.code(), f"keymanager: {error.details()}") from None
        return bytes(key.public_key)

    def upload_problem(self, job_id: str, digest: str) -> str | None:
        response = self._stub.CheckUpload(
            keymanager_pb2.CheckUploadRequest(job_id=job_id, digest=digest), timeout=60
        )
        return None if response.valid else str(response.reason)

    def decrypt_aggregate(
        self,
        job_id: str,
        round_: int,
        aggregate: str,
        uploads: list[tuple[str, str]],
        num_values: int,
    ) -> str:
        try:
            response = self._stub.DecryptAggregate(
                keymanager_pb2.DecryptAggregateRequest(
                    job_id=job_id,
                    round=round_,
                    aggregate_digest=aggregate,
                    num_values=num_values,
                    uploads=[
                        keymanager_pb2.EncryptedUpload(client_id=c, digest=d) for c, d in uploads
                    ],
                ),
                timeout=600,
            )
        except grpc.RpcError as error:
            raise RpcRejection(error.code(), f"keymanager: {error.details()}") from None
        return str(response.sum_digest)


def main() -> None:
    settings = SchedulerSettings()
    configure_logging("scheduler", settings.log_level)
    tls = settings.tls()
    registry = registry_pb2_grpc.RegistryStub(connect(settings.registry_address, tls))
    models = ModelStoreClient(connect(settings.modelstore_address, tls))
    keymanager = keymanager_pb2_grpc.KeyManagerStub(connect(settings.keymanager_address, tls))
    revoked = RevocationCache(keymanager, settings.revocation_refresh_s)
    auth = Authorizer(tls is not None, revoked)
    operator_token = (
        settings.operator_token_file.read_text().strip() if settings.operator_token_file else None
    )
    if operator_token is None and tls is not None:
        raise SystemExit("set FEDSILO_OPERATOR_TOKEN_FILE: the operator API needs a token")
    store = SchedulerStore(settings.scheduler_db)
    audit_log = settings.audit_log("scheduler")
    scheduler = Scheduler(
        store,
        RegistryDirectory(registry),
        models,
        SchedulerConfig(
            shard_parameters=settings.shard_parameters,
            lease_s=settings.lease_s,
            anomaly_threshold=settings.anomaly_threshold,
        ),
        keys=KeyManagerKeys(keymanager),
        round_keys=KeyManagerRoundKeys(keymanager),
        audit=audit_log,
    )

    def register(server: grpc.Server) -> list[str]:
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(
            SchedulerServicer(scheduler, auth, audit_log), server
        )
        aggregator_pb2_grpc.add_AggregationQueueServicer_to_server(
            AggregationQueueServicer(scheduler, auth), server
        )
        return ["fedsilo.v1.Scheduler", "fedsilo.v1.AggregationQueue"]

    running = start_service("scheduler", settings, register, tls=tls)
    if tls is not None:
        revoked.start()
        running.add_stop_hook(revoked.stop, before_drain=True)

    # The REST API binds its own socket first so that port 0 works and the port is known.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.http_host, settings.http_port))
    sock.listen(128)  # connections queue from now on, even before uvicorn accepts them
    running.http_port = sock.getsockname()[1]
    http = uvicorn.Server(
        uvicorn.Config(
            build_app(scheduler, models, registry, keymanager, operator_token, audit_log),
            log_level="warning",
            access_log=False,
            # HTTPS with the scheduler's own certificate; the CLI trusts the platform CA.
            ssl_certfile=str(settings.tls_cert) if tls is not None else None,
            ssl_keyfile=str(settings.tls_key) if tls is not None else None,
        )
    )
    http_thread = threading.Thread(target=http.run, kwargs={"sockets": [sock]}, daemon=True)
    http_thread.start()
    deadline = time.monotonic() + 30
    while not http.started and http_thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not http.started:
        raise SystemExit("the operator REST API did not start; see the log above")
    log.info(
        "operator REST API on http://%s:%d (docs at /docs)", settings.http_host, running.http_port
    )

    def stop_http() -> None:
        http.should_exit = True
        http_thread.join(timeout=5)

    running.add_stop_hook(scheduler.stop, before_drain=True)
    running.add_stop_hook(stop_http, before_drain=True)
    running.add_stop_hook(store.close)
    scheduler.start()
    run_until_signalled(running, settings)


if __name__ == "__main__":
    main()
