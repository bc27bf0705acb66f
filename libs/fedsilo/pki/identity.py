"""Who a certificate says its holder is: `spiffe://fedsilo/<kind>/<name>` in the URI SAN."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

Kind = Literal["client", "service", "operator"]
_URI = re.compile(r"^spiffe://fedsilo/(client|service|operator)/([A-Za-z0-9._-]{1,128})$")


class IdentityError(ValueError):
    """A certificate or name that does not carry a valid fedsilo identity."""


@dataclass(frozen=True)
class Identity:
    kind: Kind
    name: str

    def __post_init__(self) -> None:
        if not _URI.match(f"spiffe://fedsilo/{self.kind}/{self.name}"):
            raise IdentityError(f"invalid identity {self.kind}/{self.name!r}")

    @property
    def uri(self) -> str:
        return f"spiffe://fedsilo/{self.kind}/{self.name}"

    @classmethod
    def from_uri(cls, uri: str) -> Identity:
        match = _URI.match(uri)
        if match is None:
            raise IdentityError(f"{uri!r} is not a fedsilo identity")
        kind: Kind = match.group(1)  # type: ignore[assignment]
        return cls(kind, match.group(2))

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class CertificateFacts:
    identity: Identity
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime


def certificate_identity(pem: bytes) -> CertificateFacts:
    """The identity, serial and validity of a PEM certificate (not a verification: TLS did that)."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound) as error:
        raise IdentityError(f"certificate without a fedsilo identity: {error}") from None
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    identities = [Identity.from_uri(uri) for uri in uris if uri.startswith("spiffe://fedsilo/")]
    if len(identities) != 1:
        raise IdentityError(f"expected one fedsilo identity in the certificate, found {uris}")
    return CertificateFacts(
        identities[0],
        certificate.serial_number,
        certificate.not_valid_before_utc,
        certificate.not_valid_after_utc,
    )
