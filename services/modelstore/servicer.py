"""ModelStore gRPC servicer: translates RPCs into BlobStore / ModelCatalog calls."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import NoReturn

import grpc

from fedsilo.audit import AuditLog
from fedsilo.modelstore.blobinfo import info_key, record_blob
from fedsilo.modelstore.catalog import LineageConflict, ModelCatalog, ModelNotFound
from fedsilo.modelstore.scan import ElementScanner
from fedsilo.pki import Identity
from fedsilo.rpc.auth import Authorizer
from fedsilo.rpc.channels import CHUNK_BYTES
from fedsilo.rpc.errors import (
    RpcRejection,
    abort,
    failed_precondition,
    invalid_argument,
    not_found,
    permission_denied,
    translate_errors,
)
from fedsilo.storage import BlobStore, CorruptBlob, DocumentStore, ObjectNotFound
from fedsilo.telemetry import BLOB_BYTES, MODELS_STORED
from fedsilo.v1 import common_pb2, modelstore_pb2, modelstore_pb2_grpc

log = logging.getLogger("fedsilo.modelstore")


class ModelStoreServicer(modelstore_pb2_grpc.ModelStoreServicer):
    def __init__(
        self,
        blobs: BlobStore,
        documents: DocumentStore,
        auth: Authorizer,
        audit: AuditLog | None = None,
    ) -> None:
        self._auth = auth
        self.audit = audit
        self._blobs = blobs
        self._docs = documents
        self._catalog = ModelCatalog(documents)

    def _blob_info(self, digest: str) -> modelstore_pb2.BlobInfo:
        try:
            ref = self._blobs.stat(digest)
        except (ObjectNotFound, ValueError):
            raise not_found(f"blob {digest!r} is not in the model store") from None
        info = modelstore_pb2.BlobInfo(
            ref=common_pb2.BlobRef(digest=ref.digest, size=ref.size),
            dtype="bytes",
            num_elements=ref.size,
        )
        key = info_key(digest)
        if self._docs.exists(key):
            facts = self._docs.get(key)
            info.dtype = str(facts["dtype"])
            info.num_elements = int(facts["num_elements"])
            info.num_nonfinite = int(facts["num_nonfinite"])
        return info

    def UploadBlob(
        self, request_iterator: Iterator[modelstore_pb2.UploadChunk], context: grpc.ServicerContext
    ) -> modelstore_pb2.UploadBlobResponse:
        uploader = self._authorize_stream(context)
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            abort(context, invalid_argument("the first upload chunk must carry the header"))
        dtype = first.header.dtype or "bytes"
        try:
            scanner = ElementScanner(dtype)
        except ValueError as error:
            abort(context, invalid_argument(str(error)))

        def data() -> Iterator[bytes]:
            if first.data:
                scanner.feed(first.data)
                yield first.data
            for chunk in request_iterator:
                scanner.feed(chunk.data)
                yield chunk.data

        try:
            ref = self._blobs.put_stream(
                data(), expected_digest=first.header.expected_digest or None
            )
            scanner.finish()
        except (ValueError, CorruptBlob) as error:
            abort(context, invalid_argument(f"upload refused: {error}"))
        record_blob(
            self._docs, ref.digest, scanner, str(uploader) if uploader is not None else "anonymous"
        )
        BLOB_BYTES.labels("in").inc(ref.size)
        return modelstore_pb2.UploadBlobResponse(info=self._blob_info(ref.digest))

    def DownloadBlob(
        self, request: modelstore_pb2.DownloadBlobRequest, context: grpc.ServicerContext
    ) -> Iterator[modelstore_pb2.DownloadChunk]:
        caller = self._authorize_stream(context)
        if (
            caller is not None
            and caller.kind == "client"
            and not self._readable_by(str(caller), request.digest)
        ):
            self._refuse(
                context,
                permission_denied(
                    f"{caller} may download only its own uploads and published global models"
                ),
            )
        try:
            size = self._blobs.stat(request.digest).size
        except (ObjectNotFound, ValueError):
            abort(context, not_found(f"blob {request.digest!r} is not in the model store"))
        length = request.length or size - request.offset
        if request.offset < 0 or length < 0 or request.offset + length > size:
            abort(
                context,
                invalid_argument(
                    f"range [{request.offset}, {request.offset + length}) is outside blob "
                    f"{request.digest[:12]} of {size} bytes"
                ),
            )
        if length == 0:
            return
        try:
            for chunk in self._blobs.iter_chunks(
                request.digest, CHUNK_BYTES, offset=request.offset, length=length
            ):
                BLOB_BYTES.labels("out").inc(len(chunk))
                yield modelstore_pb2.DownloadChunk(data=chunk)
        except CorruptBlob as error:
            abort(context, RpcRejection(grpc.StatusCode.DATA_LOSS, str(error)))

    def _authorize_stream(self, context: grpc.ServicerContext) -> Identity | None:
        """Streaming calls check the caller themselves (the decorator wraps unary calls)."""
        try:
            return self._auth.require_identity(context)
        except RpcRejection as rejection:
            self._refuse(context, rejection)

    def _refuse(self, context: grpc.ServicerContext, rejection: RpcRejection) -> NoReturn:
        log.warning("rejected: %s %s", rejection.code.name, rejection.message)
        if self.audit is not None:
            self.audit.append(
                "request_rejected",
                code=rejection.code.name,
                reason=rejection.message,
                peer=context.peer(),
            )
        abort(context, rejection)

    def _readable_by(self, client: str, digest: str) -> bool:
        """A site may read what it uploaded and the global models, never another site's
        update: those are for the aggregators alone."""
        if self._docs.exists(f"published/{digest[:2]}/{digest}.json"):
            return True
        key = info_key(digest)
        return self._docs.exists(key) and client in self._docs.get(key).get("owners", [])

    @translate_errors(log)
    def StatBlob(
        self, request: modelstore_pb2.StatBlobRequest, context: grpc.ServicerContext
    ) -> modelstore_pb2.BlobInfo:
        self._auth.require_identity(context)
        return self._blob_info(request.digest)

    @translate_errors(log)
    def ComposeBlobs(
        self, request: modelstore_pb2.ComposeBlobsRequest, context: grpc.ServicerContext
    ) -> common_pb2.BlobRef:
        self._auth.require_service(context)
        if not request.digests:
            raise invalid_argument("compose needs at least one blob")
        infos = [self._blob_info(digest) for digest in request.digests]
        try:
            ref = self._blobs.compose(list(request.digests))
        except ObjectNotFound as error:
            raise not_found(str(error)) from None
        except CorruptBlob as error:  # nothing was stored
            raise RpcRejection(grpc.StatusCode.DATA_LOSS, str(error)) from None
        dtype = request.dtype or "bytes"
        self._docs.put(
            info_key(ref.digest),
            {
                "dtype": dtype,
                "num_elements": sum(info.num_elements for info in infos),
                "num_nonfinite": sum(info.num_nonfinite for info in infos),
            },
        )
        return common_pb2.BlobRef(digest=ref.digest, size=ref.size)

    @translate_errors(log)
    def PutModel(
        self, request: modelstore_pb2.PutModelRequest, context: grpc.ServicerContext
    ) -> modelstore_pb2.ModelRecord:
        self._auth.require_service(context, "scheduler")
        record = modelstore_pb2.ModelRecord()
        record.CopyFrom(request.record)
        info = self._blob_info(record.blob.digest)
        expected = 4 * record.manifest.num_parameters
        if info.ref.size != expected:
            raise invalid_argument(
                f"model blob has {info.ref.size} bytes; the manifest's "
                f"{record.manifest.num_parameters} float32 parameters need {expected}"
            )
        record.version = record.blob.digest
        record.blob.size = info.ref.size
        if not record.created_at:
            record.created_at = time.time()
        try:
            stored = self._catalog.put(record)
            self._docs.put(
                f"published/{record.version[:2]}/{record.version}.json",
                {"job_id": record.job_id, "round": record.round},
            )
        except LineageConflict as error:
            raise failed_precondition(str(error)) from None
        except ValueError as error:
            raise invalid_argument(str(error)) from None
        MODELS_STORED.inc()
        return stored

    @translate_errors(log)
    def GetModel(
        self, request: modelstore_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> modelstore_pb2.ModelRecord:
        self._auth.require_service(context)
        try:
            return self._catalog.get(request.job_id, request.round)
        except ModelNotFound as error:
            raise not_found(str(error)) from None

    @translate_errors(log)
    def ListModels(
        self, request: modelstore_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> modelstore_pb2.ListModelsResponse:
        self._auth.require_service(context)
        return modelstore_pb2.ListModelsResponse(models=self._catalog.list(request.job_id))
