"""Global model versions with their lineage, as JSON documents beside the blobs."""

from __future__ import annotations

from google.protobuf import json_format

from fedsilo.storage import DocumentStore
from fedsilo.v1 import modelstore_pb2


class ModelNotFound(LookupError):
    """No model is recorded for the job (and round) asked for."""


class LineageConflict(ValueError):
    """A different model is already recorded for this job and round; stored data never changes."""


def _key(job_id: str, round_: int) -> str:
    return f"models/{job_id}/round-{round_:06d}.json"


class ModelCatalog:
    def __init__(self, documents: DocumentStore) -> None:
        self._docs = documents

    def put(self, record: modelstore_pb2.ModelRecord) -> modelstore_pb2.ModelRecord:
        if not record.job_id or record.round < 0:
            raise ValueError("a model record needs a job_id and a round >= 0")
        key = _key(record.job_id, record.round)
        if self._docs.exists(key):
            existing = self._decode(self._docs.get(key))
            if existing.version != record.version:
                raise LineageConflict(
                    f"job {record.job_id} round {record.round} already has model "
                    f"{existing.version[:12]}; refusing to replace it with {record.version[:12]}"
                )
            return existing
        self._docs.put(key, json_format.MessageToDict(record, preserving_proto_field_name=True))
        return record

    def get(self, job_id: str, round_: int) -> modelstore_pb2.ModelRecord:
        """Round < 0 means the latest."""
        if round_ < 0:
            records = self.list(job_id)
            if not records:
                raise ModelNotFound(f"no model stored for job {job_id}")
            return records[-1]
        key = _key(job_id, round_)
        if not self._docs.exists(key):
            raise ModelNotFound(f"no model stored for job {job_id} round {round_}")
        return self._decode(self._docs.get(key))

    def list(self, job_id: str) -> list[modelstore_pb2.ModelRecord]:
        keys = self._docs.list(f"models/{job_id}/")
        return [self._decode(self._docs.get(key)) for key in sorted(keys)]

    @staticmethod
    def _decode(document: dict[str, object]) -> modelstore_pb2.ModelRecord:
        return json_format.ParseDict(document, modelstore_pb2.ModelRecord())
