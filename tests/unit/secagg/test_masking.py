"""End-to-end arithmetic of a round: simulated clients, dropouts after key sharing, shards."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from numpy.typing import NDArray

from fedsilo.parallel import MIN_PART_COORDINATES
from fedsilo.secagg import (
    ClientKeys,
    DanglingPair,
    RingSpec,
    Share,
    apply_masks,
    combine_shares,
    dequantize_sum,
    expand_mask,
    mask_update,
    neighbours,
    new_seed,
    pairwise_seed,
    quantization_step,
    quantize,
    recommended_threshold,
    recover_dangling_pairs,
    ring_add_into,
    share_holders,
    share_secret,
    unmask_sum,
)
from fedsilo.secagg.masking import CHUNK_COORDINATES

JOB = "job-42"
ROUND = 3
DIM = 2_000


@dataclass
class Client:
    id: str
    update: NDArray[np.float32]
    quantized: NDArray[np.uint32]
    keys: ClientKeys = field(default_factory=ClientKeys.generate)
    self_seed: bytes = field(default_factory=new_seed)
    # (owner, "self" | "mask") -> the share this client holds of owner's secret
    held: dict[tuple[str, str], Share] = field(default_factory=dict)


@dataclass
class Round:
    clients: dict[str, Client]
    graph: dict[str, list[str]]
    threshold: int
    spec: RingSpec
    masked: dict[str, NDArray[np.uint32]]
    revealed: list[tuple[str, str]] = field(default_factory=list)

    def reveal(self, owner: str, kind: str, dropped: set[str]) -> bytes:
        """The server asks owner's surviving share holders for their shares of its secret."""
        self.revealed.append((owner, kind))
        holders = [h for h in share_holders(self.graph, owner) if h not in dropped]
        return combine_shares(
            [self.clients[h].held[(owner, kind)] for h in holders], self.threshold
        )


def run_clients(n: int, k: int, seed: int) -> Round:
    rng = np.random.default_rng(seed)
    spec = RingSpec(clip=1.0, num_clients=n)
    ids = [f"site-{i:02d}" for i in range(n)]
    clients: dict[str, Client] = {}
    for cid in ids:
        update = rng.uniform(-1.0, 1.0, DIM).astype(np.float32)
        clients[cid] = Client(cid, update, quantize(update, spec, rng))
    graph = neighbours(ids, k, seed=b"graph-seed")
    threshold = recommended_threshold(len(graph[ids[0]]))
    # Each client shares its self seed and mask key with itself and its neighbours.
    for client in clients.values():
        holders = share_holders(graph, client.id)
        for kind, secret in [
            ("self", client.self_seed),
            ("mask", client.keys.mask_private_bytes()),
        ]:
            for share, holder in zip(
                share_secret(secret, threshold, len(holders)), holders, strict=True
            ):
                clients[holder].held[(client.id, kind)] = share
    masked: dict[str, NDArray[np.uint32]] = {}
    for client in clients.values():
        pairwise = {
            peer: pairwise_seed(
                client.keys, client.id, peer, clients[peer].keys.mask_public, JOB, ROUND
            )
            for peer in graph[client.id]
        }
        masked[client.id] = mask_update(client.quantized, client.id, client.self_seed, pairwise)
    return Round(clients, graph, threshold, spec, masked)


def server_unmask(
    state: Round, dropped: set[str], begin: int = 0, end: int = DIM
) -> NDArray[np.uint32]:
    """Aggregator of coordinates [begin, end) after `dropped` vanished post key sharing."""
    survivors = sorted(set(state.masked) - dropped)
    masked_sum = np.zeros(end - begin, np.uint32)
    for cid in survivors:
        ring_add_into(masked_sum, state.masked[cid][begin:end])
    self_seeds = {cid: state.reveal(cid, "self", dropped) for cid in survivors}
    dangling: list[DanglingPair] = []
    for cid in sorted(dropped):
        mask_private = state.reveal(cid, "mask", dropped)
        publics = {
            p: state.clients[p].keys.mask_public for p in state.graph[cid] if p not in dropped
        }
        dangling += recover_dangling_pairs(
            cid, mask_private, state.clients[cid].keys.mask_public, publics, JOB, ROUND
        )
    return unmask_sum(masked_sum, begin, self_seeds, dangling)


def plaintext_sum(state: Round, members: list[str]) -> NDArray[np.uint32]:
    total = np.zeros(DIM, np.uint32)
    for cid in members:
        ring_add_into(total, state.clients[cid].quantized)
    return total


@pytest.mark.parametrize(
    ("n", "k", "dropped"),
    [
        (5, 4, set()),
        (5, 4, {"site-03"}),
        (5, 4, {"site-00", "site-04"}),
        (12, 4, set()),
        (12, 4, {"site-07"}),
        (12, 4, {"site-02", "site-09"}),
    ],
)
def test_the_unmasked_sum_is_the_exact_sum_of_survivors(n: int, k: int, dropped: set[str]) -> None:
    state = run_clients(n, k, seed=n + len(dropped))
    survivors = [cid for cid in state.clients if cid not in dropped]

    total = server_unmask(state, dropped)

    np.testing.assert_array_equal(total, plaintext_sum(state, survivors))
    np.testing.assert_allclose(
        dequantize_sum(total, state.spec, count=len(survivors)),
        np.sum([state.clients[c].update for c in survivors], axis=0, dtype=np.float64),
        atol=len(survivors) * quantization_step(state.spec),
        rtol=2**-23,
    )
    # Self seeds are revealed for survivors only, mask keys for dropped clients only.
    assert sorted(state.revealed) == sorted(
        [(c, "self") for c in survivors] + [(c, "mask") for c in dropped]
    )


def test_each_masked_update_differs_from_its_plaintext() -> None:
    state = run_clients(5, 4, seed=0)
    for cid, masked in state.masked.items():
        assert np.count_nonzero(masked == state.clients[cid].quantized) < 5


def test_unmasking_a_shard_equals_the_slice_of_the_whole() -> None:
    state = run_clients(5, 4, seed=7)
    whole = server_unmask(state, {"site-01"})
    for begin, end in [(0, 5), (5, 1003), (1003, DIM)]:
        shard = server_unmask(state, {"site-01"}, begin, end)
        np.testing.assert_array_equal(shard, whole[begin:end])


def test_a_client_can_mask_a_range_of_its_update() -> None:
    x = np.arange(100, dtype=np.uint32)
    self_seed, pairwise = new_seed(), {"a": new_seed(), "z": new_seed()}
    whole = mask_update(x, "m", self_seed, pairwise)
    np.testing.assert_array_equal(
        mask_update(x[37:91], "m", self_seed, pairwise, begin=37), whole[37:91]
    )


def test_masked_updates_look_uniform() -> None:
    zeros = np.zeros(100_000, np.uint32)
    masked = mask_update(zeros, "m", new_seed(), {"a": new_seed(), "z": new_seed()})
    assert abs(masked.astype(np.float64).mean() - 2**31) < 2e7  # ~5 standard errors
    assert np.count_nonzero(masked == zeros) < 5
    counts = np.bincount(masked >> 28, minlength=16)
    assert np.all(np.abs(counts - 100_000 / 16) < 600)


def test_inconsistent_unmasking_inputs_are_named() -> None:
    seed = new_seed()
    with pytest.raises(ValueError, match="'b' is not a survivor"):
        unmask_sum(np.zeros(4, np.uint32), 0, {"a": seed}, [("b", "c", seed)])
    with pytest.raises(ValueError, match="'a' survived"):
        unmask_sum(np.zeros(4, np.uint32), 0, {"a": seed, "b": seed}, [("b", "a", seed)])
    with pytest.raises(ValueError, match="given twice"):
        unmask_sum(np.zeros(4, np.uint32), 0, {"a": seed}, [("a", "c", seed)] * 2)


def test_a_wrong_share_is_caught_when_recovering_a_mask_key() -> None:
    keys = ClientKeys.generate()
    with pytest.raises(ValueError, match="at least one Shamir share is wrong"):
        recover_dangling_pairs("d", new_seed(), keys.mask_public, {}, JOB, ROUND)


def test_masking_refuses_a_non_ring_vector() -> None:
    with pytest.raises(ValueError, match="quantized must be a 1-D uint32"):
        mask_update(np.zeros(4, np.int64), "m", new_seed(), {})


def test_apply_masks_adds_and_subtracts_each_stream() -> None:
    values = np.arange(1_000, dtype=np.uint32)
    plus, minus = new_seed(), new_seed()

    result = apply_masks(values, 17, [plus], [minus], out=np.empty_like(values))

    expected = values + expand_mask(plus, 17, 1_017) - expand_mask(minus, 17, 1_017)
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(values, np.arange(1_000, dtype=np.uint32))  # input untouched


def test_apply_masks_works_in_place_and_copies_with_no_masks() -> None:
    values, seed = np.arange(300, dtype=np.uint32), new_seed()
    expected = values + expand_mask(seed, 0, 300)
    assert apply_masks(values, 0, [seed], []) is values
    np.testing.assert_array_equal(values, expected)
    out = np.zeros(300, np.uint32)
    np.testing.assert_array_equal(apply_masks(values, 0, [], [], out=out), expected)


@pytest.mark.parametrize("threads", [2, 3, None])
def test_threads_give_the_result_of_one_pass(threads: int | None) -> None:
    # More than 2 * MIN_PART_COORDINATES, starting off a block and chunk boundary.
    size = 2 * MIN_PART_COORDINATES + CHUNK_COORDINATES + 37
    values = np.random.default_rng(0).integers(0, 2**32, size, dtype=np.uint32)
    seeds = [new_seed() for _ in range(3)]
    single = apply_masks(values, 5, seeds[:2], seeds[2:], out=np.empty_like(values))

    threaded = apply_masks(
        values, 5, seeds[:2], seeds[2:], out=np.empty_like(values), threads=threads
    )

    np.testing.assert_array_equal(threaded, single)


def test_apply_masks_refuses_a_mismatched_out() -> None:
    with pytest.raises(ValueError, match="out must be"):
        apply_masks(np.zeros(4, np.uint32), 0, [new_seed()], [], out=np.zeros(5, np.uint32))
