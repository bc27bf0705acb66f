"""A real federation for integration tests: every service is its own OS process on ports
chosen at run time, the four hospitals read their own files from ../shared/data."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedsilo.cli.api import OperatorApi
from fedsilo.cli.demo import start_heart_federation
from fedsilo.cli.up import LocalControlPlane, free_port
from fedsilo.client.enrollment import IdentityFiles, client_tls, enroll_with_token
from fedsilo.federations import heart_disease
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.rpc.channels import connect
from fedsilo.v1 import (
    keymanager_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

REPO = Path(__file__).resolve().parents[2]
HEART_DATA = (REPO / ".." / "shared" / "data" / "fed_heart_disease").resolve()
# 14 parameters in 4-coordinate shards: every round is split across the aggregator replicas.
SHARD_PARAMETERS = 4
# Clients that stop heartbeating are noticed within seconds, not the default 10 s.
FAST_LIVENESS = {"FEDSILO_HEARTBEAT_INTERVAL_S": "0.5", "FEDSILO_LIVENESS_TIMEOUT_S": "3"}


def require_heart_data() -> Path:
    if not (HEART_DATA / "processed.cleveland.data").exists():
        pytest.skip(f"heart-disease data not found at {HEART_DATA}")
    return HEART_DATA


@dataclass
class Federation:
    plane: LocalControlPlane
    api: OperatorApi
    data_dir: Path

    def channel(self, service: str) -> grpc.Channel:
        """A channel to one of the services, acting as the scheduler (a trusted service)."""
        return connect(self.plane.service(service).grpc_address, self.plane.tls_as("scheduler"))

    def cli_env(self) -> dict[str, str]:
        """What an operator's shell holds: the API's token and the platform CA."""
        assert self.plane.trust is not None
        return {
            **os.environ,
            "FEDSILO_OPERATOR_TOKEN": self.plane.trust.operator_token,
            "FEDSILO_CA_CERT": str(self.plane.trust.ca_cert),
        }

    def run_job(self, spec: dict[str, Any], timeout_s: float = 120) -> dict[str, Any]:
        job_id = self.api.submit_job(spec)["job_id"]
        return self.wait_for_job(job_id, timeout_s)

    def wait_for_job(self, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.api.job(job_id)
            if status["state"] != "running":
                return status
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} still running after {timeout_s}s: {status}")


@dataclass
class Site:
    """A party that enrolled with a token, as a real site does, and holds its certificate."""

    client_id: str
    registry: registry_pb2_grpc.RegistryStub
    scheduler: scheduler_pb2_grpc.SchedulerStub
    models: ModelStoreClient
    keymanager: keymanager_pb2_grpc.KeyManagerStub


def wait_for_training(site: Site, job_id: str) -> scheduler_pb2.Task:
    """Long-poll until the site is asked to train for the job; decline anything else."""
    while True:
        task = site.scheduler.WaitForTask(
            scheduler_pb2.WaitForTaskRequest(client_id=site.client_id, wait_s=10)
        )
        assert task.kind != scheduler_pb2.TASK_KIND_NONE, f"{site.client_id} was never selected"
        if task.kind == scheduler_pb2.TASK_KIND_TRAIN and task.job_id == job_id:
            return task
        site.scheduler.DeclineTask(
            scheduler_pb2.DeclineTaskRequest(
                client_id=site.client_id, task_id=task.task_id, reason="test: only training"
            )
        )


def submit_update(
    site: Site, task: scheduler_pb2.Task, blob: Any, num_examples: int = 10
) -> scheduler_pb2.SubmitUpdateResponse:
    """Report an uploaded blob as the site's update for `task`, as a client does."""
    return site.scheduler.SubmitUpdate(
        scheduler_pb2.SubmitUpdateRequest(
            client_id=site.client_id,
            task_id=task.task_id,
            job_id=task.job_id,
            round=task.round,
            model_version=task.model_version,
            update=blob,
            num_examples=num_examples,
        )
    )


def enroll_site(federation: Federation, folder: Path, site: str, dataset: str) -> Site:
    plane = federation.plane
    assert plane.trust is not None
    files = IdentityFiles(folder / site)
    ca = plane.trust.ca_cert.read_bytes()
    capabilities = registry_pb2.Capabilities(
        datasets=[registry_pb2.DatasetInfo(name=dataset, num_train=10, num_test=5, num_features=13)]
    )
    token = federation.api.add_site(site)["token"]
    client_id = enroll_with_token(
        files, site, token, ca, plane.endpoints()["registry_enroll"], capabilities
    )
    tls = client_tls(files, ca)
    return Site(
        client_id,
        registry_pb2_grpc.RegistryStub(connect(plane.service("registry").grpc_address, tls)),
        scheduler_pb2_grpc.SchedulerStub(connect(plane.service("scheduler").grpc_address, tls)),
        ModelStoreClient(connect(plane.service("modelstore").grpc_address, tls)),
        keymanager_pb2_grpc.KeyManagerStub(connect(plane.service("keymanager").grpc_address, tls)),
    )


def start_federation(state_dir: Path, data_dir: Path, **plane_options: Any) -> Federation:
    plane = start_heart_federation(state_dir, data_dir, **plane_options)
    return Federation(plane, plane.api(), data_dir)


def small_job(algorithm: dict[str, Any], rounds: int = 2, **overrides: Any) -> dict[str, Any]:
    return {
        "name": f"test-{algorithm['name']}",
        "dataset": heart_disease.DATASET,
        "algorithm": algorithm,
        "rounds": rounds,
        "local_steps": 10,
        "batch_size": 4,
        "learning_rate": 0.001,
        "min_clients": 2,
        "seed": 3,
        **overrides,
    }


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    data_dir = require_heart_data()
    federation = start_federation(
        tmp_path_factory.mktemp("federation"),
        data_dir,
        aggregators=2,
        shard_parameters=SHARD_PARAMETERS,
        extra_env=FAST_LIVENESS,
    )
    yield federation
    federation.plane.stop()


ACCESS_KEY = "fedsilo-test"
SECRET_KEY = "fedsilo-test-secret"


def _wait_until_answering(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    name = Path(str(server.args[0])).name
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"{name} exited with {server.returncode}:\n{log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # an HTTP error status is still an answer
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{name} did not answer at {url} within 30 s:\n{log.read_text()}")


@contextmanager
def local_server(command: list[str], url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A third-party server process (moto, Prometheus) for the duration of the block: started,
    answering at `url`, then stopped with SIGTERM (killed only if it does not stop)."""
    with log.open("wb") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_until_answering(url, server, log)
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-protocol server process on a free port; yields its host:port.

    No MinIO server binary can be installed on this machine, so moto's standalone server
    stands in; fedsilo talks to it with the same minio client it uses against MinIO."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    moto_server = Path(sys.executable).parent / "moto_server"
    command = [str(moto_server), "-H", "127.0.0.1", "-p", str(port)]
    with local_server(command, f"http://127.0.0.1:{port}/", log):
        yield f"127.0.0.1:{port}"


def _poison(site: Site, stop: threading.Event) -> None:
    """Heartbeats, declines all but training, and trains by uploading noise of standard
    deviation 5 in every coordinate (a fresh draw each round), claiming as many examples as
    a real hospital."""
    rng = np.random.default_rng(7)
    while not stop.is_set():
        site.registry.Heartbeat(registry_pb2.HeartbeatRequest(client_id=site.client_id))
        task = site.scheduler.WaitForTask(
            scheduler_pb2.WaitForTaskRequest(client_id=site.client_id, wait_s=0.5)
        )
        if task.kind == scheduler_pb2.TASK_KIND_NONE:
            continue
        if task.kind != scheduler_pb2.TASK_KIND_TRAIN:
            site.scheduler.DeclineTask(
                scheduler_pb2.DeclineTaskRequest(
                    client_id=site.client_id, task_id=task.task_id, reason="mallory: no"
                )
            )
            continue
        poison = rng.normal(0.0, 5.0, task.manifest.num_parameters).astype("<f4")
        blob = site.models.upload(poison.tobytes(), dtype="float32").ref
        submit_update(site, task, blob, num_examples=150)


def poisoning(site: Site, stop: threading.Event) -> threading.Thread:
    """An enrolled site that poisons every round it is selected for, until `stop` is set."""
    thread = threading.Thread(target=_poison, args=(site, stop), daemon=True, name="poisoning")
    thread.start()
    return thread
