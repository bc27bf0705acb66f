"""One round of secure aggregation (Bonawitz et al. 2017, with SecAgg+'s neighbour graph), as
pure state machines: `ClientRound` on each site, `ServerRound` at the control plane. Services
carry the messages; nothing here does I/O.

1. advertise: each client publishes two X25519 public keys (masks, share encryption).
2. share: with the advertised keys (U1), each client Shamir-shares its self-mask seed and its
   mask private key among its neighbours and itself, each share sealed for its holder.
3. masked input: with the clients that shared (U2), each masks its quantized update with its
   self mask and one pairwise mask per neighbour in U2.
4. reveal: with the clients whose masked input arrived (U3), each holder opens its shares and
   reveals, per owner, the self-seed share if the owner survived or the mask-key share if it
   dropped out, never both: the server then learns only the sum.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from numpy.typing import NDArray

from fedsilo.secagg.graph import neighbours, share_holders
from fedsilo.secagg.keys import KEY_BYTES, ClientKeys, agree, agreement_context
from fedsilo.secagg.masking import (
    DanglingPair,
    mask_update,
    pairwise_seed,
    recover_dangling_pairs,
    unmask_sum,
)
from fedsilo.secagg.prg import new_seed
from fedsilo.secagg.shamir import SECRET_BYTES, Share, combine_shares, share_secret

RingVector = NDArray[np.uint32]
# How advertised keys are labelled in the keymanager's directory.
KEY_ALGORITHM = "x25519-mask+x25519-share"
Kind = Literal["self_seed", "mask_key"]


class ProtocolError(ValueError):
    """A message that breaks the protocol; the round must not use it."""


@dataclass(frozen=True)
class RoundConfig:
    job_id: str
    round: int
    degree: int  # neighbours per client; >= n - 1 is plain SecAgg (complete graph)
    threshold: int  # shares needed to rebuild a secret
    graph_seed: bytes  # public and fixed for the round, so every party derives one graph


@dataclass(frozen=True)
class AdvertisedKeys:
    client_id: str
    mask_public: bytes
    share_public: bytes

    def to_bytes(self) -> bytes:
        return self.mask_public + self.share_public

    @classmethod
    def from_bytes(cls, client_id: str, data: bytes) -> AdvertisedKeys:
        if len(data) != 2 * KEY_BYTES:
            raise ProtocolError(
                f"advertised keys of {client_id!r} have {len(data)} bytes, expected {2 * KEY_BYTES}"
            )
        return cls(client_id, data[:KEY_BYTES], data[KEY_BYTES:])


@dataclass(frozen=True)
class SealedShare:
    owner: str
    holder: str
    ciphertext: bytes


@dataclass(frozen=True)
class Reveal:
    owner: str
    kind: Kind
    share: Share


def _graph(config: RoundConfig, client_ids: Iterable[str]) -> dict[str, list[str]]:
    return neighbours(sorted(client_ids), config.degree, config.graph_seed)


def _aead(config: RoundConfig, keys: ClientKeys, me: str, peer: AdvertisedKeys) -> ChaCha20Poly1305:
    context = agreement_context("share", config.job_id, config.round, me, peer.client_id)
    return ChaCha20Poly1305(agree(keys.share_private, peer.share_public, context))


def _nonce_and_aad(config: RoundConfig, owner: str, holder: str) -> tuple[bytes, bytes]:
    # The pair key is symmetric: the direction goes into the nonce, everything into the AAD.
    aad = f"fedsilo.secagg.share|{config.job_id}|{config.round}|{owner}|{holder}".encode()
    return hashlib.sha256(aad).digest()[:12], aad


@dataclass
class ClientRound:
    client_id: str
    config: RoundConfig
    keys: ClientKeys = field(default_factory=ClientKeys.generate)
    self_seed: bytes = field(default_factory=new_seed)
    # Threads that mask an input (None: one per core); masking is on the round's critical path.
    threads: int | None = None
    _advertised: dict[str, AdvertisedKeys] = field(default_factory=dict)
    _own_shares: dict[Kind, Share] = field(default_factory=dict)
    _revealed: bool = False

    def advertise(self) -> AdvertisedKeys:
        return AdvertisedKeys(self.client_id, self.keys.mask_public, self.keys.share_public)

    def share(self, advertised: Sequence[AdvertisedKeys]) -> list[SealedShare]:
        """Shares of the self seed and mask key for each holder (neighbours and self)."""
        self._advertised = {keys.client_id: keys for keys in advertised}
        if self.client_id not in self._advertised:
            raise ProtocolError(f"{self.client_id} is not among the advertised clients")
        holders = share_holders(_graph(self.config, self._advertised), self.client_id)
        if len(holders) < self.config.threshold:
            raise ProtocolError(
                f"{len(holders)} holders cannot reach threshold {self.config.threshold}"
            )
        seed_shares = share_secret(self.self_seed, self.config.threshold, len(holders))
        key_shares = share_secret(
            self.keys.mask_private_bytes(), self.config.threshold, len(holders)
        )
        sealed = []
        for holder, seed_share, key_share in zip(holders, seed_shares, key_shares, strict=True):
            if holder == self.client_id:
                self._own_shares = {"self_seed": seed_share, "mask_key": key_share}
                continue
            payload = seed_share.index.to_bytes(2, "big") + seed_share.value + key_share.value
            nonce, aad = _nonce_and_aad(self.config, self.client_id, holder)
            aead = _aead(self.config, self.keys, self.client_id, self._advertised[holder])
            sealed.append(SealedShare(self.client_id, holder, aead.encrypt(nonce, payload, aad)))
        return sealed

    def masked_input(self, quantized: RingVector, shared: Iterable[str]) -> RingVector:
        """Mask with the self seed and with each neighbour that also shared (U2)."""
        u2 = set(shared)
        if self.client_id not in u2:
            raise ProtocolError(f"{self.client_id} did not share; it cannot send input")
        graph = _graph(self.config, self._advertised)
        pairwise = {
            peer: pairwise_seed(
                self.keys,
                self.client_id,
                peer,
                self._advertised[peer].mask_public,
                self.config.job_id,
                self.config.round,
            )
            for peer in graph[self.client_id]
            if peer in u2
        }
        return mask_update(
            quantized, self.client_id, self.self_seed, pairwise, threads=self.threads
        )

    def reveal(
        self,
        sealed_for_me: Sequence[SealedShare],
        survivors: Iterable[str],
        dropped: Iterable[str],
    ) -> list[Reveal]:
        """Open held shares; per owner reveal one kind only, and only once per round: a
        server claiming that a client both survived and dropped out learns nothing."""
        alive, gone = set(survivors), set(dropped)
        if alive & gone:
            raise ProtocolError(f"clients {sorted(alive & gone)} cannot both survive and drop")
        if self._revealed:
            raise ProtocolError("shares were already revealed for this round")
        if self.client_id not in alive:
            raise ProtocolError(f"{self.client_id} is not a survivor of this round")
        self._revealed = True
        reveals = [Reveal(self.client_id, "self_seed", self._own_shares["self_seed"])]
        for sealed in sealed_for_me:
            if sealed.holder != self.client_id or sealed.owner not in alive | gone:
                continue
            nonce, aad = _nonce_and_aad(self.config, sealed.owner, self.client_id)
            aead = _aead(self.config, self.keys, self.client_id, self._advertised[sealed.owner])
            try:
                payload = aead.decrypt(nonce, sealed.ciphertext, aad)
            except InvalidTag:
                raise ProtocolError(f"share from {sealed.owner} does not authenticate") from None
            index = int.from_bytes(payload[:2], "big")
            if sealed.owner in alive:
                reveals.append(
                    Reveal(sealed.owner, "self_seed", Share(index, payload[2 : 2 + SECRET_BYTES]))
                )
            else:
                reveals.append(
                    Reveal(sealed.owner, "mask_key", Share(index, payload[2 + SECRET_BYTES :]))
                )
        return reveals


@dataclass(frozen=True)
class Unmasking:
    self_seeds: dict[str, bytes]
    dangling_pairs: list[DanglingPair]


class ServerRound:
    def __init__(self, config: RoundConfig, advertised: Sequence[AdvertisedKeys]) -> None:
        self.config = config
        self.advertised = {keys.client_id: keys for keys in advertised}

    def reconstruct(
        self, shared: Iterable[str], survivors: Iterable[str], reveals: Sequence[Reveal]
    ) -> Unmasking:
        """Self seeds of the survivors and, for each client that shared but sent no input, the
        pairwise seeds its surviving neighbours used with it."""
        u2, u3 = set(shared), set(survivors)
        if not u3 <= u2:
            raise ProtocolError(f"survivors {sorted(u3 - u2)} never shared their keys")
        dropped = u2 - u3
        collected: dict[tuple[str, Kind], dict[int, Share]] = {}
        for reveal in reveals:
            if reveal.kind == "mask_key" and reveal.owner in u3:
                raise ProtocolError(
                    f"a survivor's ({reveal.owner}) mask key must never be revealed"
                )
            collected.setdefault((reveal.owner, reveal.kind), {})[reveal.share.index] = reveal.share

        def rebuild(owner: str, kind: Kind) -> bytes:
            shares = list(collected.get((owner, kind), {}).values())
            if len(shares) < self.config.threshold:
                raise ProtocolError(
                    f"{len(shares)} {kind} shares of {owner}; {self.config.threshold} needed"
                )
            return combine_shares(shares, self.config.threshold)

        graph = _graph(self.config, self.advertised)
        self_seeds = {owner: rebuild(owner, "self_seed") for owner in sorted(u3)}
        dangling: list[DanglingPair] = []
        for owner in sorted(dropped):
            surviving_neighbours = {
                peer: self.advertised[peer].mask_public for peer in graph[owner] if peer in u3
            }
            try:
                dangling += recover_dangling_pairs(
                    owner,
                    rebuild(owner, "mask_key"),
                    self.advertised[owner].mask_public,
                    surviving_neighbours,
                    self.config.job_id,
                    self.config.round,
                )
            except ValueError as error:
                raise ProtocolError(str(error)) from None
        return Unmasking(self_seeds, dangling)

    @staticmethod
    def unmask(
        masked_sum: RingVector, begin: int, unmasking: Unmasking, threads: int | None = 1
    ) -> RingVector:
        """Σ survivors' quantized inputs over [begin, begin + len): any shard alone. One
        thread by default: aggregator replicas already split the coordinates into shards."""
        return unmask_sum(
            masked_sum,
            begin,
            unmasking.self_seeds,
            list(unmasking.dangling_pairs),
            threads=threads,
        )
