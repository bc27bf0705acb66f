"""A small client of the scheduler's operator REST API."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

DEFAULT_ENDPOINTS = Path(".fedsilo") / "endpoints.json"


class ApiError(RuntimeError):
    pass


def default_api_url() -> str:
    """FEDSILO_API, else the endpoints file `fedsilo up` writes, else localhost:8080."""
    if url := os.environ.get("FEDSILO_API"):
        return url
    if DEFAULT_ENDPOINTS.exists():
        return str(json.loads(DEFAULT_ENDPOINTS.read_text())["api"])
    return "http://127.0.0.1:8080"


class OperatorApi:
    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)
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

    def model(self, job_id: str, round_: int = -1) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/jobs/{job_id}/models/{round_}"))

    def model_weights(self, job_id: str, round_: int = -1) -> bytes:
        response = self._http.get(f"/v1/jobs/{job_id}/models/{round_}/weights")
        if response.status_code >= 400:
            raise ApiError(f"model weights: HTTP {response.status_code}: {response.text}")
        return response.content

    def sites(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/sites"))
