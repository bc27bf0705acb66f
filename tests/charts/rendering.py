"""Render the Helm charts with the real helm binary (`make tools` fetches it) and read the
manifests back as dictionaries."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
CONTROL_PLANE = CHARTS / "fedsilo-control-plane"
CLIENT = CHARTS / "fedsilo-client"
EXAMPLES = REPO / "k8s" / "values"
TOOLS = REPO / ".tools" / "bin"
SERVICES = ("registry", "keymanager", "scheduler", "aggregator", "modelstore")

# What a site's chart needs besides the example values: a token and the platform CA.
SITE_SECRETS: dict[str, Any] = {
    "enrollment": {"token": "one-time-token-from-site-add"},
    "controlPlane": {"caCertConfigMap": "fedsilo-platform-ca"},
}


def tool(name: str) -> Path:
    path = Path(os.environ.get(f"FEDSILO_{name.upper()}", TOOLS / name))
    if not path.exists():
        pytest.fail(f"{path} is missing: `make tools` fetches helm and kubectl")
    return path


class HelmError(Exception):
    """helm refused: its message says which value was wrong."""


def helm(*args: str | Path) -> str:
    done = subprocess.run(
        [tool("helm"), *map(str, args)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise HelmError(done.stderr.strip() or done.stdout.strip())
    return done.stdout


@dataclass
class Manifests:
    objects: list[dict[str, Any]]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.objects)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [item for item in self.objects if item["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for item in self.kind(kind):
            if item["metadata"]["name"] == name:
                return item
        raise KeyError(f"no {kind} {name}; have {[i['metadata']['name'] for i in self.kind(kind)]}")

    def workloads(self) -> list[dict[str, Any]]:
        return [i for i in self.objects if i["kind"] in ("Deployment", "StatefulSet")]

    def component(self, name: str) -> dict[str, Any]:
        """The Deployment or StatefulSet of a fedsilo component."""
        (found,) = [
            w
            for w in self.workloads()
            if w["metadata"]["labels"].get("app.kubernetes.io/component") == name
        ]
        return found

    def settings(self, workload: dict[str, Any]) -> dict[str, str]:
        """The container's environment as the kubelet would assemble it: envFrom ConfigMaps,
        then env entries (values, or a note of where a secret or field comes from)."""
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(self.get("ConfigMap", source["configMapRef"]["name"])["data"])
        for entry in container.get("env", []):
            env[entry["name"]] = entry.get("value", f"<from {entry.get('valueFrom')}>")
        return env


def render(
    chart: Path,
    values: dict[str, Any] | None = None,
    values_files: tuple[Path, ...] = (),
    release: str = "fl",
    namespace: str = "fedsilo",
) -> Manifests:
    """`helm template` with values files and then a values dictionary (written to a file,
    so types are kept exactly as given)."""
    args: list[str | Path] = ["template", release, chart, "--namespace", namespace]
    for path in values_files:
        args += ["--values", path]
    with tempfile.TemporaryDirectory() as scratch:
        if values:
            extra = Path(scratch) / "values.yaml"
            extra.write_text(yaml.safe_dump(values))
            args += ["--values", extra]
        documents = yaml.safe_load_all(helm(*args))
        return Manifests([item for item in documents if item])


def site_values(site: str) -> Path:
    return EXAMPLES / f"site-{site}.yaml"
