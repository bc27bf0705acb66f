"""S3Store against a real S3-protocol server process on a localhost port chosen at run time.

No MinIO server binary can be installed on this machine, so moto's standalone server
(``moto_server``, from the dev dependencies) stands in as a real S3-protocol server process;
S3Store talks to it through the same minio client it uses against MinIO. Every test gets a
fresh bucket, and the directory backend's behavioural checks run here unchanged.
"""

import uuid
from pathlib import Path

import pytest
from unit.storage.store_contract import BlobStoreContract, ObjectStoreContract

from fedsilo.storage import StorageSettings, open_store
from fedsilo.storage.s3 import S3Store

from .conftest import ACCESS_KEY, SECRET_KEY

pytestmark = pytest.mark.slow


def _fresh_store(endpoint: str) -> S3Store:
    return S3Store(endpoint, ACCESS_KEY, SECRET_KEY, f"test-{uuid.uuid4().hex}", secure=False)


class TestS3Store(ObjectStoreContract):
    @pytest.fixture
    def store(self, s3_endpoint: str) -> S3Store:
        return _fresh_store(s3_endpoint)


class TestBlobStoreOnS3(BlobStoreContract):
    @pytest.fixture
    def store(self, s3_endpoint: str) -> S3Store:
        return _fresh_store(s3_endpoint)


def test_an_existing_bucket_is_reused(s3_endpoint: str) -> None:
    bucket = f"test-{uuid.uuid4().hex}"
    S3Store(s3_endpoint, ACCESS_KEY, SECRET_KEY, bucket, secure=False).put("model", b"v1")

    reopened = S3Store(s3_endpoint, ACCESS_KEY, SECRET_KEY, bucket, secure=False)

    assert reopened.get("model") == b"v1"
    assert reopened.describe() == f"s3 http://{s3_endpoint}/{bucket}"


def test_open_store_builds_an_s3_store_from_settings(s3_endpoint: str) -> None:
    settings = StorageSettings(
        backend="s3",
        s3_endpoint=s3_endpoint,
        s3_bucket=f"test-{uuid.uuid4().hex}",
        s3_access_key=ACCESS_KEY,
        s3_secret_key=SECRET_KEY,
        s3_secure=False,
    )

    store = open_store(settings)
    store.put("jobs/j1/spec", b"{}")

    assert isinstance(store, S3Store)
    assert store.list("jobs/") == ["jobs/j1/spec"]


def test_a_federation_stores_its_models_in_s3(s3_endpoint: str, tmp_path: Path) -> None:
    """The modelstore service on the S3 backend: a job's models and updates land in the bucket."""
    from fedsilo.storage import BlobStore

    from .conftest import FAST_LIVENESS, require_heart_data, small_job, start_federation

    bucket = f"fedsilo-{uuid.uuid4().hex[:8]}"
    s3_env = {
        "FEDSILO_STORAGE_BACKEND": "s3",
        "FEDSILO_S3_ENDPOINT": s3_endpoint,
        "FEDSILO_S3_BUCKET": bucket,
        "FEDSILO_S3_ACCESS_KEY": ACCESS_KEY,
        "FEDSILO_S3_SECRET_KEY": SECRET_KEY,
        "FEDSILO_S3_SECURE": "false",
    }
    federation = start_federation(
        tmp_path / "state",
        require_heart_data(),
        aggregators=1,
        extra_env={**FAST_LIVENESS, **s3_env},
    )
    try:
        status = federation.run_job(small_job({"name": "fedavg"}, rounds=2))
    finally:
        federation.plane.stop()
    assert status["state"] == "completed", status["error"]
    assert not (tmp_path / "state" / "objects").exists()
    store = S3Store(s3_endpoint, ACCESS_KEY, SECRET_KEY, bucket, secure=False)
    assert BlobStore(store).exists(status["model_version"])
    assert len(store.list(f"docs/models/{status['job_id']}/")) == 3
