"""Per-job Paillier key pairs. The private key is written only to the keymanager's volume
(mode 0600) and used for two things: reading the canary of one upload, and decrypting an
aggregate that provably covers at least `min_clients` distinct clients' uploads."""

from __future__ import annotations

import json
import random
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from phe import paillier

from fedsilo.paillier import (
    PackingSpec,
    canary_ok,
    decrypt_sum,
    private_key_from_dict,
    private_key_to_dict,
    public_key_to_bytes,
    verify_sample,
)
from fedsilo.parallel import available_cpus
from fedsilo.pki.files import write_private

# Ciphertext positions recomputed from the stored uploads before any decryption.
VERIFY_SAMPLE = 16


class DecryptionRefused(PermissionError):
    """The keymanager will not decrypt this: it could reveal less aggregated data."""


@dataclass(frozen=True)
class JobKey:
    job_id: str
    public_key: paillier.PaillierPublicKey
    private_key: paillier.PaillierPrivateKey
    packing: PackingSpec
    min_clients: int


class JobKeys:
    def __init__(self, folder: Path) -> None:
        self._folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, JobKey] = {}

    def _path(self, job_id: str) -> Path:
        if not job_id.replace("-", "").isalnum():
            raise ValueError(f"invalid job id {job_id!r}")
        return self._folder / f"{job_id}.json"

    def create(self, job_id: str, packing: PackingSpec, min_clients: int) -> JobKey:
        """One key pair per job; asking again returns the same public key."""
        if self._path(job_id).exists():
            return self.get(job_id)
        if min_clients < 2:
            raise ValueError(
                "an encrypted aggregate needs min_clients >= 2, or one client's "
                "update could be decrypted alone"
            )
        _, private = paillier.generate_paillier_keypair(n_length=packing.key_bits)
        document: dict[str, Any] = {
            "job_id": job_id,
            "private_key": private_key_to_dict(private),
            "packing": {
                "key_bits": packing.key_bits,
                "num_clients": packing.num_clients,
                "clip": packing.clip,
                "value_bits": packing.value_bits,
            },
            "min_clients": min_clients,
        }
        write_private(self._path(job_id), json.dumps(document).encode())
        return self.get(job_id)

    def get(self, job_id: str) -> JobKey:
        if job_id not in self._cache:
            path = self._path(job_id)
            if not path.exists():
                raise KeyError(f"no key pair for job {job_id!r}")
            document = json.loads(path.read_text())
            private = private_key_from_dict(document["private_key"])
            self._cache[job_id] = JobKey(
                job_id,
                private.public_key,
                private,
                PackingSpec(**document["packing"]),
                int(document["min_clients"]),
            )
        return self._cache[job_id]

    def check_upload(self, job_id: str, upload: bytes) -> bool:
        return bool(canary_ok(upload, self.get(job_id).private_key))

    def decrypt(
        self, job_id: str, aggregate: bytes, uploads: dict[str, bytes], num_values: int
    ) -> NDArray[np.float32]:
        key = self.get(job_id)
        if len(uploads) < key.min_clients:
            raise DecryptionRefused(
                f"the aggregate covers {len(uploads)} distinct clients; job {job_id} requires "
                f"at least {key.min_clients} before anything is decrypted"
            )
        if len(set(uploads.values())) != len(uploads):
            raise DecryptionRefused("the same upload is listed for several clients")
        if not verify_sample(
            aggregate,
            list(uploads.values()),
            key.public_key,
            VERIFY_SAMPLE,
            random.Random(secrets.randbits(64)),
        ):
            raise DecryptionRefused(
                "the aggregate is not the product of the listed uploads (sampled ciphertexts "
                "differ): refusing to decrypt"
            )
        # In processes, one per CPU this keymanager may use: decryption is on the round's
        # critical path, and each ciphertext's two exponentiations are independent.
        return decrypt_sum(
            aggregate,
            key.private_key,
            key.packing,
            num_values,
            len(uploads),
            processes=available_cpus(),
        )

    def public_bytes(self, job_id: str) -> bytes:
        return bytes(public_key_to_bytes(self.get(job_id).public_key))
