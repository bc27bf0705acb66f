"""Where an aggregator replica reads blobs: straight from the object store (the scalable path:
replicas read in parallel, the model store is not in the way) or through the model store's
gRPC API. Either way a shard's inputs are streamed in chunks into the caller's buffers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.storage import BlobStore

# Bytes per request/stream chunk from the store.
STREAM_CHUNK_BYTES = 1 << 20


class ShardInputError(ValueError):
    """An input of the shard does not have the expected length or values."""


class BlobSource(Protocol):
    def read(self, digest: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of a blob."""
        ...

    def stream(self, digest: str, offset: int, length: int) -> Iterator[bytes]:
        """The same bytes, in chunks as they arrive."""
        ...


class ObjectStoreSource:
    """Blobs read from the object store the model store writes to (same settings)."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    def read(self, digest: str, offset: int, length: int) -> bytes:
        return self._blobs.get_range(digest, offset, length)

    def stream(self, digest: str, offset: int, length: int) -> Iterator[bytes]:
        return self._blobs.iter_chunks(digest, STREAM_CHUNK_BYTES, offset, length)


class ModelStoreSource:
    """Blobs read through the model store's gRPC API."""

    def __init__(self, models: ModelStoreClient) -> None:
        self._models = models

    def read(self, digest: str, offset: int, length: int) -> bytes:
        return self._models.download(digest, offset, length)

    def stream(self, digest: str, offset: int, length: int) -> Iterator[bytes]:
        return self._models.stream(digest, offset, length)


class RangeReader:
    """Fills buffers, in order, from a stream that must hold exactly `length` bytes."""

    def __init__(self, chunks: Iterator[bytes], length: int, what: str) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")
        self._left = length
        self._what = what

    def fill(self, out: memoryview) -> None:
        """Copy the next len(out) bytes into `out`."""
        if len(out) > self._left:
            raise ValueError(f"{self._what}: asked for {len(out)} bytes, {self._left} remain")
        filled = 0
        while filled < len(out):
            if not self._pending:
                chunk = next(self._chunks, None)
                if chunk is None:
                    raise ShardInputError(f"{self._what} ended {self._left - filled} bytes early")
                self._pending = memoryview(chunk)
            take = min(len(self._pending), len(out) - filled)
            out[filled : filled + take] = self._pending[:take]
            self._pending = self._pending[take:]
            filled += take
        self._left -= filled

    def finish(self) -> None:
        """All `length` bytes were taken and the stream has nothing more."""
        if self._left or self._pending or next(self._chunks, None) is not None:
            raise ShardInputError(f"{self._what} is longer than its range")
