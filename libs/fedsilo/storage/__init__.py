"""Object storage: one interface, a directory and an S3 backend, blobs and documents on top."""

from fedsilo.storage.base import (
    CorruptBlob,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    validate_key,
)
from fedsilo.storage.blobs import BlobRef, BlobStore, DocumentStore, blob_key
from fedsilo.storage.factory import StorageSettings, open_store
from fedsilo.storage.local import LocalDirectoryStore
from fedsilo.storage.s3 import S3Store

__all__ = [
    "BlobRef",
    "BlobStore",
    "CorruptBlob",
    "DocumentStore",
    "LocalDirectoryStore",
    "ObjectNotFound",
    "ObjectStore",
    "S3Store",
    "StorageError",
    "StorageSettings",
    "blob_key",
    "open_store",
    "validate_key",
]
