"""Objects in an S3 bucket (MinIO or any S3), through the minio client."""

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from urllib3 import BaseHTTPResponse

from fedsilo.storage.base import (
    ObjectNotFound,
    StorageError,
    check_range,
    validate_key,
    validate_prefix,
)


class S3Store:
    """Keys are object names in one bucket, created on first use if missing."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = True,
        region: str | None = None,
    ) -> None:
        if "://" in endpoint:
            raise ValueError(
                f"S3 endpoint {endpoint!r} must be host[:port] without a scheme; "
                "pass secure=False for plain http"
            )
        self._client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region
        )
        self._bucket = bucket
        self._where = f"s3 {'https' if secure else 'http'}://{endpoint}/{bucket}"
        with self._errors(bucket):
            self._ensure_bucket(region)

    def describe(self) -> str:
        return self._where

    def put(self, key: str, data: bytes | memoryview, *, durable: bool = True) -> None:
        # An S3 PUT is durable when it returns; there is nothing cheaper to ask for.
        view = memoryview(data).cast("B")
        with self._errors(validate_key(key)):
            self._client.put_object(self._bucket, key, io.BytesIO(view), len(view))

    def put_file(self, key: str, path: Path) -> None:
        with self._errors(validate_key(key)):
            self._client.fput_object(self._bucket, key, str(path))

    def get(self, key: str) -> bytes:
        with self._errors(validate_key(key)), self._response(key, 0, 0) as response:
            return response.read()

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        validate_key(key)
        if offset < 0 or length <= 0:
            # Nothing to download: the size check rejects the range or it is empty.
            check_range(key, offset, length, self.size(key))
            return b""
        with self._errors(key):
            try:
                with self._response(key, offset, length) as response:
                    data = response.read()
            except S3Error as exc:
                # S3 answers 416 for an offset at or past the end; the size check below says so.
                if exc.code != "InvalidRange":
                    raise
                data = b""
        if len(data) != length:
            # S3 silently truncates a range that runs past the end; turn that into an error.
            check_range(key, offset, length, self.size(key))
            raise StorageError(f"object {key!r} in {self._where} changed while being read")
        return data

    def iter_chunks(
        self, key: str, chunk_size: int = 1 << 20, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        length = check_range(key, offset, length, self.size(key))
        if length == 0:
            return
        delivered = 0
        with self._errors(key), self._response(key, offset, length) as response:
            for chunk in response.stream(chunk_size):
                delivered += len(chunk)
                yield chunk
        if delivered != length:
            raise StorageError(f"object {key!r} in {self._where} changed while being read")

    def size(self, key: str) -> int:
        with self._errors(validate_key(key)):
            size = self._client.stat_object(self._bucket, key).size
        if size is None:
            raise StorageError(f"{self._where} reported no size for object {key!r}")
        return size

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        with self._errors(validate_prefix(prefix)):
            objects = self._client.list_objects(self._bucket, prefix=prefix, recursive=True)
            return sorted(obj.object_name for obj in objects if obj.object_name is not None)

    def delete(self, key: str) -> None:
        with self._errors(validate_key(key)):
            self._client.remove_object(self._bucket, key)

    def _ensure_bucket(self, region: str | None) -> None:
        if self._client.bucket_exists(self._bucket):
            return
        try:
            self._client.make_bucket(self._bucket, location=region)
        except S3Error as exc:
            # Another process created it between the check and the create.
            if exc.code != "BucketAlreadyOwnedByYou":
                raise

    @contextmanager
    def _response(self, key: str, offset: int, length: int) -> Iterator[BaseHTTPResponse]:
        # minio reads the whole object when offset and length are both 0.
        response = self._client.get_object(self._bucket, key, offset=offset, length=length)
        try:
            yield response
        finally:
            response.close()
            response.release_conn()

    @contextmanager
    def _errors(self, name: str) -> Iterator[None]:
        """Turn minio and transport errors into StorageError naming the key or bucket."""
        try:
            yield
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                raise ObjectNotFound(name, self._where) from exc
            raise StorageError(
                f"{self._where} refused {name!r}: {exc.code}: {exc.message}"
            ) from exc
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise StorageError(f"{self._where} failed on {name!r}: {exc}") from exc
