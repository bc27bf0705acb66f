"""A population of simulated client agents in one process, to load the control plane as many
sites would: each simulated site enrolls for real (a one-time token from the operator API, a
CSR, a certificate from the platform CA), holds its own mutual-TLS channels, heartbeats at the
registry's interval, long-polls the scheduler and answers tasks over the same RPCs as
`ClientAgent`, with synthetic updates and metrics instead of training. No torch and no data:
this tests the control plane only.

One asyncio loop serves them all (grpc.aio): a thousand long polls and heartbeat timers are
coroutines, not threads.

    python -m fedsilo.client.simulated      # configured by FEDSILO_*, see SimulationSettings
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import ssl
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import grpc.aio
import httpx
import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedsilo import __version__
from fedsilo.client.tasks import task_kind_name, update_request
from fedsilo.federations.heart_disease import DATASET as HEART_DISEASE
from fedsilo.jobs import JobSpec, ModelSpec
from fedsilo.pki import generate_key, key_pem, make_csr
from fedsilo.rpc.channels import CHANNEL_OPTIONS, CHUNK_BYTES
from fedsilo.rpc.server import configure_logging
from fedsilo.v1 import (
    common_pb2,
    modelstore_pb2,
    modelstore_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

log = logging.getLogger("fedsilo.simulated")


class TaskDeclined(Exception):
    """A task the simulation does not do (protected updates, another dataset)."""


def model_layout(
    spec: ModelSpec, in_features: int, num_outputs: int = 1
) -> list[tuple[str, tuple[int, ...]]]:
    """The model zoo's state_dict layout (names and shapes, in vector order) without building
    the model: what `fedsilo.learning.manifest(build_model(...))` reports."""
    layout: list[tuple[str, tuple[int, ...]]] = []
    index, width = 0, in_features
    for hidden in spec.hidden:  # an mlp: Linear, ReLU[, Dropout] per hidden layer
        layout += [(f"{index}.weight", (hidden, width)), (f"{index}.bias", (hidden,))]
        index += 3 if spec.dropout > 0 else 2
        width = hidden
    layout += [(f"{index}.weight", (num_outputs, width)), (f"{index}.bias", (num_outputs,))]
    return layout


@dataclass(frozen=True)
class SimulatedSite:
    """What one simulated site declares: one dataset, its sizes, never any contents."""

    name: str
    dataset: str
    num_features: int
    num_train: int
    num_test: int

    def capabilities(self) -> registry_pb2.Capabilities:
        return registry_pb2.Capabilities(
            cores=1,
            gpu=False,
            datasets=[
                registry_pb2.DatasetInfo(
                    name=self.dataset,
                    num_train=self.num_train,
                    num_test=self.num_test,
                    num_features=self.num_features,
                )
            ],
            agent_version=f"{__version__}+simulated",
        )


@dataclass(frozen=True)
class PlaneAddresses:
    registry: str
    registry_enroll: str
    scheduler: str
    modelstore: str
    ca_pem: bytes


def _quantiles(values: array[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "p99": 0.0, "max": 0.0}
    data = np.frombuffer(values, dtype=np.float64)
    return {
        "median": float(np.median(data)),
        "p99": float(np.quantile(data, 0.99)),
        "max": float(data.max()),
    }


class PopulationStats:
    """What the population did, as counts; failures by RPC and status code. The first failure
    of each kind is logged, the rest only counted (a thousand clients repeat each other)."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.enrolled = 0
        self.enrollment_s = 0.0
        self.heartbeat_interval_s = 0.0  # as the registry asks for it
        self.heartbeats_ok = 0
        self.heartbeat_latency_s: array[float] = array("d")
        self.heartbeat_lag_s: array[float] = array("d")
        self.failures: Counter[str] = Counter()
        self.tasks: Counter[str] = Counter()
        self.polls = 0
        self.started = time.time()

    def failure(self, what: str, error: grpc.RpcError | Exception) -> None:
        code = error.code().name if isinstance(error, grpc.RpcError) else type(error).__name__
        key = f"{what}:{code}"
        if not self.failures[key]:
            details = error.details() if isinstance(error, grpc.RpcError) else str(error)
            log.warning("%s failed (%s): %s; further ones are only counted", what, code, details)
        self.failures[key] += 1

    def heartbeat_failures(self) -> int:
        return sum(n for key, n in self.failures.items() if key.startswith("heartbeat:"))

    def snapshot(self) -> dict[str, Any]:
        failed = self.heartbeat_failures()
        return {
            "clients": self.clients,
            "enrolled": self.enrolled,
            "enrollment_failures": sum(
                n for key, n in self.failures.items() if key.startswith("enroll")
            ),
            "enrollment_s": self.enrollment_s,
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "heartbeats": {
                "sent": self.heartbeats_ok + failed,
                "ok": self.heartbeats_ok,
                "failed": failed,
                "latency_s": _quantiles(self.heartbeat_latency_s),
                # How late the simulation itself sent beats: large values mean the load
                # generator, not the registry, fell behind.
                "send_lag_s": _quantiles(self.heartbeat_lag_s),
            },
            "polls": self.polls,
            "tasks": dict(sorted(self.tasks.items())),
            "failures": dict(sorted(self.failures.items())),
            "started_at": self.started,
            "updated_at": time.time(),
        }


def _upload_chunks(payload: bytes, dtype: str) -> Iterator[modelstore_pb2.UploadChunk]:
    yield modelstore_pb2.UploadChunk(header=modelstore_pb2.UploadHeader(dtype=dtype))
    for start in range(0, len(payload), CHUNK_BYTES):
        yield modelstore_pb2.UploadChunk(data=payload[start : start + CHUNK_BYTES])


class SimulatedClient:
    """One site's agent: enrolled identity, channels, heartbeat and task loops."""

    def __init__(
        self,
        site: SimulatedSite,
        plane: PlaneAddresses,
        stats: PopulationStats,
        *,
        poll_s: float = 10.0,
        train_s: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.site = site
        self.client_id = ""
        self.heartbeat_s = 2.0
        self._plane = plane
        self._stats = stats
        self._poll_s = poll_s
        self._train_s = train_s
        self._rng = np.random.default_rng(seed)
        self._channels: list[grpc.aio.Channel] = []
        self._registry: registry_pb2_grpc.RegistryAsyncStub | None = None
        self._scheduler: scheduler_pb2_grpc.SchedulerAsyncStub | None = None
        self._models: modelstore_pb2_grpc.ModelStoreAsyncStub | None = None

    # identity ------------------------------------------------------------------------------
    async def enroll(self, token: str) -> None:
        """As `enroll_with_token`: a fresh key, a CSR and the one-time token on the registry's
        server-TLS enrollment port; then mutual-TLS channels with the issued certificate."""
        key = generate_key()
        credentials = grpc.ssl_channel_credentials(root_certificates=self._plane.ca_pem)
        async with grpc.aio.secure_channel(
            self._plane.registry_enroll, credentials, options=CHANNEL_OPTIONS
        ) as channel:
            enrollment = cast(
                "registry_pb2_grpc.RegistryAsyncStub", registry_pb2_grpc.RegistryStub(channel)
            )
            response = await enrollment.Enroll(
                registry_pb2.EnrollRequest(
                    site=self.site.name,
                    capabilities=self.site.capabilities(),
                    enrollment_token=token,
                    csr_pem=make_csr(key, self.site.name),
                ),
                timeout=60,
                wait_for_ready=True,
            )
        self.client_id = response.client_id
        self.heartbeat_s = response.heartbeat_interval_s or self.heartbeat_s
        identity = grpc.ssl_channel_credentials(
            root_certificates=self._plane.ca_pem,
            private_key=key_pem(key),
            certificate_chain=response.certificate_pem,
        )

        def connect(address: str) -> grpc.aio.Channel:
            channel = grpc.aio.secure_channel(address, identity, options=CHANNEL_OPTIONS)
            self._channels.append(channel)
            return channel

        # The generated stubs are typed for grpc.aio channels only where grpc itself is typed.
        self._registry = cast(
            "registry_pb2_grpc.RegistryAsyncStub",
            registry_pb2_grpc.RegistryStub(connect(self._plane.registry)),
        )
        self._scheduler = cast(
            "scheduler_pb2_grpc.SchedulerAsyncStub",
            scheduler_pb2_grpc.SchedulerStub(connect(self._plane.scheduler)),
        )
        self._models = cast(
            "modelstore_pb2_grpc.ModelStoreAsyncStub",
            modelstore_pb2_grpc.ModelStoreStub(connect(self._plane.modelstore)),
        )

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels))

    def _stubs(
        self,
    ) -> tuple[
        registry_pb2_grpc.RegistryAsyncStub,
        scheduler_pb2_grpc.SchedulerAsyncStub,
        modelstore_pb2_grpc.ModelStoreAsyncStub,
    ]:
        if self._registry is None or self._scheduler is None or self._models is None:
            raise RuntimeError(f"site {self.site.name} has not enrolled")
        return self._registry, self._scheduler, self._models

    # heartbeats ----------------------------------------------------------------------------
    async def heartbeats(self, stop: asyncio.Event) -> None:
        """One heartbeat per interval on a fixed schedule (a slow reply does not push the next
        one back), starting at a random phase so that a population does not beat in step."""
        registry, _, _ = self._stubs()
        loop = asyncio.get_running_loop()
        due = loop.time() + float(self._rng.uniform(0, self.heartbeat_s))
        while not stop.is_set():
            await asyncio.sleep(max(0.0, due - loop.time()))
            sent = loop.time()
            self._stats.heartbeat_lag_s.append(max(0.0, sent - due))
            due += self.heartbeat_s
            try:
                await registry.Heartbeat(
                    registry_pb2.HeartbeatRequest(client_id=self.client_id), timeout=10
                )
            except grpc.RpcError as error:
                self._stats.failure("heartbeat", error)
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    await self._enroll_again(registry)
            else:
                self._stats.heartbeats_ok += 1
                self._stats.heartbeat_latency_s.append(loop.time() - sent)
            due = max(due, loop.time())  # after a stall, skip the missed beats

    async def _enroll_again(self, registry: registry_pb2_grpc.RegistryAsyncStub) -> None:
        """The registry forgot this client: come back with the certificate, as the agent does."""
        try:
            await registry.Enroll(
                registry_pb2.EnrollRequest(
                    site=self.site.name, capabilities=self.site.capabilities()
                ),
                timeout=30,
            )
        except grpc.RpcError as error:
            self._stats.failure("re-enroll", error)

    # tasks ---------------------------------------------------------------------------------
    async def tasks(self, stop: asyncio.Event) -> None:
        _, scheduler, _ = self._stubs()
        while not stop.is_set():
            try:
                task = await scheduler.WaitForTask(
                    scheduler_pb2.WaitForTaskRequest(client_id=self.client_id, wait_s=self._poll_s),
                    timeout=self._poll_s + 10,
                )
            except grpc.RpcError as error:
                self._stats.failure("wait-for-task", error)
                await asyncio.sleep(1.0)
                continue
            self._stats.polls += 1
            if task.kind != scheduler_pb2.TASK_KIND_NONE:
                await self.handle(task)

    async def handle(self, task: scheduler_pb2.Task) -> None:
        kind = task_kind_name(task.kind)
        try:
            spec = JobSpec.from_json(task.job_spec_json)
            if spec.dataset != self.site.dataset:
                raise TaskDeclined(f"this site holds {self.site.dataset!r}, not {spec.dataset!r}")
            if task.kind == scheduler_pb2.TASK_KIND_INITIALIZE:
                await self._initialize(task, spec)
            elif task.kind == scheduler_pb2.TASK_KIND_TRAIN:
                await self._train(task)
            elif task.kind == scheduler_pb2.TASK_KIND_EVALUATE:
                await self._evaluate(task)
            else:
                raise TaskDeclined(f"{kind} tasks are not simulated")
            self._stats.tasks[f"{kind}:done"] += 1
        except TaskDeclined as reason:
            await self._decline(task, kind, str(reason))
        except grpc.RpcError as error:
            self._stats.tasks[f"{kind}:refused"] += 1
            self._stats.failure(kind, error)
        except Exception as error:  # a bug must not silence this site for good
            log.exception("%s task for job %s failed at %s", kind, task.job_id, self.site.name)
            await self._decline(task, kind, f"{type(error).__name__}: {error}")

    async def _decline(self, task: scheduler_pb2.Task, kind: str, reason: str) -> None:
        _, scheduler, _ = self._stubs()
        self._stats.tasks[f"{kind}:declined"] += 1
        try:
            await scheduler.DeclineTask(
                scheduler_pb2.DeclineTaskRequest(
                    client_id=self.client_id,
                    task_id=task.task_id,
                    reason=f"{self.site.name} (simulated): {reason}",
                ),
                timeout=30,
            )
        except grpc.RpcError as error:
            self._stats.failure("decline", error)

    async def _submit(self, task: scheduler_pb2.Task, vector: np.ndarray, **fields: Any) -> None:
        """Upload a float32 vector and report it, as the agent does."""
        _, scheduler, models = self._stubs()
        payload = vector.astype("<f4").tobytes()
        response: modelstore_pb2.UploadBlobResponse = await models.UploadBlob(
            _upload_chunks(payload, "float32"), timeout=60
        )
        await scheduler.SubmitUpdate(
            update_request(self.client_id, task, response.info.ref, self.site.num_train, **fields),
            timeout=60,
        )

    async def _initialize(self, task: scheduler_pb2.Task, spec: JobSpec) -> None:
        layout = model_layout(spec.model, self.site.num_features)
        size = sum(int(np.prod(shape)) for _, shape in layout)
        await self._submit(
            task,
            self._rng.normal(0.0, 0.1, size),
            manifest=common_pb2.ModelManifest(
                tensors=[
                    common_pb2.TensorEntry(name=name, shape=list(shape)) for name, shape in layout
                ],
                num_parameters=size,
            ),
        )

    async def _train(self, task: scheduler_pb2.Task) -> None:
        if task.protection:
            raise TaskDeclined(f"protection {task.protection!r} is not simulated")
        size = task.manifest.num_parameters
        if size <= 0:
            raise TaskDeclined("the task carries no model manifest")
        if self._train_s > 0:
            await asyncio.sleep(self._train_s)
        await self._submit(
            task,
            self._rng.normal(0.0, 0.01, size),
            model_version=task.model_version,
            metrics={"train_loss": float(self._rng.uniform(0.3, 0.7))},
        )

    async def _evaluate(self, task: scheduler_pb2.Task) -> None:
        _, scheduler, _ = self._stubs()
        await scheduler.ReportEvaluation(
            scheduler_pb2.ReportEvaluationRequest(
                client_id=self.client_id,
                task_id=task.task_id,
                job_id=task.job_id,
                round=task.round,
                model_version=task.model_version,
                num_examples=self.site.num_test,
                metrics={
                    "accuracy": float(self._rng.uniform(0.5, 0.9)),
                    "loss": float(self._rng.uniform(0.3, 0.7)),
                },
            ),
            timeout=30,
        )


class SimulationSettings(BaseSettings):
    """FEDSILO_* settings of a simulated population (the addresses are `fedsilo up`'s)."""

    model_config = SettingsConfigDict(env_prefix="FEDSILO_", extra="ignore", frozen=True)

    clients: int = Field(100, ge=1, description="simulated sites, one client agent each")
    site_prefix: str = Field("sim", pattern=r"^[a-z0-9][a-z0-9-]{0,50}$")
    dataset: str = Field(HEART_DISEASE, description="the one dataset every site declares")
    num_features: int = Field(13, ge=1)
    num_train: int = Field(100, ge=1)
    num_test: int = Field(50, ge=1)
    poll_s: float = Field(10.0, gt=0, description="long-poll for tasks")
    train_s: float = Field(0.0, ge=0, description="simulated local training time per task")
    enroll_concurrency: int = Field(16, ge=1, description="sites enrolling at the same time")
    seed: int = 0
    registry_address: str
    registry_enroll_address: str
    scheduler_address: str
    modelstore_address: str
    tls_ca: Path = Field(..., description="the platform CA certificate (PEM)")
    api: str = Field(..., description="operator REST API, which issues enrollment tokens")
    operator_token_file: Path
    stats_file: Path | None = Field(None, description="JSON counts, rewritten while running")
    stats_interval_s: float = Field(5.0, gt=0)
    ready_file: Path | None = Field(None, description="written once every site has enrolled")
    log_level: str = "INFO"

    def sites(self) -> list[SimulatedSite]:
        width = len(str(self.clients - 1))
        return [
            SimulatedSite(
                f"{self.site_prefix}-{index:0{width}d}",
                self.dataset,
                self.num_features,
                self.num_train,
                self.num_test,
            )
            for index in range(self.clients)
        ]


class Population:
    """Every simulated site: enrolled together, then run until stopped."""

    def __init__(self, settings: SimulationSettings) -> None:
        self._settings = settings
        self.stats = PopulationStats(settings.clients)
        plane = PlaneAddresses(
            settings.registry_address,
            settings.registry_enroll_address,
            settings.scheduler_address,
            settings.modelstore_address,
            settings.tls_ca.read_bytes(),
        )
        self.clients = [
            SimulatedClient(
                site,
                plane,
                self.stats,
                poll_s=settings.poll_s,
                train_s=settings.train_s,
                seed=settings.seed * 1_000_003 + index,
            )
            for index, site in enumerate(settings.sites())
        ]

    async def run(self, stop: asyncio.Event, on_enrolled: Callable[[], None]) -> None:
        """Enroll every site, each starting its heartbeats and long polls at once, as a real
        agent does; call `on_enrolled` when all have; run until `stop` is set."""
        loops: list[asyncio.Task[None]] = []

        def start(client: SimulatedClient) -> None:
            loops.extend(
                asyncio.create_task(loop(stop)) for loop in (client.heartbeats, client.tasks)
            )

        await self._enroll_all(start)
        on_enrolled()
        reporter = asyncio.create_task(self._report(stop))
        await stop.wait()
        for task in [*loops, reporter]:
            task.cancel()
        await asyncio.gather(*loops, reporter, return_exceptions=True)
        await asyncio.gather(*(client.close() for client in self.clients))
        self.write_stats()

    async def _enroll_all(self, start: Callable[[SimulatedClient], None]) -> None:
        """Operator and sites as in production: a one-time token per site from the operator
        API, then each site's CSR enrollment; `enroll_concurrency` sites at a time."""
        settings = self._settings
        ca = ssl.create_default_context(cafile=str(settings.tls_ca))
        token = settings.operator_token_file.read_text().strip()
        slots = asyncio.Semaphore(settings.enroll_concurrency)
        began = time.perf_counter()
        async with httpx.AsyncClient(
            base_url=settings.api,
            verify=ca,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            limits=httpx.Limits(max_connections=settings.enroll_concurrency),
        ) as operator:

            async def enroll(client: SimulatedClient) -> None:
                async with slots:
                    try:
                        response = await operator.post(
                            "/v1/sites", json={"site": client.site.name, "ttl_s": 3600}
                        )
                        response.raise_for_status()
                        await client.enroll(str(response.json()["token"]))
                    except (grpc.RpcError, httpx.HTTPError) as error:
                        self.stats.failure("enroll", error)
                        return
                self.stats.enrolled += 1
                self.stats.heartbeat_interval_s = client.heartbeat_s
                start(client)

            await asyncio.gather(*(enroll(client) for client in self.clients))
        self.stats.enrollment_s = time.perf_counter() - began
        log.info(
            "%d of %d sites enrolled in %.1f s",
            self.stats.enrolled,
            len(self.clients),
            self.stats.enrollment_s,
        )

    async def _report(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.write_stats()
            await asyncio.sleep(self._settings.stats_interval_s)

    def write_stats(self) -> None:
        _write_json(self._settings.stats_file, self.stats.snapshot())


def _write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)  # readers never see a half-written file


async def simulate(settings: SimulationSettings) -> PopulationStats:
    """Enroll and run every site until SIGTERM or SIGINT; the ready file says when all have
    enrolled."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    population = Population(settings)

    def enrolled() -> None:
        population.write_stats()
        _write_json(
            settings.ready_file, {"service": "simulated-clients", **population.stats.snapshot()}
        )

    await population.run(stop, enrolled)
    return population.stats


def main() -> None:
    settings = SimulationSettings()
    configure_logging("simulated-clients", settings.log_level)
    stats = asyncio.run(simulate(settings))
    log.info("stopped: %s", json.dumps(stats.snapshot()["heartbeats"]))


if __name__ == "__main__":
    main()
