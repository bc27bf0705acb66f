"""The operator REST API (FastAPI; OpenAPI docs at /docs), used by the `fedsilo` CLI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import grpc
from fastapi import Body, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from fedsilo.jobs import JobSpecError, parse_job_spec
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.rpc.errors import RpcRejection
from fedsilo.scheduler.engine import Scheduler
from fedsilo.v1 import registry_pb2, registry_pb2_grpc
from google.protobuf import json_format

_HTTP_STATUS = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
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


def build_app(
    scheduler: Scheduler, models: ModelStoreClient, registry: registry_pb2_grpc.RegistryStub
) -> FastAPI:
    app = FastAPI(
        title="fedsilo operator API",
        version="1",
        description="Submit and watch federated jobs, pull models, list sites.",
    )

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/jobs", status_code=201)
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

    @app.get("/v1/jobs")
    def list_jobs() -> list[dict[str, Any]]:
        return scheduler.list_jobs()

    @app.get("/v1/jobs/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        try:
            return scheduler.job_status(job_id)
        except RpcRejection as rejection:
            raise _http_error(rejection) from None

    @app.post("/v1/jobs/{job_id}/cancel")
    def cancel_job(job_id: str) -> dict[str, Any]:
        try:
            return scheduler.cancel_job(job_id)
        except RpcRejection as rejection:
            raise _http_error(rejection) from None

    @app.get("/v1/jobs/{job_id}/models")
    def list_models(job_id: str) -> list[dict[str, Any]]:
        try:
            return [_message_json(record) for record in models.list_models(job_id)]
        except grpc.RpcError as error:
            raise _grpc_http_error(error) from None

    @app.get("/v1/jobs/{job_id}/models/{round_}")
    def get_model(job_id: str, round_: int) -> dict[str, Any]:
        """Round -1 is the latest stored model."""
        try:
            return _message_json(models.get_model(job_id, round_))
        except grpc.RpcError as error:
            raise _grpc_http_error(error) from None

    @app.get("/v1/jobs/{job_id}/models/{round_}/weights")
    def model_weights(job_id: str, round_: int) -> StreamingResponse:
        """The flat little-endian float32 parameter vector, laid out as the manifest says."""
        try:
            record = models.get_model(job_id, round_)
        except grpc.RpcError as error:
            raise _grpc_http_error(error) from None

        def chunks() -> Iterator[bytes]:
            from fedsilo.v1 import modelstore_pb2

            request = modelstore_pb2.DownloadBlobRequest(digest=record.blob.digest)
            for chunk in models.stub.DownloadBlob(request):
                yield chunk.data

        return StreamingResponse(
            chunks(),
            media_type="application/octet-stream",
            headers={
                "X-Fedsilo-Model-Version": record.version,
                "X-Fedsilo-Round": str(record.round),
            },
        )

    @app.get("/v1/sites")
    def list_sites() -> list[dict[str, Any]]:
        try:
            response = registry.ListClients(registry_pb2.ListClientsRequest())
        except grpc.RpcError as error:
            raise _grpc_http_error(error) from None
        return [_message_json(client) for client in response.clients]

    return app
