"""The operator REST API (FastAPI; OpenAPI docs at /docs), used by the `fedsilo` CLI."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field

from fedsilo.audit import AuditLog
from fedsilo.jobs import JobSpecError, parse_job_spec
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.rpc.errors import RpcRejection
from fedsilo.scheduler.engine import Scheduler
from fedsilo.v1 import keymanager_pb2, keymanager_pb2_grpc, registry_pb2, registry_pb2_grpc

_HTTP_STATUS = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def _http_error(rejection: RpcRejection) -> HTTPException:
    return HTTPException(
        status_code=_HTTP_STATUS.get(rejection.code, 500), detail=rejection.message
    )


def _grpc_http_error(error: grpc.RpcError) -> HTTPException:
    code = error.code()
    return HTTPException(status_code=_HTTP_STATUS.get(code, 502), detail=error.details())


def _message_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class SiteRequest(BaseModel):
    site: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="the institution")
    ttl_s: float = Field(
        24 * 3600.0,
        gt=0,
        le=30 * 24 * 3600.0,
        description="how long the enrollment token stays valid",
    )


class RevokeRequest(BaseModel):
    reason: str = Field("revoked by the operator", max_length=500)


class ExcludeRequest(BaseModel):
    site: str = Field(..., min_length=1, max_length=63)
    reason: str = Field("excluded by the operator", max_length=500)


class ContributionsRequest(BaseModel):
    """A contribution computation's result (fedsilo.cli.contributions)."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(..., min_length=1, max_length=64)
    validation: str = Field(..., max_length=500, description="what the coalitions were scored on")
    method: str = Field(..., max_length=200)
    shapley: dict[str, float]
    leave_one_out: dict[str, float]
    rounds: int = Field(..., ge=1)
    grand_coalition: float
    empty_coalition: float
    per_round: list[dict[str, float]] = Field(default_factory=list)


_BEARER = HTTPBearer(auto_error=False)


class OperatorGuard:
    """Every /v1 call needs `Authorization: Bearer <operator token>` (when one is set)."""

    def __init__(self, token: str | None) -> None:
        self._token = token

    def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
    ) -> None:
        if self._token is None:
            return
        if credentials is None or not hmac.compare_digest(credentials.credentials, self._token):
            raise HTTPException(
                status_code=401,
                detail="operator token missing or wrong",
                headers={"WWW-Authenticate": "Bearer"},
            )


def build_app(
    scheduler: Scheduler,
    models: ModelStoreClient,
    registry: registry_pb2_grpc.RegistryStub,
    keymanager: keymanager_pb2_grpc.KeyManagerStub,
    operator_token: str | None,
    audit: AuditLog | None = None,
) -> FastAPI:
    app = FastAPI(
        title="fedsilo operator API",
        version="1",
        description="Submit and watch federated jobs, pull models, add and revoke sites. "
        "Every /v1 call needs the operator token as a bearer token.",
    )

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app_v1 = APIRouter(dependencies=[Depends(OperatorGuard(operator_token))])

    @app_v1.post("/v1/sites", status_code=201)
    def add_site(request: SiteRequest) -> dict[str, Any]:
        """A one-time enrollment token for the site's client agent (shown once)."""
        try:
            issued = keymanager.CreateEnrollmentToken(
                keymanager_pb2.CreateEnrollmentTokenRequest(site=request.site, ttl_s=request.ttl_s)
            )
        except grpc.RpcError as error:
            raise _grpc_http_error(error) from None
        return {"site": request.site, "token": issued.token, "expires_at": issued.expires_at}

    @app_v1.post("/v1/clients/{client_id}/revoke")
    def revoke_client(client_id: str, request: RevokeRequest) -> dict[str, Any]:
        try:
            revoked = keymanager.RevokeClient(
                keymanager_pb2.RevokeClientRequest(client_id=client_id, reason=request.reason)
            )
        except grpc.RpcError as error:
            raise _grpc_http_error(error) from None
        return {"client_id": client_id, "certificates_revoked": revoked.certificates_revoked}

    @app_v1.post("/v1/jobs", status_code=201)
    def submit_job(
        spec: Annotated[dict[str, Any], Body(description="a job spec")],
    ) -> dict[str, Any]:
        try:
            parsed = parse_job_spec(spec)
        except JobSpecError as error:
            raise HTTPException(status_code=400, detail=str(error)) from None
        try:
            return scheduler.job_status(scheduler.submit_job(parsed))
        except RpcRejection as rejection:
            raise _http_error(rejection) from None

    @app_v1.get("/v1/jobs")
    def list_jobs() -> list[dict[str, Any]]:
        return scheduler.list_jobs()

    @app_v1.get("/v1/jobs/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        try:
            return scheduler.job_status(job_id)
        except RpcRejection as rejection:
            raise _http_error(rejection) from None

    @app_v1.post("/v1/jobs/{job_id}/cancel")
    def cancel_job(job_id: str) -> dict[str, Any]:
        try:
            return scheduler.cancel_job(job_id)
        except RpcRejection as rejection:
            raise _http_error(rejection) from None

    @app_v1.post("/v1/jobs/{job_id}/exclude")
    def exclude_site(job_id: str, request: ExcludeRequest) -> dict[str, Any]:
        """Leave a site out of the job's future rounds (audited)."""
        try:
            status = scheduler.exclude_site(job_id, request.site, request.reason)
        except RpcRejection as rejection:
            raise _http_error(rejection) from None
        if audit is not None:
            audit.append(
                "site_excluded",
                actor="operator",
                job_id=job_id,
                site=request.site,
                reason=request.reason,
            )
        return status

    @app_v1.get("/v1/jobs/{job_id}/contributions/inputs")
    def contribution_inputs(job_id: str) -> dict[str, Any]:
        """Each trained round's starting model and accepted updates (plaintext jobs only)."""
        try:
            inputs = scheduler.contribution_inputs(job_id)
        except RpcRejection as rejection:
            raise _http_error(rejection) from None
        if audit is not None:
            audit.append("updates_listed", actor="operator", job_id=job_id)
        return inputs

    @app_v1.get("/v1/jobs/{job_id}/blobs/{digest}")
    def job_blob(job_id: str, digest: str) -> StreamingResponse:
        """One of the job's models or accepted updates, as stored (float32, little-endian)."""
        try:
            scheduler.job_blob(job_id, digest)
        except RpcRejection as rejection:
            raise _http_error(rejection) from None
        if audit is not None:
            audit.append("blob_read", actor="operator", job_id=job_id, digest=digest)
        return StreamingResponse(
            _blob_chunks(models, digest), media_type="application/octet-stream"
        )

    @app_v1.post("/v1/jobs/{job_id}/contributions")
    def record_contributions(job_id: str, request: ContributionsRequest) -> dict[str, Any]:
        """Keep per-site contribution scores with the job (audited)."""
        try:
            status = scheduler.record_contributions(job_id, request.model_dump())
        except RpcRejection as rejection:
            raise _http_error(rejection) from None
        if audit is not None:
            audit.append(
                "contributions_recorded",
                actor="operator",
                job_id=job_id,
                shapley=request.shapley,
                validation=request.validation,
            )
        return status

    @app_v1.get("/v1/jobs/{job_id}/models")
    def list_models(job_id: str) -> list[dict[str, Any]]:
        try:
            return [_message_json(record) for record in models.list_models(job_id)]
        except grpc.RpcError as error:
            raise _grpc_http_error(error) from None

    @app_v1.get("/v1/jobs/{job_id}/models/{round_}")
    def get_model(job_id: str, round_: int) -> dict[str, Any]:
        """Round -1 is the latest stored model."""
        try:
            return _message_json(models.get_model(job_id, round_))
        except grpc.RpcError as error:
            raise _grpc_http_error(error) from None

    @app_v1.get("/v1/jobs/{job_id}/models/{round_}/weights")
    def model_weights(job_id: str, round_: int) -> StreamingResponse:
        """The flat little-endian float32 parameter vector, laid out as the manifest says."""
        try:
            record = models.get_model(job_id, round_)
        except grpc.RpcError as error:
            raise _grpc_http_error(error) from None

        return StreamingResponse(
            _blob_chunks(models, record.blob.digest),
            media_type="application/octet-stream",
            headers={
                "X-Fedsilo-Model-Version": record.version,
                "X-Fedsilo-Round": str(record.round),
            },
        )

    @app_v1.get("/v1/sites")
    def list_sites() -> list[dict[str, Any]]:
        try:
            response = registry.ListClients(registry_pb2.ListClientsRequest())
        except grpc.RpcError as error:
            raise _grpc_http_error(error) from None
        return [_message_json(client) for client in response.clients]

    app.include_router(app_v1)
    return app


def _blob_chunks(models: ModelStoreClient, digest: str) -> Iterator[bytes]:
    from fedsilo.v1 import modelstore_pb2

    for chunk in models.stub.DownloadBlob(modelstore_pb2.DownloadBlobRequest(digest=digest)):
        yield chunk.data
