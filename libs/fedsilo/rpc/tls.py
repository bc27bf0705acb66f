"""Transport security: every gRPC hop is mutual TLS with certificates from the platform CA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsConfig:
    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def load(cls, ca: Path, cert: Path, key: Path) -> TlsConfig:
        try:
            return cls(ca.read_bytes(), cert.read_bytes(), key.read_bytes())
        except OSError as error:
            raise ValueError(f"cannot read TLS material: {error}") from None

    def server_credentials(self) -> grpc.ServerCredentials:
        """The server proves itself and requires a client certificate from the same CA."""
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def enrollment_credentials(self) -> grpc.ServerCredentials:
        """Server-authenticated only: how a new client reaches Enroll before it has a cert."""
        return grpc.ssl_server_credentials([(self.key, self.cert)])

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )
