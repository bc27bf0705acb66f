"""Per-service settings from environment variables: the contract the Helm charts set.

Every variable is `FEDSILO_<FIELD>`; each service's settings class lists exactly what it reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedsilo.audit import AuditLog
from fedsilo.rpc.tls import TlsConfig
from fedsilo.storage import StorageSettings


class ServiceSettings(BaseSettings):
    """What every service reads: where to listen, where to report readiness, how to stop."""

    model_config = SettingsConfigDict(env_prefix="FEDSILO_", extra="ignore", frozen=True)

    grpc_host: str = Field("127.0.0.1", description="address the gRPC server binds")
    grpc_port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics; 0 picks")
    ready_file: Path | None = Field(None, description="JSON with the bound ports, once serving")
    grace_s: float = Field(5.0, ge=0, description="SIGTERM: time in-flight RPCs get to finish")
    max_workers: int = Field(32, ge=1, description="gRPC handler threads")
    log_level: str = "INFO"
    audit_dir: Path = Field(Path(".fedsilo/audit"), description="append-only <service>.jsonl")
    health_port: int = Field(0, ge=0, le=65535, description="plaintext gRPC health for probes")
    tls_ca: Path | None = Field(None, description="the platform CA certificate (PEM)")
    tls_cert: Path | None = Field(None, description="this service's certificate (PEM)")
    tls_key: Path | None = Field(None, description="this service's private key (PEM)")
    insecure: bool = Field(False, description="plaintext gRPC, no identities: experiments only")

    def tls(self) -> TlsConfig | None:
        """This service's TLS material; on by default, off only when asked for by name."""
        if self.insecure:
            return None
        missing = [
            f"FEDSILO_{name.upper()}"
            for name in ("tls_ca", "tls_cert", "tls_key")
            if getattr(self, name) is None
        ]
        if missing:
            raise SystemExit(
                f"TLS is on by default: set {', '.join(missing)} (`fedsilo up` creates them "
                "under .fedsilo/tls), or FEDSILO_INSECURE=true for a plaintext experiment"
            )
        assert self.tls_ca and self.tls_cert and self.tls_key
        return TlsConfig.load(self.tls_ca, self.tls_cert, self.tls_key)

    def audit_log(self, service: str) -> AuditLog:
        return AuditLog(self.audit_dir / f"{service}.jsonl", service)


class StoreClientSettings(BaseSettings):
    """Services that read or write artifacts reach them through the model store."""

    model_config = SettingsConfigDict(env_prefix="FEDSILO_", extra="ignore", frozen=True)

    modelstore_address: str = Field(..., description="host:port of the modelstore service")


class ObjectStorageSettings(BaseSettings):
    """The object store behind the model store: the model store writes and reads it, and
    aggregator replicas read client updates from it directly."""

    model_config = SettingsConfigDict(env_prefix="FEDSILO_", extra="ignore", frozen=True)

    storage_backend: Literal["directory", "s3"] = "directory"
    storage_path: Path = Path(".fedsilo/objects")
    s3_endpoint: str | None = None
    s3_bucket: str = "fedsilo"
    s3_access_key: str | None = None
    s3_secret_key: str | None = Field(None, repr=False)
    s3_secure: bool = True
    s3_region: str | None = None

    def storage(self) -> StorageSettings:
        s3 = {name: getattr(self, name) for name in StorageSettings.model_fields if "s3_" in name}
        return StorageSettings(backend=self.storage_backend, path=self.storage_path, **s3)
