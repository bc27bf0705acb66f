"""LocalDirectoryStore: the shared object-store behaviour plus what is special to files."""

import os
from pathlib import Path

import pytest

from fedsilo.storage import LocalDirectoryStore, ObjectNotFound, StorageError

from .store_contract import ObjectStoreContract


class TestLocalDirectoryStore(ObjectStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalDirectoryStore:
        return LocalDirectoryStore(tmp_path / "objects")


def test_objects_are_files_under_the_root(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path / "deep" / "objects")

    store.put("jobs/j1/model", b"weights")

    assert (tmp_path / "deep/objects/jobs/j1/model").read_bytes() == b"weights"
    assert store.describe() == f"directory {(tmp_path / 'deep/objects').resolve()}"
    assert LocalDirectoryStore(tmp_path / "deep/objects").get("jobs/j1/model") == b"weights"


def test_failed_write_keeps_the_old_object_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalDirectoryStore(tmp_path)
    store.put("model", b"old weights")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.put("model", b"new weights that never fully reach the disk")
    monkeypatch.undo()

    assert store.get("model") == b"old weights"
    assert os.listdir(tmp_path) == ["model"]


def test_put_file_of_a_missing_source_stores_nothing(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path / "objects")

    with pytest.raises(FileNotFoundError):
        store.put_file("model", tmp_path / "absent.bin")

    assert store.list("") == []


def test_leftover_temporary_files_are_not_listed(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path)
    store.put("a/model", b"x")
    # What a writer killed between create and rename leaves behind.
    (tmp_path / "a" / ".model~k2j4x9").write_bytes(b"partial")

    assert store.list("") == ["a/model"]


def test_a_key_cannot_be_both_an_object_and_a_parent_of_objects(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path)
    store.put("a/b", b"x")
    store.put("c", b"y")

    with pytest.raises(StorageError, match=r"store 'a' in .*: other objects live under it"):
        store.put("a", b"z")
    with pytest.raises(StorageError, match=r"store 'c/d' in .*: a parent of it is an object"):
        store.put("c/d", b"z")
    with pytest.raises(ObjectNotFound, match="'a'"):
        store.get("a")
    assert not store.exists("a")
    assert store.list("") == ["a/b", "c"]


def test_chunk_size_must_be_positive(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path)
    store.put("a", b"x")

    with pytest.raises(ValueError, match="chunk_size"):
        list(store.iter_chunks("a", chunk_size=0))
