"""KeyManager gRPC servicer: the per-round public-key directory."""

from __future__ import annotations

import logging

import grpc
from fedsilo.audit import AuditLog
from fedsilo.keymanager.directory import KeyConflict, KeyDirectory, RoundKey
from fedsilo.rpc.errors import RpcRejection, invalid_argument, translate_errors
from fedsilo.v1 import keymanager_pb2, keymanager_pb2_grpc

log = logging.getLogger("fedsilo.keymanager")


class KeyManagerServicer(keymanager_pb2_grpc.KeyManagerServicer):
    def __init__(self, directory: KeyDirectory, audit: AuditLog | None = None) -> None:
        self._directory = directory
        self.audit = audit

    @translate_errors(log)
    def PublishRoundKey(
        self, request: keymanager_pb2.PublishRoundKeyRequest, context: grpc.ServicerContext
    ) -> keymanager_pb2.PublishRoundKeyResponse:
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
            if self.audit is not None:
                self.audit.append(
                    "round_key_published",
                    actor=key.client_id,
                    job_id=request.job_id,
                    round=request.round,
                    algorithm=key.algorithm,
                )
        except KeyConflict as error:
            raise RpcRejection(grpc.StatusCode.ALREADY_EXISTS, str(error)) from None
        except ValueError as error:
            raise invalid_argument(str(error)) from None
        return keymanager_pb2.PublishRoundKeyResponse(keys_in_round=count)

    @translate_errors(log)
    def ListRoundKeys(
        self, request: keymanager_pb2.ListRoundKeysRequest, context: grpc.ServicerContext
    ) -> keymanager_pb2.ListRoundKeysResponse:
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
