"""Trust bootstrap for a Kubernetes control plane: the platform CA and one certificate per
service, kept in Secrets (the control-plane chart runs this as a pre-install/pre-upgrade Job).

    python -m fedsilo.pki.cluster --namespace fl --ca-secret fl-fedsilo-ca \\
        --service registry:fl-fedsilo-registry-tls:fl-fedsilo-registry,fl-fedsilo-registry.fl ...

Every Secret has the layout cert-manager writes (`tls.crt`, `tls.key`, `ca.crt`), so the
workloads mount the same keys whichever issued them. The run is idempotent: an existing CA is
kept, and a service certificate is reissued only when it is missing, signed by another CA,
lacks a wanted DNS name or is close to expiry. `--directory DIR` writes the same Secrets as
files under DIR/<secret>/<key> instead of calling the Kubernetes API.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from fedsilo.pki.ca import CertificateAuthority, generate_key, key_pem, make_csr
from fedsilo.pki.files import write_private
from fedsilo.pki.identity import Identity

log = logging.getLogger(__name__)

CERT, KEY, CA = "tls.crt", "tls.key", "ca.crt"


@dataclass(frozen=True)
class ServiceCertificate:
    """A service's identity, the Secret that holds its certificate, and its DNS names."""

    service: str
    secret: str
    dns_names: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> ServiceCertificate:
        """`service:secret:dns1,dns2,...`"""
        parts = text.split(":")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise ValueError(f"expected service:secret:dns,names, got {text!r}")
        names = tuple(name for name in parts[2].split(",") if name)
        Identity("service", parts[0])
        return cls(parts[0], parts[1], names)


class SecretStore(Protocol):
    def read(self, name: str) -> dict[str, bytes] | None: ...

    def write(self, name: str, data: dict[str, bytes]) -> None: ...


class DirectorySecrets:
    """Secrets as folders of files (mode 0600): offline use and the charts' wiring test."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, name: str) -> dict[str, bytes] | None:
        folder = self.root / name
        if not folder.is_dir():
            return None
        return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}

    def write(self, name: str, data: dict[str, bytes]) -> None:
        for key, value in data.items():
            write_private(self.root / name / key, value)


class KubernetesSecrets:
    """Secrets in one namespace, through the in-cluster service account."""

    def __init__(self, namespace: str, labels: dict[str, str]) -> None:
        # An optional extra: only the chart's bootstrap Job (keymanager image) needs it.
        from kubernetes import client, config

        config.load_incluster_config()
        self._api = client.CoreV1Api()
        self._client = client
        self.namespace = namespace
        self.labels = labels

    def read(self, name: str) -> dict[str, bytes] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            secret: Any = self._api.read_namespaced_secret(name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}

    def write(self, name: str, data: dict[str, bytes]) -> None:
        body = self._client.V1Secret(
            metadata=self._client.V1ObjectMeta(name=name, labels=self.labels),
            type="kubernetes.io/tls",
            data={key: base64.b64encode(value).decode() for key, value in data.items()},
        )
        if self.read(name) is None:
            self._api.create_namespaced_secret(self.namespace, body)
        else:
            self._api.replace_namespaced_secret(name, self.namespace, body)


def _needs_new_certificate(
    existing: dict[str, bytes] | None,
    authority: CertificateAuthority,
    wanted: ServiceCertificate,
    renew_before: dt.timedelta,
) -> str | None:
    """Why the stored certificate must be replaced, or None to keep it."""
    if existing is None or CERT not in existing or KEY not in existing:
        return "missing"
    certificate = x509.load_pem_x509_certificate(existing[CERT])
    if certificate.issuer != authority.certificate.subject or existing.get(CA) != (
        authority.cert_pem
    ):
        return "issued by another CA"
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if not set(wanted.dns_names) <= set(names.get_values_for_type(x509.DNSName)):
        return "DNS names changed"
    if Identity("service", wanted.service).uri not in names.get_values_for_type(
        x509.UniformResourceIdentifier
    ):
        return "identity changed"
    if certificate.not_valid_after_utc - dt.datetime.now(dt.UTC) < renew_before:
        return "close to expiry"
    return None


def ensure_platform_trust(
    store: SecretStore,
    ca_secret: str,
    services: Sequence[ServiceCertificate],
    validity: dt.timedelta,
    renew_before: dt.timedelta,
) -> dict[str, str]:
    """Create what is missing or stale; returns what happened to each Secret."""
    actions: dict[str, str] = {}
    stored_ca = store.read(ca_secret)
    if stored_ca is None:
        authority = CertificateAuthority.create()
        store.write(
            ca_secret, {CERT: authority.cert_pem, KEY: authority.key_pem, CA: authority.cert_pem}
        )
        actions[ca_secret] = "created"
    else:
        if CERT not in stored_ca or KEY not in stored_ca:
            raise SystemExit(f"Secret {ca_secret} lacks {CERT} or {KEY}; refusing to replace a CA")
        authority = CertificateAuthority.from_pem(stored_ca[KEY], stored_ca[CERT], ca_secret)
        actions[ca_secret] = "kept"
    for wanted in services:
        reason = _needs_new_certificate(store.read(wanted.secret), authority, wanted, renew_before)
        if reason is None:
            actions[wanted.secret] = "kept"
            continue
        key = generate_key()
        certificate = authority.issue(
            make_csr(key, wanted.service),
            Identity("service", wanted.service),
            validity=validity,
            dns_names=list(wanted.dns_names),
        )
        store.write(wanted.secret, {CERT: certificate, KEY: key_pem(key), CA: authority.cert_pem})
        actions[wanted.secret] = f"issued ({reason})"
    return actions


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fedsilo.pki.cluster", description=__doc__)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--ca-secret", required=True)
    parser.add_argument("--service", action="append", type=ServiceCertificate.parse, default=[])
    parser.add_argument("--days", type=float, default=90.0, help="service certificate validity")
    parser.add_argument("--renew-days", type=float, default=15.0, help="reissue when closer")
    parser.add_argument("--label", action="append", default=[], help="key=value on new Secrets")
    parser.add_argument("--directory", type=Path, help="write files here instead of Secrets")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    store: SecretStore
    if args.directory is not None:
        store = DirectorySecrets(args.directory)
    else:
        labels = dict(label.split("=", 1) for label in args.label)
        store = KubernetesSecrets(args.namespace, labels)
    actions = ensure_platform_trust(
        store,
        args.ca_secret,
        args.service,
        dt.timedelta(days=args.days),
        dt.timedelta(days=args.renew_days),
    )
    for secret, action in actions.items():
        log.info("%s/%s: %s", args.namespace, secret, action)


if __name__ == "__main__":
    main(sys.argv[1:])
