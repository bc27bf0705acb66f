"""Storage settings and the one place that turns them into an ObjectStore."""

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedsilo.storage.base import ObjectStore
from fedsilo.storage.local import LocalDirectoryStore


class StorageSettings(BaseModel):
    """Where objects live: a local directory (the default) or an S3 bucket."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["directory", "s3"] = "directory"
    path: Path = Path(".fedsilo/objects")
    s3_endpoint: str | None = None
    s3_bucket: str = "fedsilo"
    s3_access_key: str | None = None
    # Kept out of repr so that logging the settings never prints the secret.
    s3_secret_key: str | None = Field(default=None, repr=False)
    s3_secure: bool = True
    s3_region: str | None = None

    @model_validator(mode="after")
    def _s3_needs_endpoint_and_credentials(self) -> Self:
        if self.backend == "s3":
            required = ("s3_endpoint", "s3_access_key", "s3_secret_key")
            missing = [name for name in required if not getattr(self, name)]
            if missing:
                raise ValueError(f"storage backend 's3' needs {', '.join(missing)} to be set")
        return self


def open_store(settings: StorageSettings) -> ObjectStore:
    """Return the object store the settings describe."""
    if settings.backend == "directory":
        return LocalDirectoryStore(settings.path)
    # The validator guarantees these are set for the s3 backend.
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    from fedsilo.storage.s3 import S3Store  # its client library only where it is used

    return S3Store(
        settings.s3_endpoint,
        settings.s3_access_key,
        settings.s3_secret_key,
        settings.s3_bucket,
        secure=settings.s3_secure,
        region=settings.s3_region,
    )
