"""A site's side of secure aggregation: fresh round keys published to the keymanager, its
seeds Shamir-shared with its neighbours, its update masked into the ring, and the reveals
that let the aggregators remove the masks of the sum (never of one update)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedsilo.client.tasks import TaskDeclined
from fedsilo.jobs import JobSpec
from fedsilo.privacy import add_gaussian_noise, noise_std_per_client
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
from fedsilo.telemetry import time_protection
from fedsilo.v1 import keymanager_pb2, keymanager_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc


class SecAggParticipant:
    """Key material per (job, key round), in memory only: an agent that restarts declines the
    rest of the round (transiently), and the scheduler runs it again with fresh keys."""

    def __init__(
        self,
        site: str,
        client_id: Callable[[], str],
        scheduler: scheduler_pb2_grpc.SchedulerStub,
        keymanager: keymanager_pb2_grpc.KeyManagerStub | None,
    ) -> None:
        self._site = site
        self._client_id = client_id
        self._scheduler = scheduler
        self._keymanager_stub = keymanager
        self.rounds: dict[tuple[str, int], ClientRound] = {}

    @staticmethod
    def check_mask_generator(task: scheduler_pb2.Task) -> None:
        try:
            check_mask_generator(task.secagg.mask_generator)
        except ValueError as mismatch:
            raise TaskDeclined(str(mismatch)) from None

    def _round(self, task: scheduler_pb2.Task) -> ClientRound:
        self.check_mask_generator(task)
        key = (task.job_id, task.secagg.key_round)
        if key not in self.rounds:
            if task.kind != scheduler_pb2.TASK_KIND_SECAGG_ADVERTISE:
                raise TaskDeclined(
                    "no key material for this secure-aggregation round (the agent restarted)",
                    transient=True,
                )
            self.rounds = {k: v for k, v in self.rounds.items() if k[0] == task.job_id}
            self.rounds[key] = ClientRound(
                self._client_id(), RoundConfig(task.job_id, task.secagg.key_round, 0, 0, b"")
            )
        secagg_round = self.rounds[key]
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
        if self._keymanager_stub is None:
            raise TaskDeclined(
                "secure aggregation needs the key manager, and this agent has no address for it"
            )
        return self._keymanager_stub

    def advertise(self, task: scheduler_pb2.Task) -> None:
        with time_protection(self._site, "secagg-keys"):
            keys = self._round(task).advertise()
        self._keymanager().PublishRoundKey(
            keymanager_pb2.PublishRoundKeyRequest(
                job_id=task.job_id,
                round=task.secagg.key_round,
                key=keymanager_pb2.RoundKey(
                    client_id=self._client_id(),
                    public_key=keys.to_bytes(),
                    algorithm=KEY_ALGORITHM,
                ),
            )
        )

    def share(self, task: scheduler_pb2.Task) -> None:
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
        with time_protection(self._site, "secagg-share"):
            sealed = self._round(task).share(advertised)
        self._scheduler.SecAggSubmit(
            scheduler_pb2.SecAggSubmitRequest(
                client_id=self._client_id(),
                task_id=task.task_id,
                shares=[
                    scheduler_pb2.SecAggShare(
                        owner=s.owner, holder=s.holder, ciphertext=s.ciphertext
                    )
                    for s in sealed
                ],
            )
        )

    def masked_update(
        self, task: scheduler_pb2.Task, vector: np.ndarray, num_examples: int
    ) -> bytes:
        """The update weighted by this site's share of the examples (or equally, under
        client-level DP, with this site's share of the noise), quantized into the ring and
        masked: uint32 values that look uniformly random."""
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
            with time_protection(self._site, "dp-noise"):
                vector = add_gaussian_noise(vector, std, np.random.default_rng())
            weighted = vector / task.total_examples
        else:
            weighted = vector * (num_examples / task.total_examples)
        with time_protection(self._site, "secagg-mask"):
            quantized = quantize(weighted, ring, rng=np.random.default_rng())
            masked = self._round(task).masked_input(quantized, task.secagg.shared)
            return bytes(masked.astype("<u4").tobytes())

    def unmask(self, task: scheduler_pb2.Task) -> None:
        held = [SealedShare(s.owner, s.holder, s.ciphertext) for s in task.secagg.shares_for_you]
        with time_protection(self._site, "secagg-unmask"):
            reveals = self._round(task).reveal(held, task.secagg.survivors, task.secagg.dropped)
        self._scheduler.SecAggSubmit(
            scheduler_pb2.SecAggSubmitRequest(
                client_id=self._client_id(),
                task_id=task.task_id,
                reveals=[
                    scheduler_pb2.SecAggReveal(
                        owner=r.owner, kind=r.kind, index=r.share.index, value=r.share.value
                    )
                    for r in reveals
                ],
            )
        )
