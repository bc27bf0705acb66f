"""BlobStore and DocumentStore on the directory backend, and BlobRef validation."""

import hashlib
from pathlib import Path

import pytest

from fedsilo.storage import BlobRef, BlobStore, CorruptBlob, LocalDirectoryStore

from .store_contract import BlobStoreContract


class TestBlobStoreOnDirectory(BlobStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalDirectoryStore:
        return LocalDirectoryStore(tmp_path / "objects")


def test_flipping_one_byte_on_disk_is_detected(tmp_path: Path) -> None:
    blobs = BlobStore(LocalDirectoryStore(tmp_path))
    ref = blobs.put(b"global model, round 7")
    path = tmp_path / "blobs" / "sha256" / ref.digest[:2] / ref.digest
    flipped = bytearray(path.read_bytes())
    flipped[3] ^= 0x01
    path.write_bytes(bytes(flipped))

    with pytest.raises(CorruptBlob, match=f"blob {ref.digest} .* is corrupt"):
        blobs.get(ref.digest)
    assert blobs.get_range(ref.digest, 0, 3) == b"glo"


def test_blob_ref_accepts_a_sha256() -> None:
    digest = hashlib.sha256(b"x").hexdigest()

    assert BlobRef(digest, 1).digest == digest


@pytest.mark.parametrize(
    "digest",
    ["", "abc", "A" * 64, "g" * 64, "a" * 63, "a" * 65, " " + "a" * 63],
)
def test_blob_ref_rejects_anything_but_64_lowercase_hex(digest: str) -> None:
    with pytest.raises(ValueError, match="not 64 lowercase hex"):
        BlobRef(digest, 0)


def test_blob_ref_rejects_a_negative_size() -> None:
    with pytest.raises(ValueError, match="negative size -1"):
        BlobRef("a" * 64, -1)
