"""The object-store interface, its errors and the rules for keys."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

_SEGMENT = re.compile(r"[A-Za-z0-9._=-]+")


class StorageError(Exception):
    """An object store could not do what was asked."""


class ObjectNotFound(StorageError):
    """No object is stored under the key."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(f"object {key!r} not found in {where}")
        self.key = key


class CorruptBlob(StorageError):
    """A blob's content does not hash to its digest."""


class ObjectStore(Protocol):
    """Flat key -> bytes storage; every write is atomic, so readers never see a partial object."""

    def put(self, key: str, data: bytes | memoryview, *, durable: bool = True) -> None:
        """Store ``data`` (bytes, or a byte view) under ``key``, replacing any object already
        there. ``durable=False`` is for results that can be computed again: the store need not
        wait for them to reach the disk (after a crash they may be missing or torn)."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Store the content of the local file ``path`` under ``key``."""
        ...

    def get(self, key: str) -> bytes:
        """Return the whole object; ObjectNotFound if absent."""
        ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Return exactly bytes [offset, offset + length); StorageError if that is past the end."""
        ...

    def iter_chunks(
        self, key: str, chunk_size: int = 1 << 20, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        """Yield the object (or the given range of it) in chunks of at most ``chunk_size``."""
        ...

    def size(self, key: str) -> int:
        """Return the object's size in bytes; ObjectNotFound if absent."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]:
        """Return the sorted keys that start with ``prefix`` ("" lists everything)."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting an absent key is not an error."""
        ...

    def describe(self) -> str:
        """Say where the objects live, e.g. "directory /srv/objects"."""
        ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a '/'-separated relative name of [A-Za-z0-9._=-] segments."""
    if not key:
        raise ValueError("storage key is empty")
    if "\\" in key:
        raise ValueError(f"storage key {key!r} contains a backslash; separate segments with '/'")
    if key.startswith("/"):
        raise ValueError(f"storage key {key!r} is absolute; keys are relative names")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"storage key {key!r} has an empty, '.' or '..' segment")
        if not _SEGMENT.fullmatch(segment):
            raise ValueError(
                f"storage key {key!r} has segment {segment!r} with characters "
                "outside [A-Za-z0-9._=-]"
            )
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is "" or a key, optionally ending in '/'."""
    if prefix:
        validate_key(prefix.removesuffix("/"))
    return prefix


def check_range(key: str, offset: int, length: int | None, size: int) -> int:
    """Return the length of the range [offset, offset + length) of an object of ``size`` bytes.

    ``length`` None means "to the end". Raises StorageError when the range is not inside
    the object, since a silently short read would corrupt whatever the caller assembles.
    """
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"range of {key!r} has negative offset {offset} or length {length}")
    if offset > size:
        raise StorageError(f"offset {offset} is past the end of object {key!r} of {size} bytes")
    if length is None:
        return size - offset
    if offset + length > size:
        raise StorageError(
            f"range [{offset}, {offset + length}) exceeds object {key!r} of {size} bytes"
        )
    return length
