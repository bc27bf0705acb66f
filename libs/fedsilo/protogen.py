"""Generates libs/fedsilo/v1 from proto/: `make proto` (or `python -m fedsilo.protogen OUT`).

Generated code is committed; tests/unit/test_proto_fresh.py regenerates into a temporary
folder and fails when the committed files differ, so the APIs and the code never drift.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
PACKAGE_DIR = Path("fedsilo") / "v1"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Run protoc (grpcio-tools) with the python, grpc and mypy stub generators into out_root."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    bin_dir = Path(sys.executable).parent
    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(path.relative_to(PROTO_ROOT)) for path in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see its messages above")
    return sorted((out_root / PACKAGE_DIR).glob("*_pb2*.py*"))


def main() -> None:
    out_root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT / "libs"
    for path in generate(out_root):
        print(f"generated {path.relative_to(out_root)}")


if __name__ == "__main__":
    main()
