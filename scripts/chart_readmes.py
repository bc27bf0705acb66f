"""Write charts/<chart>/README.md: what the chart deploys (its Chart.yaml description) and a
table of every value, its default and the comment above it in values.yaml. The READMEs are
committed, and tests/charts/test_readmes.py fails when one differs from what this writes.

    .venv/bin/python scripts/chart_readmes.py          # rewrite the READMEs
    .venv/bin/python scripts/chart_readmes.py --check  # exit 1, naming the stale ones
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ("fedsilo-control-plane", "fedsilo-client")
_KEY = re.compile(r"^(\s*)([A-Za-z0-9_]+):")


def comments(values_yaml: str) -> dict[str, str]:
    """Dotted key -> the comment lines right above it (or at the end of its line)."""
    found: dict[str, str] = {}
    path: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in values_yaml.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _KEY.match(line)
        if match is None:
            if not stripped:
                pending = []
            continue
        indent, key = len(match.group(1)), match.group(2)
        path = [(i, k) for i, k in path if i < indent] + [(indent, key)]
        trailing = line.split(" # ", 1)[1].strip() if " # " in line else ""
        text = " ".join([*pending, trailing]).strip()
        if text:
            found[".".join(k for _, k in path)] = text
        pending = []
    return found


def leaves(values: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted keys of the values that are not themselves maps with keys (an empty map is a
    value: a place for the user's own keys)."""
    if isinstance(values, dict) and values:
        rows = []
        for key, value in values.items():
            rows += leaves(value, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, values)]


def table_rows(values: Any, notes: dict[str, str]) -> list[str]:
    """One row per value with its own comment; a group's comment once, above its values."""
    rows, shown = [], set()
    for key, default in leaves(values):
        parts = key.split(".")
        for end in range(1, len(parts)):
            group = ".".join(parts[:end])
            if group in notes and group not in shown:
                rows.append(f"| `{group}.*` | | {_cell(notes[group])} |")
                shown.add(group)
        rows.append(f"| `{key}` | `{json.dumps(default)}` | {_cell(notes.get(key, ''))} |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "/")


def readme(chart: str) -> str:
    folder = ROOT / "charts" / chart
    meta = yaml.safe_load((folder / "Chart.yaml").read_text())
    text = (folder / "values.yaml").read_text()
    notes = comments(text)
    rows = table_rows(yaml.safe_load(text), notes)
    return "\n".join(
        [
            f"# {chart}",
            "",
            f"{meta.get('description', '').strip()}",
            "",
            'Installing it, and what each choice deploys, is in the project README ("Deploy on',
            'Kubernetes"); `values.schema.json` rejects unknown keys and wrong types. This file',
            "is written by `scripts/chart_readmes.py` from `values.yaml`.",
            "",
            "| value | default | what it is |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a README is stale")
    args = parser.parse_args(argv)
    stale = []
    for chart in CHARTS:
        path = ROOT / "charts" / chart / "README.md"
        wanted = readme(chart)
        if args.check:
            if not path.exists() or path.read_text() != wanted:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(wanted)
    if stale:
        print("stale (run scripts/chart_readmes.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
