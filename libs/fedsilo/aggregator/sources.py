"""Where an aggregator replica reads blobs: straight from the object store (the scalable path:
replicas read in parallel, the model store is not in the way) or through the model store's
gRPC API. Either way a shard's inputs are streamed in chunks into the caller's buffers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.storage import BlobStore

# Bytes per request/stream chunk from the store.
STREAM_CHUNK_BYTES = 1 << 20


class ShardInputError(ValueError):
    """An input of the shard does not have the expected length or values."""


class RangeFiller(Protocol):
    def fill(self, out: memoryview) -> None:
        """Copy the range's next len(out) bytes into `out`."""
        ...

    def finish(self) -> None:
        """Check that the whole range was read, and release what was held."""
        ...


class BlobSource(Protocol):
    def read(self, digest: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of a blob."""
        ...

    def open_range(self, digest: str, offset: int, length: int, what: str) -> RangeFiller:
        """The same bytes, to be copied piece by piece into the caller's buffers."""
        ...


class ObjectStoreSource:
    """Blobs read from the object store the model store writes to (same settings)."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    def read(self, digest: str, offset: int, length: int) -> bytes:
        return self._blobs.get_range(digest, offset, length)

    def open_range(self, digest: str, offset: int, length: int, what: str) -> RangeFiller:
        file = self._blobs.local_file(digest)
        if file is not None:
            return FileRange(file, offset, length, what)
        return RangeReader(
            self._blobs.iter_chunks(digest, STREAM_CHUNK_BYTES, offset, length), length, what
        )


class ModelStoreSource:
    """Blobs read through the model store's gRPC API."""

    def __init__(self, models: ModelStoreClient) -> None:
        self._models = models

    def read(self, digest: str, offset: int, length: int) -> bytes:
        return self._models.download(digest, offset, length)

    def open_range(self, digest: str, offset: int, length: int, what: str) -> RangeFiller:
        return RangeReader(self._models.stream(digest, offset, length), length, what)


class FileRange:
    """Positional reads of a local file straight into the caller's buffers: one copy, from
    the page cache."""

    def __init__(self, file: BinaryIO, offset: int, length: int, what: str) -> None:
        size = os.fstat(file.fileno()).st_size
        if offset + length > size:
            file.close()
            raise ShardInputError(f"{what} ended {offset + length - size} bytes early")
        self._file = file
        self._position = offset
        self._end = offset + length
        self._what = what

    def fill(self, out: memoryview) -> None:
        if self._position + len(out) > self._end:
            raise ValueError(f"{self._what}: asked past the end of its range")
        done = 0
        while done < len(out):
            read = os.preadv(self._file.fileno(), [out[done:]], self._position + done)
            if read == 0:
                raise ShardInputError(f"{self._what} was truncated while being read")
            done += read
        self._position += done

    def finish(self) -> None:
        self._file.close()
        if self._position != self._end:
            raise ShardInputError(f"{self._what}: {self._end - self._position} bytes unread")


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
