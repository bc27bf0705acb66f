"""Secure aggregation through the real services: the control plane stores only masked inputs,
the unmasked aggregate equals plaintext FedAvg, and sites that drop out after sharing their
keys are removed from the sum with the survivors' shares."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.privacy import epsilon_after
from fedsilo.secagg import KEY_ALGORITHM, AdvertisedKeys, ClientRound, RoundConfig
from fedsilo.v1 import keymanager_pb2, registry_pb2, scheduler_pb2

from .conftest import Federation, Site, enroll_site, small_job, submit_update

pytestmark = pytest.mark.slow


def _final_model(federation: Federation, status: dict[str, object]) -> np.ndarray:
    models = ModelStoreClient(federation.channel("modelstore"))
    return np.frombuffer(models.download(str(status["model_version"])), "<f4")


def test_secagg_matches_plaintext_and_stores_only_masked_inputs(federation: Federation) -> None:
    plain = federation.run_job(small_job({"name": "fedavg"}, rounds=3))
    masked = federation.run_job(small_job({"name": "fedavg"}, rounds=3, protection="secagg"))
    assert masked["state"] == "completed", masked["error"]
    np.testing.assert_allclose(
        _final_model(federation, masked), _final_model(federation, plain), atol=1e-5
    )
    for ours, theirs in zip(masked["history"], plain["history"], strict=True):
        if ours["mean_test_accuracy"] is not None:
            assert abs(ours["mean_test_accuracy"] - theirs["mean_test_accuracy"]) <= 0.01

    db = sqlite3.connect(f"file:{federation.plane.state_dir / 'scheduler.db'}?mode=ro", uri=True)
    digests = [
        d
        for (d,) in db.execute(
            "SELECT digest FROM updates WHERE job_id = ? AND round = 2", (masked["job_id"],)
        )
    ]
    models = ModelStoreClient(federation.channel("modelstore"))
    assert len(digests) == 4
    for digest in digests:
        info = models.stat(digest)
        assert info.dtype == "uint32" and info.num_elements == 14
        masked_input = np.frombuffer(models.download(digest), "<u4")
        # an honest quantized update would sit near the ring's middle; a masked one is uniform
        assert np.abs(masked_input.astype(np.int64) - 2**31).max() > 2**28
    audit = (federation.plane.state_dir / "audit" / "keymanager.jsonl").read_text()
    assert audit.count('"event": "round_key_published"') >= 4 * 3


def _drop_after_sharing(
    site: Site,
    stop: threading.Event,
    shared: threading.Event,
    malformed: list[grpc.StatusCode] | None = None,
) -> None:
    """Follows the protocol up to sharing its keys, then vanishes (no input, no heartbeat);
    with `malformed`, it first sends broken masked inputs and records the answers."""
    rounds: dict[int, ClientRound] = {}
    while not stop.is_set():
        if not shared.is_set():
            site.registry.Heartbeat(registry_pb2.HeartbeatRequest(client_id=site.client_id))
        task = site.scheduler.WaitForTask(
            scheduler_pb2.WaitForTaskRequest(client_id=site.client_id, wait_s=1)
        )
        info = task.secagg
        if task.kind == scheduler_pb2.TASK_KIND_SECAGG_ADVERTISE:
            rounds[info.key_round] = ClientRound(
                site.client_id, RoundConfig(task.job_id, info.key_round, 0, 0, b"")
            )
            site.keymanager.PublishRoundKey(
                keymanager_pb2.PublishRoundKeyRequest(
                    job_id=task.job_id,
                    round=info.key_round,
                    key=keymanager_pb2.RoundKey(
                        client_id=site.client_id,
                        algorithm=KEY_ALGORITHM,
                        public_key=rounds[info.key_round].advertise().to_bytes(),
                    ),
                )
            )
        elif task.kind == scheduler_pb2.TASK_KIND_SECAGG_SHARE:
            keys = site.keymanager.ListRoundKeys(
                keymanager_pb2.ListRoundKeysRequest(job_id=task.job_id, round=info.key_round)
            )
            published = {k.client_id: bytes(k.public_key) for k in keys.keys}
            mine = rounds[info.key_round]
            mine.config = RoundConfig(
                task.job_id, info.key_round, info.degree, info.threshold, info.graph_seed
            )
            sealed = mine.share(
                [AdvertisedKeys.from_bytes(c, published[c]) for c in info.advertised]
            )
            site.scheduler.SecAggSubmit(
                scheduler_pb2.SecAggSubmitRequest(
                    client_id=site.client_id,
                    task_id=task.task_id,
                    shares=[
                        scheduler_pb2.SecAggShare(
                            owner=s.owner, holder=s.holder, ciphertext=s.ciphertext
                        )
                        for s in sealed
                    ],
                )
            )
            if malformed is None:
                shared.set()  # from here on: gone
        elif task.kind == scheduler_pb2.TASK_KIND_TRAIN and malformed is not None:
            for payload, dtype in (
                (b"\x00" * 4 * 13, "uint32"),  # wrong length
                (b"\x00" * 4 * 14, "float32"),
            ):  # not ring elements
                blob = site.models.upload(payload, dtype=dtype).ref
                try:
                    submit_update(site, task, blob)
                except grpc.RpcError as error:
                    malformed.append(error.code())
            shared.set()
        elif task.kind != scheduler_pb2.TASK_KIND_NONE and not shared.is_set():
            site.scheduler.DeclineTask(
                scheduler_pb2.DeclineTaskRequest(
                    client_id=site.client_id, task_id=task.task_id, reason="test: not training"
                )
            )


@pytest.mark.parametrize("dropouts", [1, 2])
def test_sites_that_drop_after_sharing_keys_are_unmasked_away(
    federation: Federation, tmp_path: Path, dropouts: int
) -> None:
    plain = federation.run_job(small_job({"name": "fedavg"}, rounds=1, seed=11))
    stop = threading.Event()
    threads = []
    for index in range(dropouts):
        site = enroll_site(federation, tmp_path, f"leaver-{dropouts}-{index}", "heart-disease")
        shared = threading.Event()
        thread = threading.Thread(
            target=_drop_after_sharing, args=(site, stop, shared), daemon=True
        )
        thread.start()
        threads.append((thread, shared))
    try:
        masked = federation.run_job(
            small_job({"name": "fedavg"}, rounds=1, seed=11, protection="secagg")
        )
    finally:
        stop.set()
        for thread, _ in threads:
            thread.join(timeout=10)
    assert masked["state"] == "completed", masked["error"]
    assert all(shared.is_set() for _, shared in threads), "every leaver shared its keys first"
    round_1 = next(h for h in masked["history"] if h["round"] == 1)
    assert round_1["participants"] == ["cleveland", "hungarian", "switzerland", "va"]
    assert len(round_1["dropped"]) == dropouts
    np.testing.assert_allclose(
        _final_model(federation, masked), _final_model(federation, plain), atol=1e-5
    )
    kinds = [e["kind"] for e in masked["events"]]
    assert kinds.count("lost") + kinds.count("dropped") >= dropouts


def test_malformed_masked_inputs_are_rejected_and_the_round_completes(
    federation: Federation, tmp_path: Path
) -> None:
    site = enroll_site(federation, tmp_path, "leaver-malformed", "heart-disease")
    stop, shared = threading.Event(), threading.Event()
    answers: list[grpc.StatusCode] = []
    thread = threading.Thread(
        target=_drop_after_sharing, args=(site, stop, shared, answers), daemon=True
    )
    thread.start()
    try:
        # Long local training keeps the round open while the leaver misbehaves.
        status = federation.run_job(
            small_job({"name": "fedavg"}, rounds=1, seed=5, local_steps=3000, protection="secagg")
        )
    finally:
        stop.set()
        thread.join(timeout=10)
    assert answers == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT]
    assert status["state"] == "completed", status["error"]
    round_1 = next(h for h in status["history"] if h["round"] == 1)
    assert round_1["participants"] == ["cleveland", "hungarian", "switzerland", "va"]


def test_distributed_dp_under_secagg(federation: Federation) -> None:
    def job(noise: float, protection: str) -> dict[str, object]:
        privacy = {"mode": "client", "clip_norm": 0.05, "noise_multiplier": noise}
        return federation.run_job(
            small_job({"name": "fedavg"}, rounds=2, seed=9, privacy=privacy, protection=protection)
        )

    plain = job(0.0, "none")
    masked = job(0.0, "secagg")
    assert masked["state"] == "completed", masked["error"]
    # same clipping, same equal weighting of sites: the same model, to quantization
    np.testing.assert_allclose(
        _final_model(federation, masked), _final_model(federation, plain), atol=1e-5
    )
    noisy = job(1.0, "secagg")
    assert noisy["state"] == "completed", noisy["error"]
    assert not np.allclose(
        _final_model(federation, noisy), _final_model(federation, masked), atol=1e-3
    )  # the sites' noise shares are in the sum
    spent = [h["epsilon"] for h in noisy["history"] if h["round"] > 0]
    assert spent == pytest.approx([epsilon_after(r, 1.0, 1.0, 1e-5) for r in (1, 2)])
