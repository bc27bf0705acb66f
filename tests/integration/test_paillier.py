"""Packed Paillier through the real services: the control plane stores and combines only
ciphertexts, the keymanager decrypts only verified aggregates of enough clients."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from phe import paillier

from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.paillier import PackingSpec, ciphertext_bytes, encrypt_update
from fedsilo.v1 import (
    keymanager_pb2,
    keymanager_pb2_grpc,
    registry_pb2,
    scheduler_pb2,
)

from .conftest import Federation, enroll_site, small_job, wait_for_training

pytestmark = pytest.mark.slow
PAILLIER = {"key_bits": 1024, "clip": 0.5}


def _updates(federation: Federation, job_id: str, round_: int) -> list[tuple[str, str]]:
    db = sqlite3.connect(f"file:{federation.plane.state_dir / 'scheduler.db'}?mode=ro", uri=True)
    return db.execute(
        "SELECT client_id, digest FROM updates WHERE job_id = ? AND round = ? ORDER BY client_id",
        (job_id, round_),
    ).fetchall()


def test_paillier_matches_plaintext_and_the_plane_sees_only_ciphertexts(
    federation: Federation,
) -> None:
    plain = federation.run_job(small_job({"name": "fedavg"}, rounds=3))
    protected = federation.run_job(
        small_job({"name": "fedavg"}, rounds=3, protection="paillier", paillier=PAILLIER)
    )
    assert protected["state"] == "completed", protected["error"]
    models = ModelStoreClient(federation.channel("modelstore"))
    expected = np.frombuffer(models.download(plain["model_version"]), "<f4")
    got = np.frombuffer(models.download(protected["model_version"]), "<f4")
    np.testing.assert_allclose(got, expected, atol=5e-4)  # quantization: 16 bits on ±0.5
    for p_round, e_round in zip(protected["history"], plain["history"], strict=True):
        if p_round["mean_test_accuracy"] is not None:
            assert abs(p_round["mean_test_accuracy"] - e_round["mean_test_accuracy"]) <= 0.01

    key = keymanager_pb2_grpc.KeyManagerStub(federation.channel("keymanager")).GetJobKey(
        keymanager_pb2.GetJobKeyRequest(job_id=protected["job_id"])
    )
    width = ciphertext_bytes(paillier.PaillierPublicKey(int.from_bytes(key.public_key, "big")))
    stored = _updates(federation, protected["job_id"], 1)
    assert len(stored) == 4
    for _, digest in stored:
        info = models.stat(digest)
        assert info.dtype == "bytes" and info.ref.size == 2 * width  # canary + one ciphertext
    audit = [
        json.loads(line)
        for line in (federation.plane.state_dir / "audit" / "keymanager.jsonl")
        .read_text()
        .splitlines()
    ]
    decrypted = [
        e
        for e in audit
        if e["event"] == "aggregate_decrypted" and e["details"]["job_id"] == protected["job_id"]
    ]
    assert [e["details"]["round"] for e in decrypted] == [1, 2, 3]
    assert all(len(e["details"]["clients"]) == 4 for e in decrypted)

    # The keymanager decrypts nothing that could be one client's update.
    keymanager = keymanager_pb2_grpc.KeyManagerStub(federation.channel("keymanager"))
    alone = keymanager_pb2.DecryptAggregateRequest(
        job_id=protected["job_id"],
        round=1,
        aggregate_digest=stored[0][1],
        num_values=14,
        uploads=[keymanager_pb2.EncryptedUpload(client_id=stored[0][0], digest=stored[0][1])],
    )
    with pytest.raises(grpc.RpcError) as single:
        keymanager.DecryptAggregate(alone)
    assert single.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "at least 2" in str(single.value.details())
    pretend = keymanager_pb2.DecryptAggregateRequest(
        job_id=protected["job_id"],
        round=1,
        aggregate_digest=stored[0][1],
        num_values=14,
        uploads=[keymanager_pb2.EncryptedUpload(client_id=c, digest=d) for c, d in stored[:2]],
    )
    with pytest.raises(grpc.RpcError) as forged:
        keymanager.DecryptAggregate(pretend)  # one upload posing as the sum of two
    assert forged.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not the product" in str(forged.value.details())


def test_malformed_encrypted_uploads_are_rejected_and_the_round_completes(
    federation: Federation, tmp_path: Path
) -> None:
    rogue = enroll_site(federation, tmp_path, "rogue-crypto", "heart-disease")
    stop = threading.Event()

    def keep_alive() -> None:
        while not stop.wait(1.0):
            rogue.registry.Heartbeat(registry_pb2.HeartbeatRequest(client_id=rogue.client_id))

    beating = threading.Thread(target=keep_alive, daemon=True)
    beating.start()
    try:
        job = federation.api.submit_job(
            small_job(
                {"name": "fedavg"},
                rounds=1,
                local_steps=3000,
                evaluation_timeout_s=5,
                protection="paillier",
                paillier=PAILLIER,
            )
        )
        task = wait_for_training(rogue, job["job_id"])
        assert task.protection == "paillier" and task.public_key

        def submit(payload: bytes) -> grpc.StatusCode:
            blob = rogue.models.upload(payload, dtype="bytes").ref
            with pytest.raises(grpc.RpcError) as error:
                rogue.scheduler.SubmitUpdate(
                    scheduler_pb2.SubmitUpdateRequest(
                        client_id=rogue.client_id,
                        task_id=task.task_id,
                        job_id=task.job_id,
                        round=task.round,
                        model_version=task.model_version,
                        update=blob,
                        num_examples=10,
                    )
                )
            return error.value.code()

        packing = PackingSpec(key_bits=1024, num_clients=64, clip=0.5, value_bits=16)
        values = np.zeros(14, np.float32)
        assert submit(b"\x01" * 100) == grpc.StatusCode.INVALID_ARGUMENT  # wrong length
        other_key, _ = paillier.generate_paillier_keypair(n_length=1024)
        foreign = encrypt_update(values, packing, other_key)
        assert submit(foreign) == grpc.StatusCode.INVALID_ARGUMENT  # not under the job's key
        status = federation.wait_for_job(job["job_id"])
    finally:
        stop.set()
        beating.join()
    assert status["state"] == "completed", status["error"]
    round_1 = next(h for h in status["history"] if h["round"] == 1)
    assert round_1["participants"] == ["cleveland", "hungarian", "switzerland", "va"]
    details = [e["detail"] for e in status["events"] if e["kind"] == "rejected:invalid_argument"]
    assert any("bytes" in d for d in details)
    assert any("job's key" in d for d in details)
