"""The scheduler's side of a secure-aggregation round: who advertised, shared and survived,
the sealed shares it relays, the reveals it collects, and the seeds that unmask the sum."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from fedsilo.jobs import JobSpec
from fedsilo.secagg import (
    MASK_GENERATOR,
    AdvertisedKeys,
    Reveal,
    RoundConfig,
    ServerRound,
    Unmasking,
)
from fedsilo.secagg.graph import recommended_degree, recommended_threshold
from fedsilo.secagg.shamir import Share
from fedsilo.v1 import scheduler_pb2


def key_round(round_: int, attempt: int) -> int:
    """Keys and pairwise seeds are fresh for every attempt of a round."""
    return round_ * 1000 + attempt


@dataclass
class SecAggState:
    job_id: str
    key_round: int
    clip: float
    advertised: list[str] = field(default_factory=list)  # U1
    shared: list[str] = field(default_factory=list)  # U2
    degree: int = 0
    threshold: int = 0
    shares: list[scheduler_pb2.SecAggShare] = field(default_factory=list)
    reveals: list[Reveal] = field(default_factory=list)
    unmasking: Unmasking | None = None

    @property
    def graph_seed(self) -> bytes:
        return hashlib.sha256(
            f"fedsilo.secagg.graph|{self.job_id}|{self.key_round}".encode()
        ).digest()

    def fix_graph(self, advertised: list[str], spec: JobSpec) -> None:
        self.advertised = sorted(advertised)
        wanted = spec.secagg.degree or recommended_degree(len(self.advertised))
        self.degree = min(wanted, len(self.advertised) - 1)
        if self.degree < len(self.advertised) - 1 and self.degree % 2:
            self.degree += 1  # the Harary graph needs an even degree
        self.threshold = recommended_threshold(self.degree)

    def config(self) -> RoundConfig:
        return RoundConfig(
            self.job_id, self.key_round, self.degree, self.threshold, self.graph_seed
        )

    def message(
        self,
        survivors: list[str] | None = None,
        dropped: list[str] | None = None,
        shares_for_you: list[scheduler_pb2.SecAggShare] | None = None,
    ) -> scheduler_pb2.SecAggRound:
        return scheduler_pb2.SecAggRound(
            degree=self.degree,
            threshold=self.threshold,
            graph_seed=self.graph_seed,
            advertised=self.advertised,
            shared=self.shared,
            clip=self.clip,
            ring_clients=max(len(self.shared), 1),
            key_round=self.key_round,
            mask_generator=MASK_GENERATOR,
            survivors=survivors or [],
            dropped=dropped or [],
            shares_for_you=shares_for_you or [],
        )

    def shares_for(self, holder: str) -> list[scheduler_pb2.SecAggShare]:
        return [share for share in self.shares if share.holder == holder]

    def reconstruct(self, keys: dict[str, bytes], survivors: list[str]) -> Unmasking:
        advertised = [AdvertisedKeys.from_bytes(client, keys[client]) for client in self.advertised]
        server = ServerRound(self.config(), advertised)
        self.unmasking = server.reconstruct(self.shared, survivors, self.reveals)
        return self.unmasking

    def shard_json(self, count: int) -> str:
        assert self.unmasking is not None
        return json.dumps(
            {
                "clip": self.clip,
                "ring_clients": max(len(self.shared), 1),
                "count": count,
                "self_seeds": {c: seed.hex() for c, seed in self.unmasking.self_seeds.items()},
                "dangling": [[s, d, seed.hex()] for s, d, seed in self.unmasking.dangling_pairs],
            }
        )


def reveal_from_message(message: scheduler_pb2.SecAggReveal) -> Reveal:
    if message.kind not in ("self_seed", "mask_key"):
        raise ValueError(f"unknown reveal kind {message.kind!r}")
    return Reveal(
        message.owner,
        message.kind,  # type: ignore[arg-type]
        Share(message.index, message.value),
    )
