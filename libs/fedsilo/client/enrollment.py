"""A client's identity and its way into the control plane: enroll once with the site's
one-time token, keep the key and certificate (mode 0600) in the site's state folder, present
them on every call after, and learn the services' addresses from the registry."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from fedsilo.discovery import REGISTRY, DiscoveryError, resolve_endpoints
from fedsilo.pki import generate_key, key_pem, make_csr
from fedsilo.pki.files import write_private
from fedsilo.rpc.channels import CHANNEL_OPTIONS, connect
from fedsilo.rpc.tls import TlsConfig
from fedsilo.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger("fedsilo.client")


class EnrollmentError(RuntimeError):
    pass


@dataclass(frozen=True)
class IdentityFiles:
    folder: Path

    @property
    def key(self) -> Path:
        return self.folder / "client.key"

    @property
    def cert(self) -> Path:
        return self.folder / "client.crt"

    @property
    def record(self) -> Path:
        return self.folder / "identity.json"

    def exists(self) -> bool:
        return self.key.exists() and self.cert.exists() and self.record.exists()

    def client_id(self) -> str:
        return str(json.loads(self.record.read_text())["client_id"])


def enroll_with_token(
    files: IdentityFiles,
    site: str,
    token: str,
    ca_pem: bytes,
    enroll_address: str,
    capabilities: registry_pb2.Capabilities,
) -> str:
    """First contact: a fresh key pair, a CSR, the token; the CA decides the identity."""
    key = generate_key()
    with _server_authenticated(enroll_address, ca_pem) as channel:
        try:
            response = registry_pb2_grpc.RegistryStub(channel).Enroll(
                registry_pb2.EnrollRequest(
                    site=site,
                    capabilities=capabilities,
                    enrollment_token=token,
                    csr_pem=make_csr(key, site),
                ),
                timeout=30,
                wait_for_ready=True,
            )
        except grpc.RpcError as error:
            raise EnrollmentError(
                f"enrollment of site {site!r} refused: {error.code().name}: {error.details()}"
            ) from None
    write_private(files.key, key_pem(key))
    files.cert.write_bytes(response.certificate_pem)
    files.record.write_text(json.dumps({"client_id": response.client_id, "site": site}))
    log.info("enrolled as %s; certificate stored in %s", response.client_id, files.folder)
    return str(response.client_id)


def client_tls(files: IdentityFiles, ca_pem: bytes) -> TlsConfig:
    return TlsConfig(ca_pem, files.cert.read_bytes(), files.key.read_bytes())


def _server_authenticated(address: str, ca_pem: bytes) -> grpc.Channel:
    """The registry's enrollment port: the server proves itself; the client has no cert yet."""
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    return grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS)


def discover(
    channel: grpc.Channel, registry_address: str, timeout_s: float = 30.0
) -> dict[str, str]:
    """The addresses the registry advertises to this caller (see fedsilo.discovery)."""
    try:
        response = registry_pb2_grpc.RegistryStub(channel).Discover(
            registry_pb2.DiscoverRequest(), timeout=timeout_s, wait_for_ready=True
        )
    except grpc.RpcError as error:
        raise EnrollmentError(
            f"service discovery at the registry {registry_address} failed: "
            f"{error.code().name}: {error.details()} (is that the address the operator gave "
            "for sites, and the platform CA its certificate chains to?)"
        ) from None
    return dict(response.endpoints)


@dataclass(frozen=True)
class SiteConnection:
    """Where this site reaches each service, and the credentials it presents there."""

    endpoints: dict[str, str]
    tls: TlsConfig | None


def join_control_plane(
    registry_address: str,
    overrides: dict[str, str | None],
    *,
    identity: IdentityFiles | None = None,
    ca_pem: bytes | None = None,
    enroll: Callable[[], None] | None = None,
) -> SiteConnection:
    """Given only the registry's address (and, with TLS, the CA and an identity or a way to
    get one), learn every service's address from the registry.

    With TLS the given address is the registry's enrollment port: it names the registry's
    mutual-TLS address to anyone; `enroll` runs there when the site has no certificate yet;
    then, presenting the certificate, the site asks again and hears every service."""
    if identity is None or ca_pem is None:  # plaintext experiment: one registry port
        with connect(registry_address, None) as channel:
            discovered = discover(channel, registry_address)
        return SiteConnection(_resolved(discovered, overrides), None)
    with _server_authenticated(registry_address, ca_pem) as channel:
        public = discover(channel, registry_address)
    if not identity.exists():
        if enroll is None:
            raise EnrollmentError(
                "first start of this site: give the one-time enrollment token from "
                "`fedsilo site add` (FEDSILO_ENROLLMENT_TOKEN or --token)"
            )
        enroll()
    tls = client_tls(identity, ca_pem)
    registry = overrides.get(REGISTRY) or public.get(REGISTRY)
    if not registry:
        raise EnrollmentError(
            f"the registry at {registry_address} does not advertise its mutual-TLS address: "
            "its FEDSILO_SITE_ENDPOINTS (the chart's siteEndpoints) must name 'registry'"
        )
    with connect(registry, tls) as channel:
        discovered = discover(channel, registry)
    return SiteConnection(_resolved({**public, **discovered}, overrides), tls)


def _resolved(discovered: dict[str, str], overrides: dict[str, str | None]) -> dict[str, str]:
    try:
        endpoints = resolve_endpoints(discovered, overrides)
    except DiscoveryError as error:
        raise EnrollmentError(str(error)) from None
    log.info(
        "control plane: %s", ", ".join(f"{name} {address}" for name, address in endpoints.items())
    )
    return endpoints
