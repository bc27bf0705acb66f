from __future__ import annotations

import datetime as dt
import os
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedsilo.pki import (
    CertificateAuthority,
    EnrollmentTokens,
    Identity,
    IdentityError,
    RevocationList,
    TokenError,
    certificate_identity,
    generate_key,
    key_pem,
    make_csr,
)

DAY = dt.timedelta(days=1)


def test_the_ca_key_is_private_and_reloaded(tmp_path: Path) -> None:
    authority = CertificateAuthority.load_or_create(tmp_path / "ca")
    assert os.stat(tmp_path / "ca" / "ca.key").st_mode & 0o777 == 0o600
    again = CertificateAuthority.load_or_create(tmp_path / "ca")
    assert again.cert_pem == authority.cert_pem


def test_issued_certificates_carry_the_identity_the_ca_chose() -> None:
    authority = CertificateAuthority.create()
    key = generate_key()
    pem = authority.issue(
        make_csr(key, "i-claim-to-be-another-site"),
        Identity("client", "cleveland-1a2b"),
        validity=DAY,
    )
    facts = certificate_identity(pem)
    assert facts.identity == Identity("client", "cleveland-1a2b")
    assert facts.not_after - facts.not_before == DAY
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    certificate = x509.load_pem_x509_certificate(pem)
    authority.certificate.public_key().verify(  # type: ignore[call-arg]
        certificate.signature,
        certificate.tbs_certificate_bytes,
        ec.ECDSA(certificate.signature_hash_algorithm),
    )  # type: ignore[arg-type]


def test_a_tampered_csr_is_refused() -> None:
    authority = CertificateAuthority.create()
    csr = bytearray(make_csr(generate_key(), "x"))
    csr[len(csr) // 2] ^= 1
    with pytest.raises(ValueError):
        authority.issue(bytes(csr), Identity("client", "x"), validity=DAY)


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://other/client/a",
        "spiffe://fedsilo/root/a",
        "spiffe://fedsilo/client/a/b",
        "https://fedsilo/client/a",
    ],
)
def test_foreign_identities_are_refused(uri: str) -> None:
    with pytest.raises(IdentityError):
        Identity.from_uri(uri)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_enrollment_tokens_are_one_time_per_site_and_expire(tmp_path: Path) -> None:
    clock = Clock()
    tokens = EnrollmentTokens(tmp_path / "t.db", clock=clock)
    token = tokens.create("cleveland", ttl_s=60)
    with pytest.raises(TokenError, match="another site"):
        tokens.redeem(token, "hungarian")
    tokens.redeem(token, "cleveland")
    with pytest.raises(TokenError, match="already used"):
        tokens.redeem(token, "cleveland")
    late = tokens.create("va", ttl_s=60)
    clock.now += 61
    with pytest.raises(TokenError, match="expired"):
        tokens.redeem(late, "va")
    with pytest.raises(TokenError, match="unknown"):
        tokens.redeem("made-up", "va")
    assert token not in (tmp_path / "t.db").read_bytes().decode(errors="ignore")


def test_revocations_persist(tmp_path: Path) -> None:
    revoked = RevocationList(tmp_path / "r.db")
    revoked.revoke(12345678901234567890, "client/a", "key lost")
    assert RevocationList(tmp_path / "r.db").is_revoked(12345678901234567890)
    assert not revoked.is_revoked(1)


# Real TLS handshakes: a server that requires client certificates from the platform CA.


def _pair(
    authority: CertificateAuthority, identity: Identity, **names: object
) -> tuple[bytes, bytes]:
    key = generate_key()
    cert = authority.issue(make_csr(key, identity.name), identity, validity=DAY, **names)  # type: ignore[arg-type]
    return key_pem(key), cert


@pytest.fixture
def mtls_server() -> tuple[CertificateAuthority, int, list[str]]:
    authority = CertificateAuthority.create()
    key, cert = _pair(
        authority,
        Identity("service", "registry"),
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
    )
    seen: list[str] = []

    server = grpc.server(futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()

    original = servicer.Check

    def check(request, context):  # type: ignore[no-untyped-def]
        pem = context.auth_context().get("x509_pem_cert", [b""])[0]
        seen.append(str(certificate_identity(pem).identity))
        return original(request, context)

    servicer.Check = check  # type: ignore[method-assign]
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=authority.cert_pem, require_client_auth=True
        ),
    )
    server.start()
    yield authority, port, seen
    server.stop(0)


def _check(port: int, root: bytes, pair: tuple[bytes, bytes] | None) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=pair[0] if pair else None,
        certificate_chain=pair[1] if pair else None,
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_mutual_tls_admits_platform_certificates_and_names_the_peer(
    mtls_server: tuple[CertificateAuthority, int, list[str]],
) -> None:
    authority, port, seen = mtls_server
    _check(port, authority.cert_pem, _pair(authority, Identity("client", "va-1")))
    assert seen == ["client/va-1"]


def test_mutual_tls_refuses_no_certificate_and_a_foreign_ca(
    mtls_server: tuple[CertificateAuthority, int, list[str]],
) -> None:
    authority, port, seen = mtls_server
    with pytest.raises(grpc.RpcError) as missing:
        _check(port, authority.cert_pem, None)
    assert missing.value.code() == grpc.StatusCode.UNAVAILABLE
    stranger = CertificateAuthority.create("somebody else's CA")
    with pytest.raises(grpc.RpcError):
        _check(port, authority.cert_pem, _pair(stranger, Identity("client", "va-1")))
    assert seen == []
