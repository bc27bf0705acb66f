from __future__ import annotations

from pathlib import Path

import pytest

from fedsilo.keymanager.directory import KeyConflict, KeyDirectory, RoundKey


def test_keys_are_published_once_and_listed_in_order(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "k.db")
    assert directory.publish("j", 1, RoundKey("b", b"kb", "x25519", 1.0)) == 1
    assert directory.publish("j", 1, RoundKey("a", b"ka", "x25519", 2.0)) == 2
    assert directory.publish("j", 1, RoundKey("a", b"ka", "x25519", 3.0)) == 2
    assert [k.client_id for k in directory.list("j", 1)] == ["a", "b"]
    assert directory.list("j", 2) == []


def test_a_different_key_for_the_same_round_is_refused(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "k.db")
    directory.publish("j", 1, RoundKey("a", b"one", "x25519", 1.0))
    with pytest.raises(KeyConflict, match="different key"):
        directory.publish("j", 1, RoundKey("a", b"two", "x25519", 1.0))
    assert directory.list("j", 1)[0].public_key == b"one"
