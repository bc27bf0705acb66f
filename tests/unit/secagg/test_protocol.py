"""A whole secure-aggregation round in one process: every message the services will carry."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedsilo.secagg import RingSpec, dequantize_sum, quantization_step, quantize
from fedsilo.secagg.graph import recommended_threshold
from fedsilo.secagg.masking import ring_add_into
from fedsilo.secagg.protocol import (
    ClientRound,
    ProtocolError,
    RoundConfig,
    SealedShare,
    ServerRound,
)

SIZE = 1_000


def _round(n: int, degree: int | None = None) -> tuple[RoundConfig, list[ClientRound]]:
    degree = degree if degree is not None else n - 1
    config = RoundConfig("job-1", 3, degree, recommended_threshold(degree), b"\x07" * 32)
    return config, [ClientRound(f"site-{i:02d}", config) for i in range(n)]


def _run(n: int, drop_after_sharing: int, degree: int | None = None) -> None:
    config, clients = _round(n, degree)
    spec = RingSpec(clip=1.0, num_clients=n)
    rng = np.random.default_rng(0)
    updates = {c.client_id: rng.uniform(-1, 1, SIZE).astype(np.float32) for c in clients}
    quantized = {cid: quantize(u, spec) for cid, u in updates.items()}

    advertised = [c.advertise() for c in clients]  # 1. keys
    server = ServerRound(config, advertised)
    sealed: list[SealedShare] = []
    for client in clients:  # 2. shares (everyone shares: U2 = U1)
        sealed += client.share(advertised)
    shared = [c.client_id for c in clients]
    survivors = clients[drop_after_sharing:]  # 3. the first ones drop before sending input
    masked_sum = np.zeros(SIZE, np.uint32)
    for client in survivors:
        masked = client.masked_input(quantized[client.client_id], shared)
        assert not np.array_equal(masked, quantized[client.client_id])
        ring_add_into(masked_sum, masked)
    alive = [c.client_id for c in survivors]
    dropped = [c.client_id for c in clients[:drop_after_sharing]]
    reveals = []
    for client in survivors:  # 4. reveals
        mine = [s for s in sealed if s.holder == client.client_id]
        reveals += client.reveal(mine, alive, dropped)
    assert not any(r.kind == "mask_key" and r.owner in alive for r in reveals)
    unmasking = server.reconstruct(shared, alive, reveals)
    assert set(unmasking.self_seeds) == set(alive)

    total = server.unmask(masked_sum, 0, unmasking)
    expected = np.zeros(SIZE, np.uint32)
    for cid in alive:
        ring_add_into(expected, quantized[cid])
    np.testing.assert_array_equal(total, expected)  # exact in the ring
    plain = sum(updates[cid] for cid in alive)
    # rounding: one quantization step per client, plus float32 cancellation in sum - n·clip
    tolerance = len(alive) * (quantization_step(spec) + spec.clip * 2.0**-22)
    np.testing.assert_allclose(
        dequantize_sum(total, spec, len(alive)), plain, rtol=0, atol=tolerance
    )
    half = server.unmask(masked_sum[400:], 400, unmasking)  # a shard alone
    np.testing.assert_array_equal(half, expected[400:])


@pytest.mark.parametrize("drop", [0, 1, 2])
def test_five_sites_with_dropouts_after_sharing_keys(drop: int) -> None:
    _run(5, drop)


def test_secagg_plus_sparse_graph_with_dropouts() -> None:
    _run(12, 2, degree=4)  # each client masks with 4 neighbours instead of 11


def test_a_client_never_reveals_both_secrets_of_one_owner() -> None:
    _, clients = _round(3)
    advertised = [c.advertise() for c in clients]
    sealed = [s for c in clients for s in c.share(advertised)]
    mine = [s for s in sealed if s.holder == clients[0].client_id]
    with pytest.raises(ProtocolError, match="both survive and drop"):
        clients[0].reveal(mine, [c.client_id for c in clients], [clients[1].client_id])
    clients[0].reveal(mine, [c.client_id for c in clients], [])
    with pytest.raises(ProtocolError, match="already revealed"):
        clients[0].reveal(mine, [clients[0].client_id], [clients[1].client_id])


def test_a_tampered_share_does_not_authenticate() -> None:
    _, clients = _round(3)
    advertised = [c.advertise() for c in clients]
    sealed = [s for c in clients for s in c.share(advertised)]
    mine = [s for s in sealed if s.holder == clients[0].client_id]
    forged = [
        replace(mine[0], ciphertext=bytes([mine[0].ciphertext[0] ^ 1]) + mine[0].ciphertext[1:])
    ]
    with pytest.raises(ProtocolError, match="does not authenticate"):
        clients[0].reveal(forged, [c.client_id for c in clients], [])


def test_the_server_refuses_too_few_shares_or_a_survivors_mask_key() -> None:
    config, clients = _round(5)
    advertised = [c.advertise() for c in clients]
    server = ServerRound(config, advertised)
    sealed = [s for c in clients for s in c.share(advertised)]
    ids = [c.client_id for c in clients]
    reveals = clients[0].reveal([s for s in sealed if s.holder == ids[0]], ids, [])
    with pytest.raises(ProtocolError, match="needed"):
        server.reconstruct(ids, ids, reveals)  # one holder's reveals are not enough
    poisoned = [replace(reveals[0], kind="mask_key")]
    with pytest.raises(ProtocolError, match="must never be revealed"):
        server.reconstruct(ids, ids, poisoned)


def test_a_client_masks_the_same_on_any_number_of_threads() -> None:
    _, clients = _round(3)
    advertised = [c.advertise() for c in clients]
    for client in clients:
        client.share(advertised)
    shared = [c.client_id for c in clients]
    quantized = np.random.default_rng(0).integers(0, 2**20, 600_000, dtype=np.uint32)
    clients[0].threads = 1
    single = clients[0].masked_input(quantized, shared)

    clients[0].threads = 2
    np.testing.assert_array_equal(clients[0].masked_input(quantized, shared), single)
