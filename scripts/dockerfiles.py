"""Write services/<name>/Dockerfile for every service from scripts/Dockerfile.template.

The six images differ only in the service they run, the pyproject extras they install (an
image whose extras need torch gets the CPU-only wheel first) and the ports they document;
everything else is the template. The generated files are committed, and
tests/unit/test_images.py fails when one differs from what this script writes.

    .venv/bin/python scripts/dockerfiles.py          # rewrite the Dockerfiles
    .venv/bin/python scripts/dockerfiles.py --check  # exit 1, naming the stale ones
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = Path("scripts/Dockerfile.template")
# Both stages use the same tag: the virtualenv's python links to the base image's interpreter.
BASE_IMAGE = "python:3.11-slim-bookworm"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
UID = 10001
LOCK = "requirements/lock.txt"


@dataclass(frozen=True)
class Port:
    number: int
    role: str


# The ports the charts give each service (charts/*/templates); EXPOSE documents them.
GRPC = Port(50051, "gRPC, mutual TLS (FEDSILO_GRPC_PORT)")
ENROLL = Port(50052, "first Enroll, server TLS (FEDSILO_ENROLL_PORT)")
HTTP = Port(8443, "operator REST API, HTTPS (FEDSILO_HTTP_PORT)")
HEALTH = Port(8086, "plaintext gRPC health for probes (FEDSILO_HEALTH_PORT)")
METRICS = Port(9090, "Prometheus /metrics (FEDSILO_METRICS_PORT)")


@dataclass(frozen=True)
class Image:
    service: str
    ports: tuple[Port, ...]
    extras: tuple[str, ...] = ()
    purpose: str = ""


IMAGES = (
    Image("registry", (GRPC, ENROLL, HEALTH, METRICS)),
    Image(
        "keymanager",
        (GRPC, HEALTH, METRICS),
        extras=("kubernetes",),
        purpose="Also runs the trust-bootstrap Job (`python -m fedsilo.pki.cluster`).",
    ),
    Image("scheduler", (GRPC, HTTP, HEALTH, METRICS)),
    Image("aggregator", (GRPC, HEALTH, METRICS)),
    Image("modelstore", (GRPC, HEALTH, METRICS)),
    # The client agent only calls out: nothing but probes and Prometheus dial it.
    Image("client", (HEALTH, METRICS), extras=("client",)),
)


@dataclass(frozen=True)
class Project:
    """What the Dockerfiles need from pyproject.toml."""

    version: str
    wheel: str
    extras: dict[str, list[str]]

    @classmethod
    def load(cls, root: Path) -> Project:
        project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
        name = re.sub(r"[-_.]+", "_", project["name"]).lower()
        return cls(
            version=project["version"],
            wheel=f"{name}-{project['version']}-py3-none-any.whl",
            extras=project.get("optional-dependencies", {}),
        )

    def torch_pin(self, extras: Sequence[str]) -> str | None:
        """The exact torch requirement of these extras, or None when they need no torch."""
        for extra in extras:
            if extra not in self.extras:
                raise SystemExit(f"pyproject.toml has no extra {extra!r}; fix IMAGES")
            for requirement in self.extras[extra]:
                if re.match(r"torch\s*[=<>!~]", requirement):
                    pin = requirement.replace(" ", "")
                    if not pin.startswith("torch=="):
                        raise SystemExit(f"extra {extra!r}: pin torch exactly, not {pin!r}")
                    return pin
        return None


def render(image: Image, template: str, project: Project) -> str:
    notes = [image.purpose] if image.purpose else []
    torch_step = ""
    torch = project.torch_pin(image.extras)
    if torch is not None:
        notes += [
            "CPU-only torch comes first, from the PyTorch CPU index and without its dependencies:",
            "those come from the lock with everything else.",
        ]
        torch_step = (
            " \\\n && pip --python /opt/venv/bin/python install --no-deps --only-binary=:all: \\\n"
            f"      --index-url {TORCH_INDEX} -c {LOCK} {torch}"
        )
    return template.format(
        service=image.service,
        version=project.version,
        notes="".join(f"\n# {note}" for note in notes),
        base_image=BASE_IMAGE,
        torch=torch_step,
        wheel=project.wheel,
        extras=f"[{','.join(image.extras)}]" if image.extras else "",
        uid=UID,
        port_notes="\n".join(f"# {port.number}: {port.role}" for port in image.ports),
        ports=" ".join(str(port.number) for port in image.ports),
    )


def services_with_entry_point(root: Path) -> set[str]:
    return {main.parent.name for main in (root / "services").glob("*/__main__.py")}


def generate(root: Path) -> dict[Path, str]:
    """Every Dockerfile, by its path relative to `root`, as this script writes it."""
    imaged = {image.service for image in IMAGES}
    services = services_with_entry_point(root)
    if imaged != services:
        raise SystemExit(
            f"IMAGES lists {sorted(imaged - services)} that services/ lacks and lacks "
            f"{sorted(services - imaged)} that services/ runs: make IMAGES match services/"
        )
    template = (root / TEMPLATE).read_text()
    project = Project.load(root)
    return {
        Path("services", image.service, "Dockerfile"): render(image, template, project)
        for image in IMAGES
    }


def stale(root: Path) -> list[Path]:
    """Dockerfiles under `root` that are missing, differ from the generated text, or are not
    generated at all."""
    expected = generate(root)
    present = {path.relative_to(root) for path in (root / "services").glob("*/Dockerfile")}
    differing = {
        path
        for path, text in expected.items()
        if not (root / path).is_file() or (root / path).read_text() != text
    }
    return sorted(differing | (present - expected.keys()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    outdated = stale(ROOT)
    if args.check:
        for path in outdated:
            print(f"{path}: stale, run `.venv/bin/python scripts/dockerfiles.py`")
        return 1 if outdated else 0
    expected = generate(ROOT)
    for path in outdated:
        if path not in expected:
            print(f"{path}: not generated (its folder has no __main__.py); remove it")
            continue
        (ROOT / path).write_text(expected[path])
        print(f"wrote {path}")
    return 1 if set(outdated) - expected.keys() else 0


if __name__ == "__main__":
    sys.exit(main())
