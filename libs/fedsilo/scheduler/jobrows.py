"""Facts read off a stored job row: its spec, its model's layout."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from fedsilo.jobs import JobSpec
from fedsilo.v1 import common_pb2


def job_spec(job: Mapping[str, Any]) -> JobSpec:
    return JobSpec.from_json(job["spec_json"])


def job_manifest(job: Mapping[str, Any]) -> common_pb2.ModelManifest:
    """The model layout fixed when the initial model was accepted (empty before)."""
    manifest = common_pb2.ModelManifest()
    if job["manifest_json"]:
        json_format.Parse(job["manifest_json"], manifest)
    return manifest


def excluded_sites(job: Mapping[str, Any]) -> dict[str, str]:
    """Sites the operator excluded from the job's future rounds, with the reasons."""
    raw = job.get("excluded") or "{}"
    return dict(json.loads(raw))


def numel(shape: Any) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def client_level_dp(spec: JobSpec) -> bool:
    return spec.privacy is not None and spec.privacy.mode == "client"
