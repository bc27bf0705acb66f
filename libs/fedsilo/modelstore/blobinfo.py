"""What the model store knows of a blob besides its bytes: dtype, element and NaN/Inf counts,
and who uploaded it. Written by the model store, and by aggregator replicas that write their
shard results straight to the object store."""

from __future__ import annotations

from fedsilo.modelstore.scan import ElementScanner
from fedsilo.storage import BlobRef, BlobStore, DocumentStore


def info_key(digest: str) -> str:
    return f"blobinfo/{digest[:2]}/{digest}.json"


def record_blob(docs: DocumentStore, digest: str, scanner: ElementScanner, owner: str) -> None:
    """Record a stored blob's facts; identical bytes from two parties are one blob with two
    owners."""
    key = info_key(digest)
    owners = set(docs.get(key).get("owners", [])) if docs.exists(key) else set()
    owners.add(owner)
    docs.put(
        key,
        {
            "dtype": scanner.dtype,
            "num_elements": scanner.num_elements,
            "num_nonfinite": scanner.num_nonfinite,
            "owners": sorted(owners),
        },
    )


class DirectBlobWriter:
    """Blobs written straight to the object store, recorded as the model store would."""

    def __init__(self, blobs: BlobStore, docs: DocumentStore, owner: str) -> None:
        self._blobs = blobs
        self._docs = docs
        self._owner = owner

    def __call__(self, data: bytes, dtype: str) -> str:
        scanner = ElementScanner(dtype)
        scanner.feed(data)
        scanner.finish()
        ref: BlobRef = self._blobs.put(data)
        record_blob(self._docs, ref.digest, scanner, self._owner)
        return ref.digest
