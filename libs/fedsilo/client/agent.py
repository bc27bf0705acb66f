"""One institution's client agent. Raw data is read here and never leaves this process: only
model deltas (to the model store) and evaluation metrics (to the scheduler) go out."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

import grpc
import numpy as np
import torch

from fedsilo import __version__
from fedsilo.algorithms.registry import proximal_mu
from fedsilo.client.tasks import task_kind_name, update_request
from fedsilo.data import SiteConfig, TabularData, load_tabular
from fedsilo.jobs import JobSpec, PaillierSettings
from fedsilo.learning import build_model, evaluate, flatten, load_flat, manifest, train_local
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.paillier import PrecomputedRandomness, encrypt_update, public_key_from_bytes
from fedsilo.policy import policy_violation, site_privacy
from fedsilo.privacy import (
    DifferentialPrivacy,
    PrivacyAccountant,
    add_gaussian_noise,
    clip_update,
    noise_std_per_client,
)
from fedsilo.secagg import (
    KEY_ALGORITHM,
    AdvertisedKeys,
    ClientRound,
    RingSpec,
    RoundConfig,
    SealedShare,
    check_mask_generator,
    quantize,
)
from fedsilo.telemetry import (
    LOCAL_TRAIN_SECONDS,
    SITE_EPSILON,
    SITE_MAX_EPSILON,
    TASKS,
    UPDATE_BYTES,
    time_protection,
)
from fedsilo.v1 import (
    common_pb2,
    keymanager_pb2,
    keymanager_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

log = logging.getLogger("fedsilo.client")


class TrainingSettings(TypedDict):
    """The arguments plain training and DP-SGD share, taken from the job spec."""

    steps: int
    batch_size: int
    learning_rate: float
    optimizer: Literal["sgd", "adam"]
    seed: int


class TaskDeclined(Exception):
    """This site cannot or will not do the task; the reason goes to the operator. `transient`:
    asking again may succeed (the round's state at the site was lost); otherwise asking again
    gets the same answer (policy, data, configuration) and the round stops waiting for it."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


def local_seed(job_seed: int, round_: int, site: str) -> int:
    """Distinct, reproducible sampling per (job, round, site); independent of PYTHONHASHSEED."""
    return (job_seed * 7919 + round_ * 104_729 + zlib.crc32(site.encode())) & 0x7FFFFFFF


@dataclass(frozen=True)
class ControlPlane:
    registry: registry_pb2_grpc.RegistryStub
    scheduler: scheduler_pb2_grpc.SchedulerStub
    models: ModelStoreClient
    keymanager: keymanager_pb2_grpc.KeyManagerStub | None = None


def describe_site(
    config: SiteConfig, load: Callable[[str], TabularData]
) -> registry_pb2.Capabilities:
    """What a site tells the registry: sizes of its datasets, never their contents."""
    datasets = []
    for name in sorted(config.datasets):
        data = load(name)
        datasets.append(
            registry_pb2.DatasetInfo(
                name=name,
                num_train=data.num_train,
                num_test=data.num_test,
                num_features=data.num_features,
            )
        )
    return registry_pb2.Capabilities(
        cores=os.cpu_count() or 1,
        gpu=torch.cuda.is_available(),
        datasets=datasets,
        agent_version=__version__,
    )


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
        self._data: dict[str, TabularData] = {}
        self._models: OrderedDict[str, np.ndarray] = OrderedDict()
        self.client_id = ""
        self._accountants: dict[str, PrivacyAccountant] = {}
        self._secagg: dict[tuple[str, int], ClientRound] = {}
        # At most the current training task's: what a failed task computed is dropped.
        self._randomness: dict[str, PrecomputedRandomness] = {}
        self._heartbeat_s = 2.0
        if config.policy.max_epsilon is not None:
            SITE_MAX_EPSILON.labels(self.site).set(config.policy.max_epsilon)

    # data and models -----------------------------------------------------------------------
    def dataset(self, name: str) -> TabularData:
        if name not in self._data:
            try:
                spec = self._config.dataset(name)
            except KeyError as error:
                raise TaskDeclined(str(error.args[0]) if error.args else str(error)) from None
            self._data[name] = load_tabular(spec)
        return self._data[name]

    def capabilities(self) -> registry_pb2.Capabilities:
        return describe_site(self._config, self.dataset)

    def _global_vector(self, digest: str) -> np.ndarray:
        if digest not in self._models:
            self._models[digest] = np.frombuffer(self._plane.models.download(digest), "<f4")
            while len(self._models) > 2:
                self._models.popitem(last=False)
        return self._models[digest]

    def _model_for(
        self, spec: JobSpec, data: TabularData, task: scheduler_pb2.Task
    ) -> torch.nn.Module:
        model = build_model(spec.model, data.num_features, seed=spec.seed)
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
                self._check_mask_generator(task)
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
                self._secagg_advertise(task)
            elif task.kind == scheduler_pb2.TASK_KIND_SECAGG_SHARE:
                self._secagg_share(task)
            elif task.kind == scheduler_pb2.TASK_KIND_SECAGG_UNMASK:
                self._secagg_unmask(task)
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
            self._decline(
                task,
                kind,
                f"the task failed at the site: {type(error).__name__}: {error}",
                transient=True,
            )

    def _decline(
        self, task: scheduler_pb2.Task, kind: str, reason: str, *, transient: bool = False
    ) -> None:
        TASKS.labels(self.site, kind, "declined").inc()
        log.warning("declining %s task for job %s: %s", kind, task.job_id, reason)
        try:
            self._plane.scheduler.DeclineTask(
                scheduler_pb2.DeclineTaskRequest(
                    client_id=self.client_id,
                    task_id=task.task_id,
                    reason=f"{self.site}: {reason}",
                    transient=transient,
                )
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
            ring = RingSpec(clip=task.secagg.clip, num_clients=task.secagg.ring_clients)
            spec = JobSpec.from_json(task.job_spec_json)
            if spec.privacy is not None and spec.privacy.mode == "client":
                # Distributed DP: every site weighs the same and adds its share of the noise;
                # any sum of at least min_clients sites carries noise of std z·C.
                std = noise_std_per_client(
                    spec.privacy.clip_norm,
                    spec.privacy.require_noise_multiplier(),
                    spec.min_clients,
                    distributed=True,
                )
                with time_protection(self.site, "dp-noise"):
                    vector = add_gaussian_noise(vector, std, np.random.default_rng())
                weighted = vector / task.total_examples
            else:
                weighted = vector * (num_examples / task.total_examples)
            with time_protection(self.site, "secagg-mask"):
                quantized = quantize(weighted, ring, rng=np.random.default_rng())
                payload = (
                    self._secagg_round(task)
                    .masked_input(quantized, task.secagg.shared)
                    .astype("<u4")
                    .tobytes()
                )
            dtype = "uint32"
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

    # secure aggregation ------------------------------------------------------------------------
    @staticmethod
    def _check_mask_generator(task: scheduler_pb2.Task) -> None:
        try:
            check_mask_generator(task.secagg.mask_generator)
        except ValueError as mismatch:
            raise TaskDeclined(str(mismatch)) from None

    def _secagg_round(self, task: scheduler_pb2.Task) -> ClientRound:
        self._check_mask_generator(task)
        key = (task.job_id, task.secagg.key_round)
        if key not in self._secagg:
            if task.kind != scheduler_pb2.TASK_KIND_SECAGG_ADVERTISE:
                raise TaskDeclined(
                    "no key material for this secure-aggregation round (the agent restarted)",
                    transient=True,
                )
            self._secagg = {k: v for k, v in self._secagg.items() if k[0] == task.job_id}
            self._secagg[key] = ClientRound(
                self.client_id, RoundConfig(task.job_id, task.secagg.key_round, 0, 0, b"")
            )
        secagg_round = self._secagg[key]
        if task.secagg.threshold:
            secagg_round.config = RoundConfig(
                task.job_id,
                task.secagg.key_round,
                task.secagg.degree,
                task.secagg.threshold,
                task.secagg.graph_seed,
            )
        return secagg_round

    def _keymanager(self) -> keymanager_pb2_grpc.KeyManagerStub:
        if self._plane.keymanager is None:
            raise TaskDeclined(
                "secure aggregation needs the key manager, and this agent has no address for it"
            )
        return self._plane.keymanager

    def _secagg_advertise(self, task: scheduler_pb2.Task) -> None:
        with time_protection(self.site, "secagg-keys"):
            keys = self._secagg_round(task).advertise()
        self._keymanager().PublishRoundKey(
            keymanager_pb2.PublishRoundKeyRequest(
                job_id=task.job_id,
                round=task.secagg.key_round,
                key=keymanager_pb2.RoundKey(
                    client_id=self.client_id, public_key=keys.to_bytes(), algorithm=KEY_ALGORITHM
                ),
            )
        )

    def _secagg_share(self, task: scheduler_pb2.Task) -> None:
        published = self._keymanager().ListRoundKeys(
            keymanager_pb2.ListRoundKeysRequest(job_id=task.job_id, round=task.secagg.key_round)
        )
        keys = {key.client_id: bytes(key.public_key) for key in published.keys}
        missing = set(task.secagg.advertised) - set(keys)
        if missing:
            raise TaskDeclined(
                f"round keys of {sorted(missing)} are not in the keymanager", transient=True
            )
        advertised = [AdvertisedKeys.from_bytes(c, keys[c]) for c in task.secagg.advertised]
        with time_protection(self.site, "secagg-share"):
            sealed = self._secagg_round(task).share(advertised)
        self._plane.scheduler.SecAggSubmit(
            scheduler_pb2.SecAggSubmitRequest(
                client_id=self.client_id,
                task_id=task.task_id,
                shares=[
                    scheduler_pb2.SecAggShare(
                        owner=s.owner, holder=s.holder, ciphertext=s.ciphertext
                    )
                    for s in sealed
                ],
            )
        )

    def _secagg_unmask(self, task: scheduler_pb2.Task) -> None:
        held = [SealedShare(s.owner, s.holder, s.ciphertext) for s in task.secagg.shares_for_you]
        with time_protection(self.site, "secagg-unmask"):
            reveals = self._secagg_round(task).reveal(
                held, task.secagg.survivors, task.secagg.dropped
            )
        self._plane.scheduler.SecAggSubmit(
            scheduler_pb2.SecAggSubmitRequest(
                client_id=self.client_id,
                task_id=task.task_id,
                reveals=[
                    scheduler_pb2.SecAggReveal(
                        owner=r.owner, kind=r.kind, index=r.share.index, value=r.share.value
                    )
                    for r in reveals
                ],
            )
        )

    def _enforce_policy(self, spec: JobSpec) -> None:
        violation = policy_violation(
            self._config.policy, spec, self.dataset(spec.dataset).num_train
        )
        if violation is not None:
            raise TaskDeclined(f"site policy: {violation}")

    def _accountant(self, job_id: str, delta: float) -> PrivacyAccountant:
        """This site's own record of the DP-SGD privacy it spent on a job, kept across restarts."""
        if job_id not in self._accountants:
            path = self._accountant_path(job_id)
            self._accountants[job_id] = (
                PrivacyAccountant.from_dict(json.loads(path.read_text()))
                if path is not None and path.exists()
                else PrivacyAccountant(delta)
            )
        return self._accountants[job_id]

    def _accountant_path(self, job_id: str) -> Path | None:
        if self._state_dir is None:
            return None
        return self._state_dir / self.site / f"privacy-{job_id}.json"

    def _spend_privacy(
        self,
        job_id: str,
        privacy: DifferentialPrivacy,
        sampling_probability: float,
        count: int,
    ) -> float:
        """Record in this site's ledger what the update about to leave spends, before it
        leaves (a failed upload counts as spent, never the reverse); returns ε so far."""
        accountant = self._accountant(job_id, privacy.delta)
        accountant.record_round(privacy.require_noise_multiplier(), sampling_probability, count)
        path = self._accountant_path(job_id)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(accountant.to_dict()))
        epsilon = accountant.epsilon()
        SITE_EPSILON.labels(self.site, job_id).set(epsilon)
        return epsilon

    def _initialize(self, task: scheduler_pb2.Task, spec: JobSpec) -> None:
        data = self.dataset(spec.dataset)
        model = build_model(spec.model, data.num_features, seed=spec.seed)
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
        data = self.dataset(spec.dataset)
        model = self._model_for(spec, data, task)
        start_vector = self._global_vector(task.model_version)
        mu = proximal_mu(spec.algorithm)
        privacy = site_privacy(spec, data.num_train)
        settings = TrainingSettings(
            steps=spec.local_steps,
            batch_size=spec.batch_size,
            learning_rate=spec.learning_rate,
            optimizer=spec.optimizer,
            seed=local_seed(spec.seed, task.round, self.site),
        )
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
            self._spend_privacy(task.job_id, privacy, 1.0, 1)
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
        epsilon = self._spend_privacy(task.job_id, privacy, result.sample_rate, result.steps)
        self._submit(
            task,
            flatten(model) - start_vector,
            result.num_examples,
            model_version=task.model_version,
            metrics={"train_loss": result.mean_loss, "epsilon": epsilon},
        )

    def _evaluate(self, task: scheduler_pb2.Task, spec: JobSpec) -> None:
        data = self.dataset(spec.dataset)
        model = self._model_for(spec, data, task)
        result = evaluate(model, data.x_test, data.y_test)
        self._plane.scheduler.ReportEvaluation(
            scheduler_pb2.ReportEvaluationRequest(
                client_id=self.client_id,
                task_id=task.task_id,
                job_id=task.job_id,
                round=task.round,
                model_version=task.model_version,
                num_examples=result.num_examples,
                metrics={"accuracy": result.accuracy, "loss": result.loss},
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
