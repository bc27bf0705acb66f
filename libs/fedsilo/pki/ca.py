"""The platform CA. Its private key stays in the keymanager's volume (mode 0600)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsilo.pki.files import write_private
from fedsilo.pki.identity import Identity

PrivateKey = ec.EllipticCurvePrivateKey


def generate_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_csr(key: PrivateKey, common_name: str) -> bytes:
    """A certificate signing request; the CA decides the identity, not the requester."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


class CertificateAuthority:
    KEY_FILE = "ca.key"
    CERT_FILE = "ca.crt"

    def __init__(self, key: PrivateKey, certificate: x509.Certificate) -> None:
        self._key = key
        self.certificate = certificate

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(
        cls, name: str = "fedsilo platform CA", validity_days: int = 3650
    ) -> CertificateAuthority:
        key = generate_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @property
    def key_pem(self) -> bytes:
        """The CA's private key: for the CA's own storage (a 0600 file or a Secret) only."""
        return key_pem(self._key)

    @classmethod
    def from_pem(cls, key: bytes, certificate: bytes, source: str = "CA") -> CertificateAuthority:
        loaded = serialization.load_pem_private_key(key, password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{source}: the CA key is not an EC private key")
        cert = x509.load_pem_x509_certificate(certificate)
        if cert.public_key() != loaded.public_key():
            raise ValueError(f"{source}: the CA certificate does not belong to the CA key")
        return cls(loaded, cert)

    @classmethod
    def load_or_create(cls, directory: Path) -> CertificateAuthority:
        key_path, cert_path = directory / cls.KEY_FILE, directory / cls.CERT_FILE
        if key_path.exists() and cert_path.exists():
            return cls.from_pem(key_path.read_bytes(), cert_path.read_bytes(), str(directory))
        directory.mkdir(parents=True, exist_ok=True)
        authority = cls.create()
        write_private(key_path, authority.key_pem)
        cert_path.write_bytes(authority.cert_pem)
        return authority

    def issue(
        self,
        csr_pem: bytes,
        identity: Identity,
        *,
        validity: dt.timedelta,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        not_before: dt.datetime | None = None,
    ) -> bytes:
        """Sign a CSR for `identity`. Only the CSR's key is taken from the requester."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as error:
            raise ValueError(f"not a PEM certificate signing request: {error}") from None
        if not csr.is_signature_valid:
            raise ValueError("the CSR's signature does not match its key")
        start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        names += [x509.DNSName(name) for name in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if identity.kind == "service":
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
            .issuer_name(self.certificate.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM)
