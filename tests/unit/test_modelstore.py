from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsilo.modelstore.catalog import LineageConflict, ModelCatalog, ModelNotFound
from fedsilo.modelstore.scan import ElementScanner
from fedsilo.storage import DocumentStore, LocalDirectoryStore
from fedsilo.v1 import modelstore_pb2


def test_scanner_counts_nonfinite_values_across_unaligned_chunks() -> None:
    values = np.array([1.0, np.nan, 2.0, np.inf, -np.inf, 3.0], dtype="<f4").tobytes()
    scanner = ElementScanner("float32")
    for start in range(0, len(values), 5):  # chunks split elements
        scanner.feed(values[start : start + 5])
    scanner.finish()
    assert (scanner.num_elements, scanner.num_nonfinite) == (6, 3)


def test_scanner_refuses_a_partial_element() -> None:
    scanner = ElementScanner("float32")
    scanner.feed(b"\x00" * 6)
    with pytest.raises(ValueError, match="2 trailing bytes"):
        scanner.finish()


def _record(version: str, round_: int) -> modelstore_pb2.ModelRecord:
    return modelstore_pb2.ModelRecord(
        version=version, job_id="job-1", round=round_, participants=["a", "b"]
    )


def test_catalog_keeps_lineage_and_never_replaces_a_version(tmp_path: Path) -> None:
    catalog = ModelCatalog(DocumentStore(LocalDirectoryStore(tmp_path)))
    catalog.put(_record("v0", 0))
    catalog.put(_record("v1", 1))
    assert catalog.put(_record("v1", 1)).version == "v1"  # idempotent
    with pytest.raises(LineageConflict, match="refusing to replace"):
        catalog.put(_record("other", 1))
    assert catalog.get("job-1", -1).version == "v1"
    assert [r.round for r in catalog.list("job-1")] == [0, 1]
    with pytest.raises(ModelNotFound, match="round 7"):
        catalog.get("job-1", 7)
