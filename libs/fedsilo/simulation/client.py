"""One simulated site: real enrollment and mutual TLS, heartbeats, long polls, and
synthetic answers to its tasks over the same RPCs as ClientAgent."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import grpc
import grpc.aio
import numpy as np

from fedsilo.client.tasks import (
    TaskDeclined,
    decline_request,
    evaluation_request,
    failure_reason,
    task_kind_name,
    update_request,
)
from fedsilo.jobs import JobSpec
from fedsilo.pki import generate_key, key_pem, make_csr
from fedsilo.rpc.channels import CHANNEL_OPTIONS
from fedsilo.simulation.sites import (
    PlaneAddresses,
    PopulationStats,
    SimulatedSite,
    model_layout,
    upload_chunks,
)
from fedsilo.v1 import (
    common_pb2,
    modelstore_pb2,
    modelstore_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

log = logging.getLogger("fedsilo.simulation")


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
            await self._decline(task, kind, str(reason), transient=reason.transient)
        except grpc.RpcError as error:
            self._stats.tasks[f"{kind}:refused"] += 1
            self._stats.failure(kind, error)
        except Exception as error:  # a bug must not silence this site for good
            log.exception("%s task for job %s failed at %s", kind, task.job_id, self.site.name)
            await self._decline(task, kind, failure_reason(error), transient=True)

    async def _decline(
        self, task: scheduler_pb2.Task, kind: str, reason: str, *, transient: bool = False
    ) -> None:
        _, scheduler, _ = self._stubs()
        self._stats.tasks[f"{kind}:declined"] += 1
        try:
            await scheduler.DeclineTask(
                decline_request(
                    self.client_id,
                    task,
                    f"{self.site.name} (simulated): {reason}",
                    transient=transient,
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
            upload_chunks(payload, "float32"), timeout=60
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
        metrics = {
            "accuracy": float(self._rng.uniform(0.5, 0.9)),
            "loss": float(self._rng.uniform(0.3, 0.7)),
        }
        await scheduler.ReportEvaluation(
            evaluation_request(self.client_id, task, self.site.num_test, metrics), timeout=30
        )
