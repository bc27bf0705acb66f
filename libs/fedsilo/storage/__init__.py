"""Object storage: one interface, a directory and an S3 backend, blobs and documents on top.

The S3 backend (fedsilo.storage.s3) is imported only where it is used: its client library
costs every service that stores in a directory about 7 MiB of memory."""

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

__all__ = [
    "BlobRef",
    "BlobStore",
    "CorruptBlob",
    "DocumentStore",
    "LocalDirectoryStore",
    "ObjectNotFound",
    "ObjectStore",
    "StorageError",
    "StorageSettings",
    "blob_key",
    "open_store",
    "validate_key",
]
