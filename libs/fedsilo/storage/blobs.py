"""Content-addressed blobs and JSON documents on top of any ObjectStore."""

import hashlib
import json
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

from fedsilo.storage.base import (
    CorruptBlob,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    validate_key,
)
from fedsilo.storage.local import LocalDirectoryStore

_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BlobRef:
    """A stored blob: its sha256 digest (lowercase hex) and size in bytes."""

    digest: str
    size: int

    def __post_init__(self) -> None:
        _check_digest(self.digest)
        if self.size < 0:
            raise ValueError(f"blob {self.digest} has negative size {self.size}")


class BlobStore:
    """Blobs keyed by the sha256 of their content, so a blob is written once and never changes."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def put(self, data: bytes | memoryview, *, durable: bool = True) -> BlobRef:
        """Store `data` (bytes, or a byte view) under its digest.

        ``durable=False`` is for results that can be computed again (an aggregator's shard
        results): the store does not wait for the disk. A copy already there is then trusted
        only if it is whole, since a crash may have left it torn."""
        view = memoryview(data).cast("B")
        ref = BlobRef(hashlib.sha256(view).hexdigest(), len(view))
        key = blob_key(ref.digest)
        if not self._stored_whole(ref, check=not durable):
            self._store.put(key, view, durable=durable)
        return ref

    def _stored_whole(self, ref: BlobRef, *, check: bool) -> bool:
        key = blob_key(ref.digest)
        if not self._store.exists(key):
            return False
        if not check:
            return True
        try:
            return (
                self.stat(ref.digest).size == ref.size
                and ref.digest == hashlib.sha256(self._store.get(key)).hexdigest()
            )
        except ObjectNotFound:
            return False

    def put_stream(self, chunks: Iterable[bytes], *, expected_digest: str | None = None) -> BlobRef:
        """Store the concatenated chunks, holding at most one chunk in memory.

        Nothing is stored if the chunks raise or do not hash to ``expected_digest``.
        """
        if expected_digest is not None:
            _check_digest(expected_digest)
        hasher = hashlib.sha256()
        size = 0
        with tempfile.TemporaryDirectory(prefix="fedsilo-blob-") as spool_dir:
            spool = Path(spool_dir) / "blob"
            with spool.open("wb") as out:
                for chunk in chunks:
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            ref = BlobRef(hasher.hexdigest(), size)
            if expected_digest is not None and ref.digest != expected_digest:
                raise CorruptBlob(
                    f"stream for blob {expected_digest} hashes to {ref.digest}; nothing stored"
                )
            key = blob_key(ref.digest)
            if not self._store.exists(key):
                self._store.put_file(key, spool)
        return ref

    def get(self, digest: str, *, verify: bool = True) -> bytes:
        data = self._store.get(blob_key(digest))
        if verify:
            actual = hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise CorruptBlob(_corrupt_message(digest, actual, self._store))
        return data

    def get_range(self, digest: str, offset: int, length: int) -> bytes:
        """Return bytes [offset, offset + length); a part cannot be checked against the digest."""
        return self._store.get_range(blob_key(digest), offset, length)

    def iter_chunks(
        self, digest: str, chunk_size: int = 1 << 20, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        """Yield the blob in chunks; when it is read whole, CorruptBlob follows the last chunk."""
        chunks = self._store.iter_chunks(blob_key(digest), chunk_size, offset, length)
        if offset == 0 and length is None:
            return self._verified(digest, chunks)
        return chunks

    def local_file(self, digest: str) -> BinaryIO | None:
        """The blob's file when the store is a local directory (for positional reads), else
        None."""
        if isinstance(self._store, LocalDirectoryStore):
            return self._store.open_file(blob_key(digest))
        return None

    def stat(self, digest: str) -> BlobRef:
        return BlobRef(digest, self._store.size(blob_key(digest)))

    def exists(self, digest: str) -> bool:
        return self._store.exists(blob_key(digest))

    def compose(self, digests: Sequence[str]) -> BlobRef:
        """Store the concatenation of the blobs, in order, as a new blob; each part is verified."""
        keys = [blob_key(digest) for digest in digests]
        parts = (
            self._verified(digest, self._store.iter_chunks(key))
            for digest, key in zip(digests, keys, strict=True)
        )
        return self.put_stream(chain.from_iterable(parts))

    def _verified(self, digest: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        hasher = hashlib.sha256()
        for chunk in chunks:
            hasher.update(chunk)
            yield chunk
        actual = hasher.hexdigest()
        if actual != digest:
            raise CorruptBlob(_corrupt_message(digest, actual, self._store))


def blob_key(digest: str) -> str:
    """Return the object key of a blob: blobs/sha256/<first 2 hex>/<digest>."""
    _check_digest(digest)
    return f"blobs/sha256/{digest[:2]}/{digest}"


def _check_digest(digest: str) -> None:
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"blob digest {digest!r} is not 64 lowercase hex characters (sha256)")


def _corrupt_message(digest: str, actual: str, store: ObjectStore) -> str:
    return f"blob {digest} in {store.describe()} is corrupt: its content hashes to {actual}"


class DocumentStore:
    """JSON objects under ``<prefix>/<key>``, written with sorted keys."""

    def __init__(self, store: ObjectStore, prefix: str = "docs") -> None:
        self._store = store
        self._prefix = validate_key(prefix)

    def put(self, key: str, obj: dict[str, Any], *, durable: bool = True) -> None:
        self._store.put(self._key(key), json.dumps(obj, sort_keys=True).encode(), durable=durable)

    def get(self, key: str) -> dict[str, Any]:
        raw = self._store.get(self._key(key))
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise StorageError(f"document {key!r} is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise StorageError(f"document {key!r} holds a {type(obj).__name__}, not an object")
        return obj

    def exists(self, key: str) -> bool:
        return self._store.exists(self._key(key))

    def list(self, prefix: str = "") -> list[str]:
        """Return the sorted document keys, relative to this store's prefix."""
        base = f"{self._prefix}/"
        return [key.removeprefix(base) for key in self._store.list(base + prefix)]

    def _key(self, key: str) -> str:
        return f"{self._prefix}/{validate_key(key)}"
