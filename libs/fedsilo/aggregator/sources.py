"""Where an aggregator replica reads blobs: straight from the object store (the scalable path:
replicas read in parallel, the model store is not in the way) or through the model store's
gRPC API. Either way a shard's inputs are taken in pieces, without copies where the bytes are
already in memory in one piece."""

from __future__ import annotations

import mmap
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
    def take(self, size: int) -> memoryview:
        """The range's next `size` bytes, valid until the next call: a view of the source's
        own memory where it has the bytes in one piece (a mapped file, a received chunk),
        else a copy in the reader's buffer."""
        ...

    def finish(self) -> None:
        """Check that the whole range was read, and release what was held."""
        ...


class BlobSource(Protocol):
    def read(self, digest: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of a blob."""
        ...

    def open_range(self, digest: str, offset: int, length: int, what: str) -> RangeFiller:
        """The same bytes, to be taken piece by piece."""
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
    """A local file's range, mapped: pieces are views of the page cache, never copied.

    Blobs are immutable and replaced only by rename, so the mapped file cannot shrink
    underneath (which would fault)."""

    def __init__(self, file: BinaryIO, offset: int, length: int, what: str) -> None:
        with file:
            size = os.fstat(file.fileno()).st_size
            if offset + length > size:
                raise ShardInputError(f"{what} ended {offset + length - size} bytes early")
            # Only the range: the rest of the file is not this reader's business.
            start = offset - offset % mmap.ALLOCATIONGRANULARITY
            self._map = (
                mmap.mmap(
                    file.fileno(),
                    offset + length - start,
                    flags=mmap.MAP_SHARED,
                    prot=mmap.PROT_READ,
                    offset=start,
                )
                if length
                else None
            )
        self._view = memoryview(self._map or b"")[offset - start :]
        self._position = 0
        self._what = what

    def take(self, size: int) -> memoryview:
        if self._position + size > len(self._view):
            raise ValueError(f"{self._what}: asked past the end of its range")
        piece = self._view[self._position : self._position + size]
        self._position += size
        return piece

    def finish(self) -> None:
        left = len(self._view) - self._position
        # The mapping goes when the last view of it does.
        self._view, self._map = memoryview(b""), None
        if left:
            raise ShardInputError(f"{self._what}: {left} bytes unread")


class RangeReader:
    """Pieces, in order, of a stream that must hold exactly `length` bytes: views of the
    received chunks where a piece lies within one, else copied together."""

    def __init__(self, chunks: Iterator[bytes], length: int, what: str) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")
        self._left = length
        self._what = what
        self._buffer = bytearray()

    def take(self, size: int) -> memoryview:
        if size > self._left:
            raise ValueError(f"{self._what}: asked for {size} bytes, {self._left} remain")
        if not self._pending:
            self._pending = self._next_chunk(self._left)
        if len(self._pending) >= size:
            piece, self._pending = self._pending[:size], self._pending[size:]
            self._left -= size
            return piece
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        out = memoryview(self._buffer)[:size]
        filled = 0
        while filled < size:
            if not self._pending:
                self._pending = self._next_chunk(self._left - filled)
            step = min(len(self._pending), size - filled)
            out[filled : filled + step] = self._pending[:step]
            self._pending = self._pending[step:]
            filled += step
        self._left -= size
        return out

    def _next_chunk(self, undelivered: int) -> memoryview:
        chunk = next(self._chunks, None)
        if chunk is None:
            raise ShardInputError(f"{self._what} ended {undelivered} bytes early")
        return memoryview(chunk)

    def finish(self) -> None:
        """All `length` bytes were taken and the stream has nothing more."""
        if self._left or self._pending or next(self._chunks, None) is not None:
            raise ShardInputError(f"{self._what} is longer than its range")
