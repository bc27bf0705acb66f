"""What the model store knows of a blob besides its bytes: dtype, element and NaN/Inf counts,
and who uploaded it. Written by the model store, and by aggregator replicas that write their
shard results straight to the object store."""

from __future__ import annotations

from fedsilo.modelstore.scan import ElementScanner
from fedsilo.storage import BlobRef, BlobStore, DocumentStore


def info_key(digest: str) -> str:
    return f"blobinfo/{digest[:2]}/{digest}.json"


def record_blob(
    docs: DocumentStore, digest: str, scanner: ElementScanner, owner: str, *, durable: bool = True
) -> None:
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
        durable=durable,
    )


class DirectBlobWriter:
    """Shard results written straight to the object store, recorded as the model store would.

    Not waited onto the disk: a shard result is needed only until the scheduler composes the
    round's model (which is durable), and one lost or torn by a crash is found when composing
    (its digest does not match) and computed again."""

    def __init__(self, blobs: BlobStore, docs: DocumentStore, owner: str) -> None:
        self._blobs = blobs
        self._docs = docs
        self._owner = owner

    def __call__(self, data: bytes | memoryview, dtype: str) -> str:
        view = memoryview(data).cast("B")
        scanner = ElementScanner(dtype)
        scanner.feed(view)
        scanner.finish()
        ref: BlobRef = self._blobs.put(view, durable=False)
        record_blob(self._docs, ref.digest, scanner, self._owner, durable=False)
        return ref.digest
