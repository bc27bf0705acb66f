"""A client's identity: enroll once with the site's one-time token, keep the key and
certificate (mode 0600) in the site's state folder, and present them on every call after."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from fedsilo.pki import generate_key, key_pem, make_csr
from fedsilo.pki.files import write_private
from fedsilo.rpc.channels import CHANNEL_OPTIONS
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
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    with grpc.secure_channel(enroll_address, credentials, options=CHANNEL_OPTIONS) as channel:
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
