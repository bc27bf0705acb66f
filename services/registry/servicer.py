"""Registry gRPC servicer."""

from __future__ import annotations

import logging
import re

import grpc
from fedsilo.audit import AuditLog
from fedsilo.registry.store import RegistryStore, UnknownClient
from fedsilo.rpc.errors import invalid_argument, not_found, translate_errors
from fedsilo.telemetry import CLIENTS_ALIVE, CLIENTS_ENROLLED, HEARTBEATS
from fedsilo.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger("fedsilo.registry")

SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(
        self, store: RegistryStore, heartbeat_interval_s: float, audit: AuditLog | None = None
    ) -> None:
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
        client_id = self._store.enroll(request.site, request.capabilities)
        if self.audit is not None:
            self.audit.append(
                "client_enrolled", actor=client_id, site=request.site, peer=context.peer()
            )
        datasets = ", ".join(d.name for d in request.capabilities.datasets) or "none"
        log.info("enrolled %s for site %s (datasets: %s)", client_id, request.site, datasets)
        self._refresh_gauges()
        return registry_pb2.EnrollResponse(client_id=client_id, heartbeat_interval_s=self._interval)

    @translate_errors(log)
    def Heartbeat(
        self, request: registry_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> registry_pb2.HeartbeatResponse:
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
        records = self._store.list(alive_only=request.alive_only, dataset=request.dataset)
        self._refresh_gauges()
        return registry_pb2.ListClientsResponse(clients=[r.to_proto() for r in records])

    @translate_errors(log)
    def GetClient(
        self, request: registry_pb2.GetClientRequest, context: grpc.ServicerContext
    ) -> registry_pb2.Client:
        try:
            return self._store.get(request.client_id).to_proto()
        except UnknownClient as error:
            raise not_found(str(error)) from None
