"""The platform's PKI: a CA that issues client and service certificates, identities carried in
the certificates, one-time enrollment tokens and revocation. Used by the keymanager."""

from fedsilo.pki.ca import CertificateAuthority, generate_key, key_pem, make_csr
from fedsilo.pki.identity import Identity, IdentityError, certificate_identity
from fedsilo.pki.revocation import RevocationList
from fedsilo.pki.tokens import EnrollmentTokens, TokenError

__all__ = [
    "CertificateAuthority",
    "EnrollmentTokens",
    "Identity",
    "IdentityError",
    "RevocationList",
    "TokenError",
    "certificate_identity",
    "generate_key",
    "key_pem",
    "make_csr",
]
