"""Objects as files under a directory: the embedded default backend."""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from fedsilo.storage.base import (
    ObjectNotFound,
    StorageError,
    check_range,
    validate_key,
    validate_prefix,
)

# No key may contain '~', so a temporary file can never be mistaken for an object.
_TEMP_MARK = "~"


class LocalDirectoryStore:
    """Each key is a relative path under ``root``; writes are atomic renames."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).resolve()
        self._root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return f"directory {self._root}"

    def put(self, key: str, data: bytes | memoryview, *, durable: bool = True) -> None:
        self._write_atomically(key, lambda out: out.write(data), durable=durable)

    def put_file(self, key: str, path: Path) -> None:
        with Path(path).open("rb") as source:
            self._write_atomically(key, lambda out: shutil.copyfileobj(source, out, 1 << 20))

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key, self.describe()) from exc

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        # One chunk holds the whole range; chunk_size must be positive even when length is 0.
        return b"".join(self.iter_chunks(key, max(length, 1), offset, length))

    def iter_chunks(
        self, key: str, chunk_size: int = 1 << 20, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        with self._open(key) as file:
            remaining = check_range(key, offset, length, os.fstat(file.fileno()).st_size)
            file.seek(offset)
            while remaining > 0:
                chunk = file.read(min(chunk_size, remaining))
                if not chunk:
                    raise StorageError(f"object {key!r} in {self.describe()} shrank while read")
                remaining -= len(chunk)
                yield chunk

    def size(self, key: str) -> int:
        with self._open(key) as file:
            return os.fstat(file.fileno()).st_size

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        # Walk only the deepest directory the prefix names, not the whole store.
        directory = prefix.rpartition("/")[0]
        start = self._root / directory if directory else self._root
        keys = []
        for dirpath, _, filenames in os.walk(start):
            relative = Path(dirpath).relative_to(self._root)
            for name in filenames:
                key = (relative / name).as_posix()
                if _TEMP_MARK not in name and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def open_file(self, key: str) -> BinaryIO:
        """The object's file, unbuffered, for positional reads straight into a caller's buffer
        (the object is never rewritten in place: a put renames a new file over it)."""
        try:
            return self._path(key).open("rb", buffering=0)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key, self.describe()) from exc

    def delete(self, key: str) -> None:
        # Empty directories are left behind: removing them would race with a concurrent put
        # that has just created one, and list() ignores them anyway.
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self._path(key).unlink()

    def _path(self, key: str) -> Path:
        return self._root / validate_key(key)

    def _open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key, self.describe()) from exc

    def _write_atomically(
        self, key: str, fill: Callable[[BinaryIO], object], *, durable: bool = True
    ) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StorageError(
                f"cannot store {key!r} in {self.describe()}: a parent of it is an object"
            ) from exc
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}{_TEMP_MARK}", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            os.replace(temp, path)
        except IsADirectoryError as exc:
            os.unlink(temp)
            raise StorageError(
                f"cannot store {key!r} in {self.describe()}: other objects live under it"
            ) from exc
        except BaseException:
            os.unlink(temp)
            raise
        if durable:
            _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry itself is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
