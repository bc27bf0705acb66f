"""Per-service settings from environment variables: the contract the Helm charts set.

Every variable is `FEDSILO_<FIELD>`; each service's settings class lists exactly what it reads.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedsilo.audit import AuditLog


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

    def audit_log(self, service: str) -> AuditLog:
        return AuditLog(self.audit_dir / f"{service}.jsonl", service)


class StoreClientSettings(BaseSettings):
    """Services that read or write artifacts reach them through the model store."""

    model_config = SettingsConfigDict(env_prefix="FEDSILO_", extra="ignore", frozen=True)

    modelstore_address: str = Field(..., description="host:port of the modelstore service")
