"""pyproject.toml lists packages explicitly (services install as fedsilo_services)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _package_folders(base: Path, prefix: str) -> set[str]:
    return {
        ".".join([prefix, *init.parent.relative_to(base).parts])
        for init in base.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def test_every_package_folder_is_installed() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = _package_folders(ROOT / "libs" / "fedsilo", "fedsilo") | _package_folders(
        ROOT / "services", "fedsilo_services"
    )
    found = {name.rstrip(".") for name in found}
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "these packages no longer exist"
