"""Local bootstrap of the platform's trust: what `fedsilo up` and the demo do before starting
services (in Kubernetes the charts do the same with Secrets or cert-manager).

Everything is written under the state folder, never into the repository; keys are mode 0600.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedsilo.pki.ca import CertificateAuthority, generate_key, key_pem, make_csr
from fedsilo.pki.files import write_private
from fedsilo.pki.identity import Identity

SERVICES = ("registry", "keymanager", "scheduler", "aggregator", "modelstore")


@dataclass(frozen=True)
class ServiceTls:
    ca: Path
    cert: Path
    key: Path

    def env(self) -> dict[str, str]:
        return {
            "FEDSILO_TLS_CA": str(self.ca),
            "FEDSILO_TLS_CERT": str(self.cert),
            "FEDSILO_TLS_KEY": str(self.key),
        }


@dataclass(frozen=True)
class LocalTrust:
    ca_dir: Path
    tls_dir: Path
    operator_token_file: Path

    @property
    def ca_cert(self) -> Path:
        return self.tls_dir / "ca.crt"

    def service(self, name: str) -> ServiceTls:
        return ServiceTls(self.ca_cert, self.tls_dir / f"{name}.crt", self.tls_dir / f"{name}.key")

    @property
    def operator_token(self) -> str:
        return self.operator_token_file.read_text().strip()


def bootstrap_local_trust(
    state_dir: Path,
    services: Sequence[str] = SERVICES,
    hosts: Sequence[str] = ("localhost",),
    addresses: Sequence[str] = ("127.0.0.1", "::1"),
    validity: dt.timedelta = dt.timedelta(days=90),
) -> LocalTrust:
    """The CA (kept by the keymanager), one certificate per service, and the operator token.
    Existing material is reused, so a restarted control plane keeps its identities."""
    trust = LocalTrust(
        state_dir / "keymanager" / "ca", state_dir / "tls", state_dir / "operator-token"
    )
    authority = CertificateAuthority.load_or_create(trust.ca_dir)
    trust.tls_dir.mkdir(parents=True, exist_ok=True)
    trust.ca_cert.write_bytes(authority.cert_pem)
    for name in services:
        files = trust.service(name)
        if files.cert.exists() and files.key.exists():
            continue
        key = generate_key()
        files.cert.write_bytes(
            authority.issue(
                make_csr(key, name),
                Identity("service", name),
                validity=validity,
                dns_names=[name, *hosts],
                ip_addresses=list(addresses),
            )
        )
        write_private(files.key, key_pem(key))
    if not trust.operator_token_file.exists():
        write_private(trust.operator_token_file, secrets.token_urlsafe(32).encode())
    return trust
