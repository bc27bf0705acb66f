"""Registry gRPC servicer."""

from __future__ import annotations

import logging
import re

import grpc

from fedsilo.audit import AuditLog
from fedsilo.discovery import advertised_to
from fedsilo.registry.store import RegistryStore, UnknownClient
from fedsilo.rpc.auth import Authorizer, unauthenticated
from fedsilo.rpc.errors import (
    RpcRejection,
    invalid_argument,
    not_found,
    permission_denied,
    translate_errors,
)
from fedsilo.telemetry import CLIENTS_ALIVE, CLIENTS_ENROLLED, HEARTBEATS
from fedsilo.v1 import keymanager_pb2, keymanager_pb2_grpc, registry_pb2, registry_pb2_grpc

log = logging.getLogger("fedsilo.registry")

SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(
        self,
        store: RegistryStore,
        heartbeat_interval_s: float,
        auth: Authorizer,
        keymanager: keymanager_pb2_grpc.KeyManagerStub,
        audit: AuditLog | None = None,
        site_endpoints: dict[str, str] | None = None,
    ) -> None:
        self._site_endpoints = dict(site_endpoints or {})
        self._auth = auth
        self._keymanager = keymanager
        self.audit = audit
        self._store = store
        self._interval = heartbeat_interval_s

    def _refresh_gauges(self) -> None:
        enrolled, alive = self._store.counts()
        CLIENTS_ENROLLED.set(enrolled)
        CLIENTS_ALIVE.set(alive)

    @translate_errors(log)
    def Enroll(
        self, request: registry_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> registry_pb2.EnrollResponse:
        if not SITE_NAME.match(request.site):
            raise invalid_argument(
                f"site name {request.site!r} must be lowercase letters, digits and '-' "
                "(at most 63, starting with a letter or digit)"
            )
        identity = self._auth.identity(context)
        response = registry_pb2.EnrollResponse(heartbeat_interval_s=self._interval)
        if identity is not None:
            # Back after a restart: the certificate says who it is; only its own site.
            if identity.kind != "client" or self._store.site_of(identity.name) != request.site:
                raise permission_denied(f"{identity} cannot enroll for site {request.site!r}")
            response.client_id = self._store.enroll(
                request.site, request.capabilities, identity.name
            )
        elif self._auth.enabled:
            response.client_id = self._store.new_client_id(request.site)
            response.certificate_pem, response.ca_certificate_pem = self._issue(
                request, response.client_id
            )
            self._store.enroll(request.site, request.capabilities, response.client_id)
        else:
            response.client_id = self._store.enroll(request.site, request.capabilities)
        datasets = ", ".join(d.name for d in request.capabilities.datasets) or "none"
        log.info(
            "enrolled %s for site %s (datasets: %s)", response.client_id, request.site, datasets
        )
        if self.audit is not None:
            self.audit.append(
                "client_enrolled",
                actor=response.client_id,
                site=request.site,
                peer=context.peer(),
                certificate_issued=bool(response.certificate_pem),
            )
        self._refresh_gauges()
        return response

    def _issue(self, request: registry_pb2.EnrollRequest, client_id: str) -> tuple[bytes, bytes]:
        if not request.enrollment_token or not request.csr_pem:
            raise unauthenticated("first enrollment needs the site's one-time token and a CSR")
        try:
            issued = self._keymanager.IssueClientCertificate(
                keymanager_pb2.IssueClientCertificateRequest(
                    site=request.site,
                    enrollment_token=request.enrollment_token,
                    csr_pem=request.csr_pem,
                    client_id=client_id,
                ),
                timeout=30,
            )
        except grpc.RpcError as error:
            raise RpcRejection(error.code(), str(error.details())) from None
        return issued.certificate_pem, issued.ca_certificate_pem

    @translate_errors(log)
    def Heartbeat(
        self, request: registry_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> registry_pb2.HeartbeatResponse:
        self._auth.require_client(context, request.client_id)
        capabilities = request.capabilities if request.HasField("capabilities") else None
        try:
            self._store.heartbeat(request.client_id, capabilities)
        except UnknownClient as error:
            raise not_found(str(error)) from None
        HEARTBEATS.inc()
        return registry_pb2.HeartbeatResponse(heartbeat_interval_s=self._interval)

    @translate_errors(log)
    def ListClients(
        self, request: registry_pb2.ListClientsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListClientsResponse:
        self._auth.require_service(context)
        records = self._store.list(alive_only=request.alive_only, dataset=request.dataset)
        self._refresh_gauges()
        return registry_pb2.ListClientsResponse(clients=[r.to_proto() for r in records])

    @translate_errors(log)
    def GetClient(
        self, request: registry_pb2.GetClientRequest, context: grpc.ServicerContext
    ) -> registry_pb2.Client:
        self._auth.require_service(context)
        try:
            return self._store.get(request.client_id).to_proto()
        except UnknownClient as error:
            raise not_found(str(error)) from None

    @translate_errors(log)
    def Discover(
        self, request: registry_pb2.DiscoverRequest, context: grpc.ServicerContext
    ) -> registry_pb2.DiscoverResponse:
        identity = self._auth.identity(context)
        enrolled = not self._auth.enabled or identity is not None
        return registry_pb2.DiscoverResponse(
            endpoints=advertised_to(self._site_endpoints, enrolled=enrolled)
        )
