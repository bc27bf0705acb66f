"""An aggregator replica: `python -m fedsilo_services.aggregator`, configured by FEDSILO_*.

Run as many as the models and federations need; each pulls shards from the scheduler.
"""

from __future__ import annotations

import os
import socket

import grpc
from pydantic import Field

from fedsilo.aggregator.sources import ObjectStoreSource
from fedsilo.aggregator.worker import AggregatorWorker, single_threaded_blas
from fedsilo.modelstore.blobinfo import DirectBlobWriter
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.parallel import resolve_threads
from fedsilo.rpc.channels import connect
from fedsilo.rpc.server import configure_logging, run_until_signalled, start_service
from fedsilo.settings import ObjectStorageSettings, ServiceSettings
from fedsilo.storage import BlobStore, DocumentStore, open_store
from fedsilo.v1 import aggregator_pb2_grpc


class AggregatorSettings(ServiceSettings, ObjectStorageSettings):
    scheduler_address: str
    modelstore_address: str
    worker_id: str = Field("", description="defaults to hostname-pid (the pod name in k8s)")
    poll_s: float = Field(5.0, gt=0)
    direct_storage: bool = Field(
        False,
        description="read updates and write shard results straight to the object store (the "
        "model store's FEDSILO_STORAGE_* / FEDSILO_S3_* settings): replicas work in parallel",
    )
    threads: int = Field(
        0,
        ge=0,
        description="threads folding one shard; 0: the CPUs this process may use (its "
        "affinity, capped by the cgroup CPU limit of its pod)",
    )


def main() -> None:
    settings = AggregatorSettings()
    configure_logging("aggregator", settings.log_level)
    single_threaded_blas()
    tls = settings.tls()
    models = ModelStoreClient(connect(settings.modelstore_address, tls))
    source, write = None, None
    if settings.direct_storage:
        store = open_store(settings.storage())
        source = ObjectStoreSource(BlobStore(store))
        write = DirectBlobWriter(BlobStore(store), DocumentStore(store), "service/aggregator")
    worker = AggregatorWorker(
        settings.worker_id or f"{socket.gethostname()}-{os.getpid()}",
        aggregator_pb2_grpc.AggregationQueueStub(connect(settings.scheduler_address, tls)),
        models,
        source,
        write,
        poll_s=settings.poll_s,
        threads=resolve_threads(settings.threads),
    )

    def register(server: grpc.Server) -> list[str]:
        return []

    running = start_service("aggregator", settings, register, tls=tls)
    running.run_in_background(worker.run, "shard-loop", join_timeout_s=settings.poll_s + 15)
    run_until_signalled(running, settings)


if __name__ == "__main__":
    main()
