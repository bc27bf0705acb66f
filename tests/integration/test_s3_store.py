"""S3Store against a real S3-protocol server process on a localhost port chosen at run time.

No MinIO server binary can be installed on this machine, so moto's standalone server
(``moto_server``, from the dev dependencies) stands in as a real S3-protocol server process;
S3Store talks to it through the same minio client it uses against MinIO. Every test gets a
fresh bucket, and the directory backend's behavioural checks run here unchanged.
"""

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fedsilo.storage import S3Store, StorageSettings, open_store
from unit.storage.store_contract import BlobStoreContract, ObjectStoreContract

pytestmark = pytest.mark.slow

ACCESS_KEY = "fedsilo-test"
SECRET_KEY = "fedsilo-test-secret"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_answering(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"moto_server exited with {server.returncode}:\n{log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # an HTTP error status is still an answer
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"moto_server did not answer at {url} within 30 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start moto_server on a free port and yield its host:port."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    moto_server = Path(sys.executable).parent / "moto_server"
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_answering(f"http://127.0.0.1:{port}/", server, log)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


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
