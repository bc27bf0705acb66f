"""Who is calling, from the peer's certificate, and what that identity may do.

A client may act only as itself (its client id is its certificate's identity); calls between
services need a service certificate. Revoked certificates are refused on every call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

from fedsilo.pki import Identity, IdentityError, certificate_identity
from fedsilo.rpc.errors import RpcRejection, permission_denied
from fedsilo.v1 import keymanager_pb2, keymanager_pb2_grpc

log = logging.getLogger("fedsilo.auth")


def unauthenticated(message: str) -> RpcRejection:
    return RpcRejection(grpc.StatusCode.UNAUTHENTICATED, message)


class Authorizer:
    """`enabled=False` only for plaintext local experiments (FEDSILO_INSECURE)."""

    def __init__(self, enabled: bool, revoked: Callable[[], set[int]] = set) -> None:
        self.enabled = enabled
        self._revoked = revoked

    def identity(self, context: grpc.ServicerContext) -> Identity | None:
        """The caller's verified identity; None when TLS is off or no certificate was shown."""
        if not self.enabled:
            return None
        certificates = context.auth_context().get("x509_pem_cert")
        if not certificates:
            return None
        try:
            facts = certificate_identity(certificates[0])
        except IdentityError as error:
            raise unauthenticated(str(error)) from None
        if facts.serial in self._revoked():
            raise unauthenticated(f"the certificate of {facts.identity} has been revoked")
        return facts.identity

    def require_identity(self, context: grpc.ServicerContext) -> Identity | None:
        identity = self.identity(context)
        if self.enabled and identity is None:
            raise unauthenticated(
                "a client certificate from the platform CA is required: enroll with the "
                "site's token on the registry's enrollment port first"
            )
        return identity

    def require_client(self, context: grpc.ServicerContext, client_id: str) -> None:
        identity = self.require_identity(context)
        if identity is not None and identity != Identity("client", client_id or "-"):
            raise permission_denied(f"{identity} may not act as client {client_id!r}")

    def require_service(self, context: grpc.ServicerContext, *names: str) -> None:
        identity = self.require_identity(context)
        if identity is None:
            return
        if identity.kind != "service" or (names and identity.name not in names):
            allowed = ", ".join(names) if names else "any service"
            raise permission_denied(f"{identity} may not call this; allowed: {allowed}")


class RevocationCache:
    """Revoked serials from the keymanager, refreshed in the background."""

    def __init__(self, keymanager: keymanager_pb2_grpc.KeyManagerStub, refresh_s: float) -> None:
        self._stub = keymanager
        self._refresh_s = refresh_s
        self._serials: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="revocations", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def __call__(self) -> set[int]:
        return self._serials

    def refresh(self) -> None:
        response = self._stub.ListRevoked(keymanager_pb2.ListRevokedRequest(), timeout=10)
        self._serials = {int(serial) for serial in response.serials}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except grpc.RpcError as error:
                log.warning("cannot refresh revoked certificates: %s", error.code().name)
            self._stop.wait(self._refresh_s)
