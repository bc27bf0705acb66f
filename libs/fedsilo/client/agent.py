"""One institution's client agent. Raw data is read here and never leaves this process: only
model deltas (to the model store) and evaluation metrics (to the scheduler) go out."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch

from fedsilo.algorithms.registry import proximal_mu
from fedsilo.client.ledger import PrivacyLedger
from fedsilo.client.secagg_participant import SecAggParticipant
from fedsilo.client.site import (
    SiteDatasets,
    TrainingSettings,
    describe_site,
    training_settings,
)
from fedsilo.client.tasks import (
    TaskDeclined,
    decline_request,
    evaluation_request,
    failure_reason,
    task_kind_name,
    update_request,
)
from fedsilo.data import SiteConfig, TabularData
from fedsilo.jobs import JobSpec, PaillierSettings
from fedsilo.learning import build_model, evaluate, flatten, load_flat, manifest, train_local
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.paillier import PrecomputedRandomness, encrypt_update, public_key_from_bytes
from fedsilo.policy import policy_violation, site_privacy
from fedsilo.privacy import (
    DifferentialPrivacy,
    clip_update,
)
from fedsilo.telemetry import (
    LOCAL_TRAIN_SECONDS,
    SITE_MAX_EPSILON,
    TASKS,
    UPDATE_BYTES,
    time_protection,
)
from fedsilo.v1 import (
    common_pb2,
    keymanager_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

log = logging.getLogger("fedsilo.client")


@dataclass(frozen=True)
class ControlPlane:
    registry: registry_pb2_grpc.RegistryStub
    scheduler: scheduler_pb2_grpc.SchedulerStub
    models: ModelStoreClient
    keymanager: keymanager_pb2_grpc.KeyManagerStub | None = None


class ClientAgent:
    def __init__(
        self,
        config: SiteConfig,
        plane: ControlPlane,
        poll_s: float = 10.0,
        state_dir: Path | None = None,
    ) -> None:
        self._state_dir = state_dir
        self.site = config.site
        self._config = config
        self._plane = plane
        self._poll_s = poll_s
        self._datasets = SiteDatasets(config)
        self._advertised: dict[str, int] = {}  # training examples told to the registry
        self._models: OrderedDict[str, np.ndarray] = OrderedDict()
        self.client_id = ""
        self._ledger = PrivacyLedger(config.site, state_dir)
        self.secagg = SecAggParticipant(
            config.site, lambda: self.client_id, plane.scheduler, plane.keymanager
        )
        # At most the current training task's: what a failed task computed is dropped.
        self._randomness: dict[str, PrecomputedRandomness] = {}
        self._heartbeat_s = 2.0
        if config.policy.max_epsilon is not None:
            SITE_MAX_EPSILON.labels(self.site).set(config.policy.max_epsilon)

    # data and models -----------------------------------------------------------------------
    def dataset(self, job: JobSpec) -> TabularData:
        return self._datasets.for_job(job)

    def capabilities(self) -> registry_pb2.Capabilities:
        described = describe_site(self._config, self._datasets.describe)
        self._advertised = {info.name: info.num_train for info in described.datasets}
        return described

    def _global_vector(self, digest: str) -> np.ndarray:
        if digest not in self._models:
            self._models[digest] = np.frombuffer(self._plane.models.download(digest), "<f4")
            while len(self._models) > 2:
                self._models.popitem(last=False)
        return self._models[digest]

    def _model_for(
        self, spec: JobSpec, data: TabularData, task: scheduler_pb2.Task
    ) -> torch.nn.Module:
        model = build_model(
            spec.model, data.num_features, num_outputs=data.task.num_outputs, seed=spec.seed
        )
        expected = task.manifest.num_parameters
        vector = self._global_vector(task.model_version)
        if vector.size != expected:
            raise TaskDeclined(
                f"global model has {vector.size} parameters but the manifest says {expected}"
            )
        try:
            load_flat(model, vector)
        except ValueError as error:
            raise TaskDeclined(f"the global model does not fit this site's data: {error}") from None
        return model

    # tasks ---------------------------------------------------------------------------------
    def handle(self, task: scheduler_pb2.Task) -> None:
        kind = task_kind_name(task.kind)
        try:
            spec = JobSpec.from_json(task.job_spec_json)
            if task.kind == scheduler_pb2.TASK_KIND_SECAGG_ADVERTISE:
                self.secagg.check_mask_generator(task)
            # Before the site takes part in a round (its keys, its update); drawing the initial
            # weights touches no record and spends no privacy.
            if task.kind in (
                scheduler_pb2.TASK_KIND_SECAGG_ADVERTISE,
                scheduler_pb2.TASK_KIND_TRAIN,
            ):
                self._enforce_policy(spec)
            if task.kind == scheduler_pb2.TASK_KIND_INITIALIZE:
                self._initialize(task, spec)
            elif task.kind == scheduler_pb2.TASK_KIND_TRAIN:
                self._train(task, spec)
            elif task.kind == scheduler_pb2.TASK_KIND_EVALUATE:
                self._evaluate(task, spec)
            elif task.kind == scheduler_pb2.TASK_KIND_SECAGG_ADVERTISE:
                self.secagg.advertise(task)
            elif task.kind == scheduler_pb2.TASK_KIND_SECAGG_SHARE:
                self.secagg.share(task)
            elif task.kind == scheduler_pb2.TASK_KIND_SECAGG_UNMASK:
                self.secagg.unmask(task)
            else:
                raise TaskDeclined(f"unknown task kind {task.kind}")
            TASKS.labels(self.site, kind, "done").inc()
        except TaskDeclined as reason:
            self._decline(task, kind, str(reason), transient=reason.transient)
        except grpc.RpcError as error:
            TASKS.labels(self.site, kind, "refused").inc()
            log.warning(
                "%s task for job %s round %d refused: %s %s",
                kind,
                task.job_id,
                task.round,
                error.code().name,
                error.details(),
            )
        except Exception as error:  # a bug or bad data must not silence this site for good
            log.exception("%s task for job %s failed", kind, task.job_id)
            self._decline(task, kind, failure_reason(error), transient=True)

    def _decline(
        self, task: scheduler_pb2.Task, kind: str, reason: str, *, transient: bool = False
    ) -> None:
        TASKS.labels(self.site, kind, "declined").inc()
        log.warning("declining %s task for job %s: %s", kind, task.job_id, reason)
        try:
            self._plane.scheduler.DeclineTask(
                decline_request(self.client_id, task, f"{self.site}: {reason}", transient=transient)
            )
        except grpc.RpcError as error:
            log.warning("could not decline: %s %s", error.code().name, error.details())

    def _submit(
        self, task: scheduler_pb2.Task, vector: np.ndarray, num_examples: int, **fields: Any
    ) -> None:
        """Upload a float32 vector (an update, or the initial model) and report it. Under
        Paillier an update leaves the site only as ciphertexts, weighted by this site's share
        of the selected clients' examples (the sum is then the weighted sum)."""
        payload, dtype = vector.astype("<f4").tobytes(), "float32"
        if task.protection == "secagg" and task.kind == scheduler_pb2.TASK_KIND_TRAIN:
            payload, dtype = self.secagg.masked_update(task, vector, num_examples), "uint32"
        if task.protection == "paillier" and task.kind == scheduler_pb2.TASK_KIND_TRAIN:
            packing = PaillierSettings.model_validate_json(task.packing_json).packing()
            weighted = vector * (num_examples / task.total_examples)
            with time_protection(self.site, "paillier-encrypt"):
                payload = encrypt_update(
                    weighted,
                    packing,
                    public_key_from_bytes(task.public_key),
                    rng=np.random.default_rng(),
                    randomness=self._randomness.pop(task.task_id, None),
                )
            dtype = "bytes"
        info = self._plane.models.upload(payload, dtype=dtype)
        UPDATE_BYTES.labels(self.site).inc(info.ref.size)
        self._plane.scheduler.SubmitUpdate(
            update_request(self.client_id, task, info.ref, num_examples, **fields)
        )

    def _enforce_policy(self, spec: JobSpec) -> None:
        violation = policy_violation(self._config.policy, spec, self.dataset(spec).num_train)
        if violation is not None:
            raise TaskDeclined(f"site policy: {violation}")

    def _initialize(self, task: scheduler_pb2.Task, spec: JobSpec) -> None:
        data = self.dataset(spec)
        model = build_model(
            spec.model, data.num_features, num_outputs=data.task.num_outputs, seed=spec.seed
        )
        vector = flatten(model)
        entries = manifest(model)
        self._submit(
            task,
            vector,
            data.num_train,
            manifest=common_pb2.ModelManifest(
                tensors=[common_pb2.TensorEntry(name=e.name, shape=list(e.shape)) for e in entries],
                num_parameters=int(vector.size),
            ),
        )
        log.info("job %s: initial model (%d parameters) submitted", task.job_id, vector.size)

    def _train(self, task: scheduler_pb2.Task, spec: JobSpec) -> None:
        if task.protection == "paillier":
            # The encryption randomness does not depend on the update: compute it while
            # training runs, so encrypting is one multiplication per ciphertext.
            packing = PaillierSettings.model_validate_json(task.packing_json).packing()
            self._randomness = {
                task.task_id: PrecomputedRandomness(
                    public_key_from_bytes(task.public_key),
                    packing.num_ciphertexts(task.manifest.num_parameters),
                )
            }
        data = self.dataset(spec)
        if not self._advertised:
            self.capabilities()
        if task.protection in ("paillier", "secagg") and (
            self._advertised.get(spec.dataset) != data.num_train
        ):
            # Protected sums weight each update by its share of the examples the registry
            # was told of: a size it never heard would skew the model.
            raise TaskDeclined(
                f"dataset '{spec.dataset}' has {data.num_train} training examples for this job "
                f"but the registry was told {self._advertised.get(spec.dataset, 0)} (its label "
                "does not load without the job: declare its classes in the site's label)"
            )
        model = self._model_for(spec, data, task)
        start_vector = self._global_vector(task.model_version)
        mu = proximal_mu(spec.algorithm)
        privacy = site_privacy(spec, data.num_train)
        settings = training_settings(spec, task.round, self.site)
        if privacy is not None and privacy.mode == "sample":
            self._train_private(task, settings, privacy, model, data, start_vector, mu)
            return
        global_params = [p.detach().clone() for p in model.parameters()] if mu > 0 else None
        start = time.perf_counter()
        result = train_local(model, data, **settings, proximal_mu=mu, global_params=global_params)
        LOCAL_TRAIN_SECONDS.labels(self.site).observe(time.perf_counter() - start)
        delta = flatten(model) - start_vector
        metrics = {"train_loss": result.mean_loss}
        if privacy is not None:
            # Client-level DP: this site bounds its influence; the noise is added once to the
            # aggregate (by the aggregator now, by each site when secure aggregation hides it).
            # A round this site takes part in is one Gaussian event on its whole dataset.
            delta, norm = clip_update(delta, privacy.clip_norm)
            metrics.update(update_norm=norm, clipped=float(norm > privacy.clip_norm))
            self._ledger.spend(task.job_id, privacy, 1.0, 1)
        self._submit(
            task, delta, result.num_examples, model_version=task.model_version, metrics=metrics
        )
        log.info(
            "job %s round %d: trained %d steps on %d examples, loss %.4f",
            task.job_id,
            task.round,
            result.steps,
            result.num_examples,
            result.mean_loss,
        )

    def _train_private(
        self,
        task: scheduler_pb2.Task,
        settings: TrainingSettings,
        privacy: DifferentialPrivacy,
        model: torch.nn.Module,
        data: TabularData,
        start_vector: np.ndarray,
        mu: float,
    ) -> None:
        """Sample-level DP: DP-SGD through Opacus; this site accounts for its own examples."""
        from fedsilo.privacy.dpsgd import train_private

        if mu > 0:
            raise TaskDeclined("FedProx's proximal term is not supported with DP-SGD")
        noise = privacy.require_noise_multiplier()
        start = time.perf_counter()
        result = train_private(
            model,
            data,
            **settings,
            noise_multiplier=noise,
            max_grad_norm=privacy.clip_norm,
            delta=privacy.delta,
        )
        LOCAL_TRAIN_SECONDS.labels(self.site).observe(time.perf_counter() - start)
        epsilon = self._ledger.spend(task.job_id, privacy, result.sample_rate, result.steps)
        self._submit(
            task,
            flatten(model) - start_vector,
            result.num_examples,
            model_version=task.model_version,
            metrics={"train_loss": result.mean_loss, "epsilon": epsilon},
        )

    def _evaluate(self, task: scheduler_pb2.Task, spec: JobSpec) -> None:
        data = self.dataset(spec)
        model = self._model_for(spec, data, task)
        result = evaluate(model, data.x_test, data.y_test, data.task)
        self._plane.scheduler.ReportEvaluation(
            evaluation_request(
                self.client_id,
                task,
                result.num_examples,
                {"loss": result.loss, **result.metrics},
                result.undefined,
                primary_metric=data.task.metric,
            )
        )

    # lifecycle -----------------------------------------------------------------------------
    def enroll(self) -> None:
        response = self._plane.registry.Enroll(
            registry_pb2.EnrollRequest(site=self.site, capabilities=self.capabilities()),
            timeout=30,
            wait_for_ready=True,
        )
        self.client_id = response.client_id
        self._heartbeat_s = response.heartbeat_interval_s or self._heartbeat_s
        log.info("enrolled as %s", self.client_id)

    def _heartbeats(self, stop: threading.Event) -> None:
        while not stop.wait(self._heartbeat_s):
            try:
                self._plane.registry.Heartbeat(
                    registry_pb2.HeartbeatRequest(client_id=self.client_id), timeout=10
                )
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    log.warning("registry forgot this client; enrolling again")
                    self.enroll()
                else:
                    log.warning("heartbeat failed: %s", error.code().name)

    def run(self, stop: threading.Event) -> None:
        self.enroll()
        beat = threading.Thread(
            target=self._heartbeats, args=(stop,), name="heartbeat", daemon=True
        )
        beat.start()
        while not stop.is_set():
            try:
                task = self._plane.scheduler.WaitForTask(
                    scheduler_pb2.WaitForTaskRequest(client_id=self.client_id, wait_s=self._poll_s),
                    timeout=self._poll_s + 10,
                )
            except grpc.RpcError as error:
                log.warning("scheduler unreachable (%s); retrying", error.code().name)
                stop.wait(1.0)
                continue
            if task.kind != scheduler_pb2.TASK_KIND_NONE:
                self.handle(task)
        beat.join(timeout=5)
