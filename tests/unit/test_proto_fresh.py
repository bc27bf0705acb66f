"""The committed generated code must be what `make proto` produces from proto/ today."""

from __future__ import annotations

from pathlib import Path

from fedsilo import protogen

GENERATED = Path(protogen.__file__).parent / "v1"


def test_generated_code_matches_proto_sources(tmp_path: Path) -> None:
    fresh = protogen.generate(tmp_path)
    fresh_names = {path.name for path in fresh}
    committed = {path.name for path in GENERATED.glob("*_pb2*.py*")}
    assert fresh_names == committed, "run `make proto`: generated files added or removed"
    stale = [p.name for p in fresh if p.read_bytes() != (GENERATED / p.name).read_bytes()]
    assert not stale, f"run `make proto`: stale generated files {stale}"


def test_every_service_api_is_generated() -> None:
    for api in ("registry", "keymanager", "scheduler", "aggregator", "modelstore"):
        assert (GENERATED / f"{api}_pb2_grpc.py").exists()
