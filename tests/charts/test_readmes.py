"""Each chart's README lists its values as values.yaml has them (scripts/chart_readmes.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "chart_readmes", ROOT / "scripts/chart_readmes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_readmes_are_what_the_generator_writes() -> None:
    assert _generator().main(["--check"]) == 0, "run .venv/bin/python scripts/chart_readmes.py"


def test_the_readme_lists_every_value_with_its_comment() -> None:
    generator = _generator()
    text = (ROOT / "charts/fedsilo-control-plane/README.md").read_text()
    assert "| `aggregator.threads` | `1` |" in text
    assert "| `siteEndpoints.*` | | Where sites reach each service" in text
    notes = generator.comments("a:\n  # the b\n  b: 1  # really\n\n# c's\nc: {}\n")
    assert notes == {"a.b": "the b really", "c": "c's"}
