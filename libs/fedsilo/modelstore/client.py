"""Talking to the model store: chunked uploads and ranged downloads."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from fedsilo.rpc.channels import CHUNK_BYTES
from fedsilo.v1 import common_pb2, modelstore_pb2, modelstore_pb2_grpc


class BlobsUnavailable(Exception):
    """Blobs to compose are missing from the object store, or do not match their digests."""


class ModelStoreClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = modelstore_pb2_grpc.ModelStoreStub(channel)

    def upload(self, data: bytes | memoryview, dtype: str = "bytes") -> modelstore_pb2.BlobInfo:
        view = memoryview(data).cast("B")

        def chunks() -> Iterator[modelstore_pb2.UploadChunk]:
            yield modelstore_pb2.UploadChunk(header=modelstore_pb2.UploadHeader(dtype=dtype))
            for start in range(0, len(view), CHUNK_BYTES):
                yield modelstore_pb2.UploadChunk(data=bytes(view[start : start + CHUNK_BYTES]))

        response: modelstore_pb2.UploadBlobResponse = self.stub.UploadBlob(chunks())
        return response.info

    def download(self, digest: str, offset: int = 0, length: int = 0) -> bytes:
        return b"".join(self.stream(digest, offset, length))

    def stream(self, digest: str, offset: int = 0, length: int = 0) -> Iterator[bytes]:
        """The blob (or [offset, offset + length)) in chunks as they arrive."""
        request = modelstore_pb2.DownloadBlobRequest(digest=digest, offset=offset, length=length)
        return (chunk.data for chunk in self.stub.DownloadBlob(request))

    def stat(self, digest: str) -> modelstore_pb2.BlobInfo:
        info: modelstore_pb2.BlobInfo = self.stub.StatBlob(
            modelstore_pb2.StatBlobRequest(digest=digest)
        )
        return info

    def compose(self, digests: list[str], dtype: str = "float32") -> common_pb2.BlobRef:
        """The concatenation of the blobs, stored as one; BlobsUnavailable when a part is
        missing or damaged."""
        try:
            ref: common_pb2.BlobRef = self.stub.ComposeBlobs(
                modelstore_pb2.ComposeBlobsRequest(digests=digests, dtype=dtype)
            )
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DATA_LOSS):
                raise BlobsUnavailable(error.details()) from None
            raise
        return ref

    def put_model(self, record: modelstore_pb2.ModelRecord) -> modelstore_pb2.ModelRecord:
        stored: modelstore_pb2.ModelRecord = self.stub.PutModel(
            modelstore_pb2.PutModelRequest(record=record)
        )
        return stored

    def get_model(self, job_id: str, round_: int = -1) -> modelstore_pb2.ModelRecord:
        record: modelstore_pb2.ModelRecord = self.stub.GetModel(
            modelstore_pb2.GetModelRequest(job_id=job_id, round=round_)
        )
        return record

    def list_models(self, job_id: str) -> list[modelstore_pb2.ModelRecord]:
        response = self.stub.ListModels(modelstore_pb2.ListModelsRequest(job_id=job_id))
        return list(response.models)
