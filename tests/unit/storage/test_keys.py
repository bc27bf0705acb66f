"""Key rules, storage settings and the store factory."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from fedsilo.storage import LocalDirectoryStore, StorageSettings, open_store, validate_key
from fedsilo.storage.base import validate_prefix
from fedsilo.storage.s3 import S3Store


@pytest.mark.parametrize(
    "key",
    ["model", "jobs/j-1/round=3/update_0.bin", "a/b/c", "v1.2", ".hidden", "A-Z_a=z"],
)
def test_valid_keys_are_returned_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("a/../b", "'..'"),
        ("..", "'..'"),
        ("a/./b", "'.'"),
        ("a//b", "empty"),
        ("a/", "empty"),
        ("a\\b", "backslash"),
        ("caf\u00e9", "outside"),
        ("a b", "outside"),
        ("a~tmp", "outside"),
        ("a:b", "outside"),
    ],
)
def test_invalid_keys_are_rejected_naming_the_key(key: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        validate_key(key)
    if key:
        assert repr(key) in str(caught.value)


@pytest.mark.parametrize("prefix", ["", "jobs/", "jobs/j1", "blobs/sha256/a"])
def test_valid_prefixes(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/jobs", "../", "a//", "a\\"])
def test_invalid_prefixes_are_rejected(prefix: str) -> None:
    with pytest.raises(ValueError, match="storage key"):
        validate_prefix(prefix)


def test_default_settings_open_a_directory_store(tmp_path: Path) -> None:
    settings = StorageSettings(path=tmp_path / "objects")

    store = open_store(settings)

    assert StorageSettings().backend == "directory"
    assert StorageSettings().path == Path(".fedsilo/objects")
    assert isinstance(store, LocalDirectoryStore)
    assert store.describe() == f"directory {(tmp_path / 'objects').resolve()}"


def test_s3_settings_name_every_missing_field() -> None:
    with pytest.raises(ValidationError, match="s3_endpoint, s3_access_key, s3_secret_key"):
        StorageSettings(backend="s3")
    with pytest.raises(ValidationError, match="needs s3_secret_key to be set"):
        StorageSettings(backend="s3", s3_endpoint="minio:9000", s3_access_key="fedsilo")


def test_complete_s3_settings_are_accepted_and_hide_the_secret() -> None:
    settings = StorageSettings(
        backend="s3", s3_endpoint="minio:9000", s3_access_key="fedsilo", s3_secret_key="hunter2"
    )

    assert settings.s3_bucket == "fedsilo"
    assert settings.s3_secure is True
    assert "hunter2" not in repr(settings)


def test_unknown_settings_and_backends_are_rejected() -> None:
    with pytest.raises(ValidationError, match="s3_bukket"):
        StorageSettings.model_validate({"s3_bukket": "x"})
    with pytest.raises(ValidationError, match="backend"):
        StorageSettings.model_validate({"backend": "gcs"})


def test_s3_endpoint_with_a_scheme_is_rejected() -> None:
    with pytest.raises(ValueError, match="'http://minio:9000' must be host\\[:port\\]"):
        S3Store("http://minio:9000", "key", "secret", "fedsilo", secure=False)
