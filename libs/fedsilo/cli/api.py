"""A small client of the scheduler's operator REST API."""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Any

import httpx

DEFAULT_ENDPOINTS = Path(".fedsilo") / "endpoints.json"


class ApiError(RuntimeError):
    pass


def read_endpoints(path: Path = DEFAULT_ENDPOINTS) -> dict[str, str]:
    """What `fedsilo up` wrote about the control plane it started; empty when it did not."""
    return dict(json.loads(path.read_text())) if path.exists() else {}


def default_api(url: str | None = None) -> OperatorApi:
    """The operator API from --api / FEDSILO_API, the token from FEDSILO_OPERATOR_TOKEN, the CA
    from FEDSILO_CA_CERT; what is not given comes from the endpoints file of `fedsilo up`."""
    endpoints = read_endpoints()
    url = url or os.environ.get("FEDSILO_API") or endpoints.get("api") or "https://127.0.0.1:8080"
    token = os.environ.get("FEDSILO_OPERATOR_TOKEN")
    if token is None and "operator_token_file" in endpoints:
        token = Path(endpoints["operator_token_file"]).read_text().strip()
    ca = os.environ.get("FEDSILO_CA_CERT") or endpoints.get("ca_cert")
    return OperatorApi(url, token=token, ca_cert=Path(ca) if ca else None)


class OperatorApi:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        ca_cert: Path | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        # HTTPS is verified against the platform CA, not the system's public roots.
        verify: bool | ssl.SSLContext = True
        if ca_cert is not None:
            verify = ssl.create_default_context(cafile=str(ca_cert))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout_s, verify=verify, headers=headers
        )
        self.base_url = base_url

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ApiError(
                f"cannot reach the scheduler API at {self.base_url} ({error}); is `fedsilo up` "
                "running, or is --api / FEDSILO_API set?"
            ) from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(f"{method} {path}: HTTP {response.status_code}: {detail}")
        return response.json()

    def submit_job(self, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/jobs", json=spec))

    def list_jobs(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/jobs"))

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    def exclude_site(self, job_id: str, site: str, reason: str) -> dict[str, Any]:
        body = {"site": site, "reason": reason}
        return dict(self._call("POST", f"/v1/jobs/{job_id}/exclude", json=body))

    def contribution_inputs(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/jobs/{job_id}/contributions/inputs"))

    def job_blob(self, job_id: str, digest: str) -> bytes:
        response = self._http.get(f"/v1/jobs/{job_id}/blobs/{digest}")
        if response.status_code >= 400:
            raise ApiError(f"blob {digest[:16]}: HTTP {response.status_code}: {response.text}")
        return response.content

    def record_contributions(self, job_id: str, result: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/jobs/{job_id}/contributions", json=result))

    def models(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/v1/jobs/{job_id}/models"))

    def model(self, job_id: str, round_: int = -1) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/jobs/{job_id}/models/{round_}"))

    def model_weights(self, job_id: str, round_: int = -1) -> bytes:
        response = self._http.get(f"/v1/jobs/{job_id}/models/{round_}/weights")
        if response.status_code >= 400:
            raise ApiError(f"model weights: HTTP {response.status_code}: {response.text}")
        return response.content

    def add_site(self, site: str, ttl_s: float = 24 * 3600.0) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/sites", json={"site": site, "ttl_s": ttl_s}))

    def revoke_client(self, client_id: str, reason: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/clients/{client_id}/revoke", json={"reason": reason}))

    def sites(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/sites"))
