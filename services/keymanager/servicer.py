"""KeyManager gRPC servicer: the platform CA (enrollment tokens, client certificates,
revocation) and the per-round public-key directory."""

from __future__ import annotations

import logging
import time

import grpc

from fedsilo.audit import AuditLog
from fedsilo.keymanager.certificates import ClientCertificates
from fedsilo.keymanager.directory import KeyConflict, KeyDirectory, RoundKey
from fedsilo.keymanager.jobkeys import DecryptionRefused, JobKeys
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.paillier import PackingSpec
from fedsilo.pki import TokenError
from fedsilo.rpc.auth import Authorizer
from fedsilo.rpc.errors import (
    RpcRejection,
    failed_precondition,
    invalid_argument,
    permission_denied,
    translate_errors,
)
from fedsilo.v1 import keymanager_pb2, keymanager_pb2_grpc

log = logging.getLogger("fedsilo.keymanager")


class KeyManagerServicer(keymanager_pb2_grpc.KeyManagerServicer):
    def __init__(
        self,
        directory: KeyDirectory,
        certificates: ClientCertificates,
        auth: Authorizer,
        audit: AuditLog | None = None,
        job_keys: JobKeys | None = None,
        models: ModelStoreClient | None = None,
    ) -> None:
        self._job_keys = job_keys
        self._models = models
        self._directory = directory
        self._certificates = certificates
        self._auth = auth
        self.audit = audit

    def _record(self, event: str, actor: str, **details: object) -> None:
        if self.audit is not None:
            self.audit.append(event, actor=actor, **details)

    @translate_errors(log)
    def PublishRoundKey(
        self, request: keymanager_pb2.PublishRoundKeyRequest, context: grpc.ServicerContext
    ) -> keymanager_pb2.PublishRoundKeyResponse:
        self._auth.require_client(context, request.key.client_id)
        if not request.job_id or request.round < 1 or not request.key.client_id:
            raise invalid_argument("a round key needs job_id, round >= 1 and key.client_id")
        key = RoundKey(
            request.key.client_id,
            request.key.public_key,
            request.key.algorithm or "x25519",
            request.key.published_at,
        )
        try:
            count = self._directory.publish(request.job_id, request.round, key)
        except KeyConflict as error:
            raise RpcRejection(grpc.StatusCode.ALREADY_EXISTS, str(error)) from None
        except ValueError as error:
            raise invalid_argument(str(error)) from None
        self._record(
            "round_key_published",
            key.client_id,
            job_id=request.job_id,
            round=request.round,
            algorithm=key.algorithm,
        )
        return keymanager_pb2.PublishRoundKeyResponse(keys_in_round=count)

    @translate_errors(log)
    def ListRoundKeys(
        self, request: keymanager_pb2.ListRoundKeysRequest, context: grpc.ServicerContext
    ) -> keymanager_pb2.ListRoundKeysResponse:
        self._auth.require_identity(context)
        keys = self._directory.list(request.job_id, request.round)
        return keymanager_pb2.ListRoundKeysResponse(
            keys=[
                keymanager_pb2.RoundKey(
                    client_id=k.client_id,
                    public_key=k.public_key,
                    algorithm=k.algorithm,
                    published_at=k.published_at,
                )
                for k in keys
            ]
        )

    @translate_errors(log)
    def CreateEnrollmentToken(
        self,
        request: keymanager_pb2.CreateEnrollmentTokenRequest,
        context: grpc.ServicerContext,
    ) -> keymanager_pb2.CreateEnrollmentTokenResponse:
        self._auth.require_service(context, "scheduler")
        if not request.site:
            raise invalid_argument("an enrollment token needs the site it is for")
        ttl = request.ttl_s or 24 * 3600.0
        token = self._certificates.create_token(request.site, ttl)
        self._record("enrollment_token_created", "operator", site=request.site, ttl_s=ttl)
        return keymanager_pb2.CreateEnrollmentTokenResponse(
            token=token, expires_at=time.time() + ttl
        )

    @translate_errors(log)
    def IssueClientCertificate(
        self,
        request: keymanager_pb2.IssueClientCertificateRequest,
        context: grpc.ServicerContext,
    ) -> keymanager_pb2.IssueClientCertificateResponse:
        self._auth.require_service(context, "registry")
        try:
            pem = self._certificates.issue(
                request.site, request.enrollment_token, request.csr_pem, request.client_id
            )
        except TokenError as error:
            raise permission_denied(
                f"enrollment refused for site {request.site!r}: {error}"
            ) from None
        except ValueError as error:
            raise invalid_argument(str(error)) from None
        self._record("certificate_issued", request.client_id, site=request.site)
        return keymanager_pb2.IssueClientCertificateResponse(
            certificate_pem=pem, ca_certificate_pem=self._certificates.ca.cert_pem
        )

    @translate_errors(log)
    def RevokeClient(
        self, request: keymanager_pb2.RevokeClientRequest, context: grpc.ServicerContext
    ) -> keymanager_pb2.RevokeClientResponse:
        self._auth.require_service(context, "scheduler")
        count = self._certificates.revoke(request.client_id, request.reason or "revoked")
        if count == 0:
            raise RpcRejection(
                grpc.StatusCode.NOT_FOUND, f"no certificate was issued to {request.client_id!r}"
            )
        self._record(
            "certificate_revoked", request.client_id, reason=request.reason, certificates=count
        )
        return keymanager_pb2.RevokeClientResponse(certificates_revoked=count)

    @translate_errors(log)
    def ListRevoked(
        self, request: keymanager_pb2.ListRevokedRequest, context: grpc.ServicerContext
    ) -> keymanager_pb2.ListRevokedResponse:
        self._auth.require_service(context)
        return keymanager_pb2.ListRevokedResponse(
            serials=[str(serial) for serial in sorted(self._certificates.revoked_serials())]
        )

    # Packed Paillier ----------------------------------------------------------------------
    def _keys(self) -> tuple[JobKeys, ModelStoreClient]:
        if self._job_keys is None or self._models is None:
            raise RpcRejection(
                grpc.StatusCode.UNIMPLEMENTED,
                "this keymanager has no model store configured for Paillier",
            )
        return self._job_keys, self._models

    def _job_key_message(self, job_id: str) -> keymanager_pb2.JobKey:
        keys, _ = self._keys()
        try:
            key = keys.get(job_id)
        except KeyError as error:
            raise RpcRejection(grpc.StatusCode.NOT_FOUND, str(error.args[0])) from None
        return keymanager_pb2.JobKey(
            job_id=job_id,
            public_key=keys.public_bytes(job_id),
            min_clients=key.min_clients,
            packing=keymanager_pb2.PackingParameters(
                key_bits=key.packing.key_bits,
                max_clients=key.packing.num_clients,
                clip=key.packing.clip,
                value_bits=key.packing.value_bits,
            ),
        )

    @translate_errors(log)
    def CreateJobKey(
        self, request: keymanager_pb2.CreateJobKeyRequest, context: grpc.ServicerContext
    ) -> keymanager_pb2.JobKey:
        self._auth.require_service(context, "scheduler")
        keys, _ = self._keys()
        packing = PackingSpec(
            key_bits=request.packing.key_bits,
            num_clients=request.packing.max_clients,
            clip=request.packing.clip,
            value_bits=request.packing.value_bits,
        )
        try:
            keys.create(request.job_id, packing, request.min_clients)
        except ValueError as error:
            raise invalid_argument(str(error)) from None
        self._record(
            "job_key_created",
            "scheduler",
            job_id=request.job_id,
            key_bits=packing.key_bits,
            min_clients=request.min_clients,
        )
        return self._job_key_message(request.job_id)

    @translate_errors(log)
    def GetJobKey(
        self, request: keymanager_pb2.GetJobKeyRequest, context: grpc.ServicerContext
    ) -> keymanager_pb2.JobKey:
        self._auth.require_identity(context)
        return self._job_key_message(request.job_id)

    @translate_errors(log)
    def CheckUpload(
        self, request: keymanager_pb2.CheckUploadRequest, context: grpc.ServicerContext
    ) -> keymanager_pb2.CheckUploadResponse:
        self._auth.require_service(context, "scheduler")
        keys, models = self._keys()
        try:
            upload = models.download(request.digest)
            valid = keys.check_upload(request.job_id, upload)
        except (ValueError, KeyError) as error:
            return keymanager_pb2.CheckUploadResponse(valid=False, reason=str(error))
        reason = "" if valid else "not encrypted under the job's key (canary does not decrypt)"
        return keymanager_pb2.CheckUploadResponse(valid=valid, reason=reason)

    @translate_errors(log)
    def DecryptAggregate(
        self, request: keymanager_pb2.DecryptAggregateRequest, context: grpc.ServicerContext
    ) -> keymanager_pb2.DecryptAggregateResponse:
        self._auth.require_service(context, "scheduler")
        keys, models = self._keys()
        uploads = {u.client_id: models.download(u.digest) for u in request.uploads}
        try:
            total = keys.decrypt(
                request.job_id,
                models.download(request.aggregate_digest),
                uploads,
                request.num_values,
            )
        except DecryptionRefused as error:
            raise failed_precondition(str(error)) from None
        except (ValueError, KeyError) as error:
            raise invalid_argument(f"cannot decrypt: {error}") from None
        digest = models.upload(total.astype("<f4").tobytes(), dtype="float32").ref.digest
        self._record(
            "aggregate_decrypted",
            "scheduler",
            job_id=request.job_id,
            round=request.round,
            clients=sorted(uploads),
            aggregate=request.aggregate_digest,
            sum=digest,
        )
        return keymanager_pb2.DecryptAggregateResponse(sum_digest=digest)
