"""Behaviour every ObjectStore backend must show, shared by the directory and S3 tests.

A backend's test module subclasses these classes and provides a ``store`` fixture; pytest
collects the inherited tests under the subclass's ``Test...`` name.
"""

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedsilo.storage import (
    BlobStore,
    CorruptBlob,
    DocumentStore,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    blob_key,
)

PAYLOAD = bytes(range(256)) * 40  # every byte value, 10 KiB


class ObjectStoreContract:
    def test_put_then_get_returns_the_bytes(self, store: ObjectStore) -> None:
        store.put("jobs/j1/round=0/update.bin", PAYLOAD)

        assert store.get("jobs/j1/round=0/update.bin") == PAYLOAD

    def test_put_replaces_an_existing_object(self, store: ObjectStore) -> None:
        store.put("model", b"first version")

        store.put("model", b"second")

        assert store.get("model") == b"second"
        assert store.size("model") == 6

    def test_empty_object(self, store: ObjectStore) -> None:
        store.put("empty", b"")

        assert store.get("empty") == b""
        assert store.size("empty") == 0
        assert list(store.iter_chunks("empty")) == []

    def test_missing_object_raises_object_not_found_naming_the_key(
        self, store: ObjectStore
    ) -> None:
        for read in (store.get, store.size, lambda key: store.get_range(key, 0, 1)):
            with pytest.raises(ObjectNotFound, match="jobs/missing") as caught:
                read("jobs/missing")
            assert store.describe() in str(caught.value)
            assert caught.value.key == "jobs/missing"
        with pytest.raises(ObjectNotFound, match="jobs/missing"):
            list(store.iter_chunks("jobs/missing"))

    def test_exists_and_size(self, store: ObjectStore) -> None:
        store.put("a/b", PAYLOAD)

        assert store.exists("a/b")
        assert not store.exists("a/c")
        assert store.size("a/b") == len(PAYLOAD)

    def test_get_range_returns_exactly_the_range(self, store: ObjectStore) -> None:
        store.put("blob", PAYLOAD)

        assert store.get_range("blob", 0, 10) == PAYLOAD[:10]
        assert store.get_range("blob", 300, 1000) == PAYLOAD[300:1300]
        assert store.get_range("blob", len(PAYLOAD) - 5, 5) == PAYLOAD[-5:]
        assert store.get_range("blob", len(PAYLOAD), 0) == b""
        assert store.get_range("blob", 7, 0) == b""

    @pytest.mark.parametrize(
        ("offset", "length"),
        [(len(PAYLOAD) - 5, 6), (len(PAYLOAD), 1), (len(PAYLOAD) + 10, 1), (len(PAYLOAD) + 1, 0)],
    )
    def test_get_range_past_the_end_raises_naming_the_key(
        self, store: ObjectStore, offset: int, length: int
    ) -> None:
        store.put("blob", PAYLOAD)

        with pytest.raises(StorageError, match="'blob'"):
            store.get_range("blob", offset, length)

    def test_negative_range_is_rejected(self, store: ObjectStore) -> None:
        store.put("blob", PAYLOAD)

        with pytest.raises(ValueError, match="negative"):
            store.get_range("blob", -1, 4)
        with pytest.raises(ValueError, match="negative"):
            store.get_range("blob", 0, -4)

    def test_iter_chunks_yields_the_object_in_bounded_chunks(self, store: ObjectStore) -> None:
        store.put("blob", PAYLOAD)

        chunks = list(store.iter_chunks("blob", chunk_size=4096))

        assert b"".join(chunks) == PAYLOAD
        assert all(0 < len(chunk) <= 4096 for chunk in chunks)
        assert len(chunks) == 3

    def test_iter_chunks_of_a_range(self, store: ObjectStore) -> None:
        store.put("blob", PAYLOAD)

        assert b"".join(store.iter_chunks("blob", 100, offset=50, length=1000)) == PAYLOAD[50:1050]
        assert b"".join(store.iter_chunks("blob", 100, offset=10000)) == PAYLOAD[10000:]
        assert list(store.iter_chunks("blob", offset=len(PAYLOAD))) == []
        with pytest.raises(StorageError, match="'blob'"):
            list(store.iter_chunks("blob", offset=10, length=len(PAYLOAD)))

    def test_put_file_uploads_the_file(self, store: ObjectStore, tmp_path: Path) -> None:
        # 6 MiB: larger than one S3 multipart part, so the S3 backend uploads in parts.
        data = os.urandom(6 << 20)
        source = tmp_path / "weights.bin"
        source.write_bytes(data)

        store.put_file("models/weights.bin", source)

        assert store.size("models/weights.bin") == len(data)
        assert b"".join(store.iter_chunks("models/weights.bin")) == data
        assert source.read_bytes() == data

    def test_list_returns_sorted_keys_with_the_prefix(self, store: ObjectStore) -> None:
        for key in ("b", "a/c/d", "ab", "a/b", "a/c/e=1"):
            store.put(key, b"x")

        assert store.list("") == ["a/b", "a/c/d", "a/c/e=1", "ab", "b"]
        assert store.list("a/") == ["a/b", "a/c/d", "a/c/e=1"]
        assert store.list("a") == ["a/b", "a/c/d", "a/c/e=1", "ab"]
        assert store.list("a/c/e") == ["a/c/e=1"]
        assert store.list("zz/") == []

    def test_delete_removes_the_object_and_ignores_absent_keys(self, store: ObjectStore) -> None:
        store.put("a/b", b"x")
        store.put("a/c", b"y")

        store.delete("a/b")
        store.delete("a/b")
        store.delete("never/stored")

        assert not store.exists("a/b")
        assert store.list("") == ["a/c"]
        with pytest.raises(ObjectNotFound, match="a/b"):
            store.get("a/b")

    @pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a\\b", "a//b", "sp ace"])
    def test_invalid_keys_are_rejected_before_touching_storage(
        self, store: ObjectStore, key: str
    ) -> None:
        with pytest.raises(ValueError, match="storage key"):
            store.put(key, b"x")
        with pytest.raises(ValueError, match="storage key"):
            store.get(key)
        with pytest.raises(ValueError, match="storage key"):
            store.exists(key)
        assert store.list("") == []


class BlobStoreContract:
    def test_put_returns_the_sha256_and_size(self, store: ObjectStore) -> None:
        blobs = BlobStore(store)

        ref = blobs.put(PAYLOAD)

        assert ref.digest == hashlib.sha256(PAYLOAD).hexdigest()
        assert ref.size == len(PAYLOAD)
        assert blobs.get(ref.digest) == PAYLOAD
        assert blobs.stat(ref.digest) == ref
        assert blobs.exists(ref.digest)
        assert store.list("") == [f"blobs/sha256/{ref.digest[:2]}/{ref.digest}"]

    def test_put_of_existing_content_does_not_rewrite(self, store: ObjectStore) -> None:
        counting = CountingWrites(store)
        blobs = BlobStore(counting)  # type: ignore[arg-type]

        first = blobs.put(PAYLOAD)
        second = blobs.put(PAYLOAD)
        third = blobs.put_stream([PAYLOAD[:100], PAYLOAD[100:]])

        assert first == second == third
        assert counting.writes == [blob_key(first.digest)]

    def test_a_result_put_without_waiting_replaces_a_torn_copy(self, store: ObjectStore) -> None:
        counting = CountingWrites(store)
        blobs = BlobStore(counting)  # type: ignore[arg-type]
        ref = blobs.put(memoryview(PAYLOAD), durable=False)
        assert blobs.get(ref.digest) == PAYLOAD
        blobs.put(PAYLOAD, durable=False)  # whole: trusted, not written again
        assert counting.writes == [blob_key(ref.digest)]
        store.put(blob_key(ref.digest), PAYLOAD[:100])  # as a crash may leave it

        again = blobs.put(PAYLOAD, durable=False)

        assert again == ref
        assert blobs.get(ref.digest) == PAYLOAD
        assert counting.writes == [blob_key(ref.digest)] * 2

    def test_put_stream_stores_the_concatenation(self, store: ObjectStore) -> None:
        blobs = BlobStore(store)
        chunks = [PAYLOAD[i : i + 1000] for i in range(0, len(PAYLOAD), 1000)]
        digest = hashlib.sha256(PAYLOAD).hexdigest()

        ref = blobs.put_stream(iter(chunks), expected_digest=digest)

        assert ref.digest == digest
        assert ref.size == len(PAYLOAD)
        assert blobs.get(digest) == PAYLOAD

    def test_put_stream_with_wrong_expected_digest_stores_nothing(self, store: ObjectStore) -> None:
        blobs = BlobStore(store)
        wrong = hashlib.sha256(b"something else").hexdigest()

        with pytest.raises(CorruptBlob, match=wrong):
            blobs.put_stream([PAYLOAD], expected_digest=wrong)

        assert store.list("") == []

    def test_put_stream_that_fails_midway_stores_nothing(self, store: ObjectStore) -> None:
        blobs = BlobStore(store)

        def broken_upload() -> Iterator[bytes]:
            yield PAYLOAD
            raise ConnectionError("client went away")

        with pytest.raises(ConnectionError):
            blobs.put_stream(broken_upload())

        assert store.list("") == []
        assert not blobs.exists(hashlib.sha256(PAYLOAD).hexdigest())

    def test_get_detects_a_corrupt_blob(self, store: ObjectStore) -> None:
        blobs = BlobStore(store)
        ref = blobs.put(PAYLOAD)
        tampered = b"X" + PAYLOAD[1:]
        store.put(blob_key(ref.digest), tampered)

        with pytest.raises(CorruptBlob, match=ref.digest):
            blobs.get(ref.digest)
        with pytest.raises(CorruptBlob, match=ref.digest):
            list(blobs.iter_chunks(ref.digest, chunk_size=1000))
        assert blobs.get(ref.digest, verify=False) == tampered

    def test_get_of_a_missing_blob_names_the_digest(self, store: ObjectStore) -> None:
        blobs = BlobStore(store)
        digest = hashlib.sha256(b"never stored").hexdigest()

        with pytest.raises(ObjectNotFound, match=digest):
            blobs.get(digest)
        with pytest.raises(ObjectNotFound, match=digest):
            blobs.stat(digest)
        assert not blobs.exists(digest)

    def test_malformed_digests_are_rejected(self, store: ObjectStore) -> None:
        blobs = BlobStore(store)

        with pytest.raises(ValueError, match="not 64 lowercase hex"):
            blobs.get("ABC")
        with pytest.raises(ValueError, match="not 64 lowercase hex"):
            blobs.put_stream([b"x"], expected_digest="../../etc/passwd")

    def test_ranges_of_a_blob(self, store: ObjectStore) -> None:
        blobs = BlobStore(store)
        ref = blobs.put(PAYLOAD)

        assert blobs.get_range(ref.digest, 100, 50) == PAYLOAD[100:150]
        ranged = blobs.iter_chunks(ref.digest, 64, offset=10, length=200)
        assert b"".join(ranged) == PAYLOAD[10:210]
        assert b"".join(blobs.iter_chunks(ref.digest, 4096)) == PAYLOAD
        with pytest.raises(StorageError, match=ref.digest):
            blobs.get_range(ref.digest, len(PAYLOAD) - 1, 2)

    def test_compose_concatenates_the_blobs_in_order(self, store: ObjectStore) -> None:
        blobs = BlobStore(store)
        parts = [blobs.put(b"header|"), blobs.put(PAYLOAD), blobs.put(b"|footer")]

        ref = blobs.compose([part.digest for part in reversed(parts)])

        expected = b"|footer" + PAYLOAD + b"header|"
        assert ref.digest == hashlib.sha256(expected).hexdigest()
        assert ref.size == len(expected)
        assert blobs.get(ref.digest) == expected

    def test_compose_of_nothing_is_the_empty_blob(self, store: ObjectStore) -> None:
        ref = BlobStore(store).compose([])

        assert ref.digest == hashlib.sha256(b"").hexdigest()
        assert ref.size == 0

    def test_compose_with_a_missing_or_corrupt_part_stores_nothing(
        self, store: ObjectStore
    ) -> None:
        blobs = BlobStore(store)
        good = blobs.put(b"good part")
        bad = blobs.put(b"bad part")
        store.put(blob_key(bad.digest), b"bad pArt")
        missing = hashlib.sha256(b"missing part").hexdigest()

        with pytest.raises(ObjectNotFound, match=missing):
            blobs.compose([good.digest, missing])
        with pytest.raises(CorruptBlob, match=bad.digest):
            blobs.compose([good.digest, bad.digest])

        assert sorted(store.list("blobs/")) == sorted([blob_key(good.digest), blob_key(bad.digest)])

    def test_documents_round_trip_as_sorted_json(self, store: ObjectStore) -> None:
        docs = DocumentStore(store)

        docs.put("jobs/j1/spec", {"rounds": 3, "algorithm": "fedavg"})

        assert docs.get("jobs/j1/spec") == {"algorithm": "fedavg", "rounds": 3}
        assert store.get("docs/jobs/j1/spec") == b'{"algorithm": "fedavg", "rounds": 3}'
        assert docs.exists("jobs/j1/spec")
        assert not docs.exists("jobs/j2/spec")

    def test_documents_are_listed_relative_to_the_prefix(self, store: ObjectStore) -> None:
        docs = DocumentStore(store, prefix="meta")
        for key in ("jobs/j2/spec", "jobs/j1/spec", "sites/s1"):
            docs.put(key, {})
        store.put("elsewhere/x", b"{}")

        assert docs.list("jobs/") == ["jobs/j1/spec", "jobs/j2/spec"]
        assert docs.list("") == ["jobs/j1/spec", "jobs/j2/spec", "sites/s1"]

    def test_unreadable_documents_raise_naming_the_key(self, store: ObjectStore) -> None:
        docs = DocumentStore(store)
        store.put("docs/garbled", b"{not json")
        store.put("docs/a-list", b"[1, 2]")

        with pytest.raises(StorageError, match="'garbled' is not valid JSON"):
            docs.get("garbled")
        with pytest.raises(StorageError, match="'a-list' holds a list"):
            docs.get("a-list")
        with pytest.raises(ObjectNotFound, match="docs/absent"):
            docs.get("absent")


class CountingWrites:
    """A real store that also records which keys were written, to see what is rewritten."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.writes: list[str] = []

    def put(self, key: str, data: bytes | memoryview, *, durable: bool = True) -> None:
        self.writes.append(key)
        self.inner.put(key, data, durable=durable)

    def put_file(self, key: str, path: Path) -> None:
        self.writes.append(key)
        self.inner.put_file(key, path)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)
