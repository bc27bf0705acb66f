"""Identity and transport with real processes: mutual TLS everywhere, one-time enrollment
tokens, clients acting only as themselves, revocation and expiry. Every refusal has the right
gRPC status and, where the request reached a service, an audit entry."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import ssl
import time
from pathlib import Path

import grpc
import httpx
import pytest

from fedsilo.client.enrollment import EnrollmentError, IdentityFiles, client_tls, enroll_with_token
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.pki import CertificateAuthority, Identity, generate_key, key_pem, make_csr
from fedsilo.rpc.channels import connect
from fedsilo.rpc.tls import TlsConfig
from fedsilo.v1 import aggregator_pb2, aggregator_pb2_grpc, registry_pb2, registry_pb2_grpc

from .conftest import Federation, small_job

pytestmark = pytest.mark.slow


def _enroll(federation: Federation, folder: Path, site: str, token: str | None = None) -> str:
    plane = federation.plane
    assert plane.trust is not None
    token = token or federation.api.add_site(site)["token"]
    return enroll_with_token(
        IdentityFiles(folder / site),
        site,
        token,
        plane.trust.ca_cert.read_bytes(),
        plane.endpoints()["registry_enroll"],
        registry_pb2.Capabilities(),
    )


def _registry_as(federation: Federation, folder: Path, site: str) -> registry_pb2_grpc.RegistryStub:
    assert federation.plane.trust is not None
    tls = client_tls(IdentityFiles(folder / site), federation.plane.trust.ca_cert.read_bytes())
    return registry_pb2_grpc.RegistryStub(
        connect(federation.plane.service("registry").grpc_address, tls)
    )


def _audit(federation: Federation, service: str) -> list[dict[str, object]]:
    path = federation.plane.state_dir / "audit" / f"{service}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as error:
        call()  # type: ignore[operator]
    return error.value.code()


def test_no_certificate_no_entry(federation: Federation) -> None:
    plane = federation.plane
    assert plane.trust is not None
    server_only = grpc.ssl_channel_credentials(root_certificates=plane.trust.ca_cert.read_bytes())
    main_port = registry_pb2_grpc.RegistryStub(
        grpc.secure_channel(plane.service("registry").grpc_address, server_only)
    )
    beat = registry_pb2.HeartbeatRequest(client_id="cleveland-00000000")
    assert _code(lambda: main_port.Heartbeat(beat, timeout=5)) == grpc.StatusCode.UNAVAILABLE
    plaintext = registry_pb2_grpc.RegistryStub(
        grpc.insecure_channel(plane.service("registry").grpc_address)
    )
    assert _code(lambda: plaintext.Heartbeat(beat, timeout=5)) == grpc.StatusCode.UNAVAILABLE

    # the enrollment port admits anyone to Enroll, and nothing else
    enroll_port = registry_pb2_grpc.RegistryStub(
        grpc.secure_channel(plane.endpoints()["registry_enroll"], server_only)
    )
    assert _code(lambda: enroll_port.Heartbeat(beat, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    refused = [
        e
        for e in _audit(federation, "registry")
        if e["event"] == "request_rejected" and e["details"]["code"] == "UNAUTHENTICATED"
    ]  # type: ignore[index]
    assert refused and refused[-1]["actor"] == "cleveland-00000000"


def test_enrollment_tokens_are_one_time_and_for_one_site(
    federation: Federation, tmp_path: Path
) -> None:
    token = federation.api.add_site("clinic-a")["token"]
    _enroll(federation, tmp_path, "clinic-a", token)
    with pytest.raises(EnrollmentError, match=r"PERMISSION_DENIED.*already used"):
        _enroll(federation, tmp_path / "again", "clinic-a", token)
    other = federation.api.add_site("clinic-b")["token"]
    with pytest.raises(EnrollmentError, match=r"PERMISSION_DENIED.*another site"):
        _enroll(federation, tmp_path, "clinic-c", other)
    assert any(e["event"] == "certificate_issued" for e in _audit(federation, "keymanager"))
    denied = [
        e
        for e in _audit(federation, "registry")
        if e["event"] == "request_rejected" and e["details"]["code"] == "PERMISSION_DENIED"
    ]  # type: ignore[index]
    assert len(denied) >= 2


def test_a_client_acts_only_as_itself_and_never_as_a_service(
    federation: Federation, tmp_path: Path
) -> None:
    mine = _enroll(federation, tmp_path, "clinic-d")
    theirs = _enroll(federation, tmp_path, "clinic-e")
    registry = _registry_as(federation, tmp_path, "clinic-d")
    registry.Heartbeat(registry_pb2.HeartbeatRequest(client_id=mine))
    denied = registry_pb2.HeartbeatRequest(client_id=theirs)
    assert _code(lambda: registry.Heartbeat(denied)) == grpc.StatusCode.PERMISSION_DENIED
    assert (
        _code(lambda: registry.ListClients(registry_pb2.ListClientsRequest()))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert federation.plane.trust is not None
    tls = client_tls(
        IdentityFiles(tmp_path / "clinic-d"), federation.plane.trust.ca_cert.read_bytes()
    )
    queue = aggregator_pb2_grpc.AggregationQueueStub(
        connect(federation.plane.service("scheduler").grpc_address, tls)
    )
    lease = aggregator_pb2.LeaseShardRequest(worker_id="posing", wait_s=0)
    assert _code(lambda: queue.LeaseShard(lease)) == grpc.StatusCode.PERMISSION_DENIED
    posing = [
        e
        for e in _audit(federation, "registry")
        if e.get("actor") == theirs and e["event"] == "request_rejected"
    ]
    assert posing, "the attempt to heartbeat as another client is on record"


def test_a_revoked_client_is_refused_and_the_federation_goes_on(
    federation: Federation, tmp_path: Path
) -> None:
    client_id = _enroll(federation, tmp_path, "clinic-f")
    registry = _registry_as(federation, tmp_path, "clinic-f")
    registry.Heartbeat(registry_pb2.HeartbeatRequest(client_id=client_id))
    assert federation.api.revoke_client(client_id, "laptop stolen")["certificates_revoked"] == 1
    deadline = time.monotonic() + 15
    code = grpc.StatusCode.OK
    while time.monotonic() < deadline and code != grpc.StatusCode.UNAUTHENTICATED:
        try:
            registry.Heartbeat(registry_pb2.HeartbeatRequest(client_id=client_id))
        except grpc.RpcError as error:
            code = error.code()
        time.sleep(0.3)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert any(
        e["event"] == "certificate_revoked" and e["actor"] == client_id
        for e in _audit(federation, "keymanager")
    )
    assert any(
        "revoked" in str(e["details"].get("reason", ""))  # type: ignore[union-attr]
        for e in _audit(federation, "registry")
        if e["event"] == "request_rejected"
    )
    status = federation.run_job(small_job({"name": "fedavg"}, rounds=1))
    assert status["state"] == "completed", status["error"]


def test_an_expired_certificate_fails_the_handshake(federation: Federation) -> None:
    plane = federation.plane
    assert plane.trust is not None
    authority = CertificateAuthority.load_or_create(plane.trust.ca_dir)
    key = generate_key()
    expired = authority.issue(
        make_csr(key, "x"),
        Identity("client", "clinic-g-00000000"),
        validity=dt.timedelta(hours=1),
        not_before=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2),
    )
    tls = TlsConfig(plane.trust.ca_cert.read_bytes(), expired, key_pem(key))
    registry = registry_pb2_grpc.RegistryStub(connect(plane.service("registry").grpc_address, tls))
    beat = registry_pb2.HeartbeatRequest(client_id="clinic-g-00000000")
    assert _code(lambda: registry.Heartbeat(beat, timeout=5)) == grpc.StatusCode.UNAVAILABLE


def test_the_operator_api_needs_the_operator_token(federation: Federation) -> None:
    assert federation.plane.trust is not None
    ca = str(federation.plane.trust.ca_cert)
    url = f"{federation.plane.api_url}/v1/jobs"

    verify = ssl.create_default_context(cafile=ca)
    assert httpx.get(url, verify=verify).status_code == 401
    assert (
        httpx.get(url, verify=verify, headers={"Authorization": "Bearer nope"}).status_code == 401
    )
    assert httpx.get(f"{federation.plane.api_url}/healthz", verify=verify).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)  # the platform CA is not a public root: no silent trust


def test_a_site_cannot_read_another_sites_update(federation: Federation, tmp_path: Path) -> None:
    status = federation.run_job(small_job({"name": "fedavg"}, rounds=1))
    assert status["state"] == "completed", status["error"]
    db = sqlite3.connect(f"file:{federation.plane.state_dir / 'scheduler.db'}?mode=ro", uri=True)
    (hospital_update,) = db.execute(
        "SELECT digest FROM updates WHERE job_id = ? AND round = 1 LIMIT 1", (status["job_id"],)
    ).fetchone()
    _enroll(federation, tmp_path, "clinic-h")
    assert federation.plane.trust is not None
    tls = client_tls(
        IdentityFiles(tmp_path / "clinic-h"), federation.plane.trust.ca_cert.read_bytes()
    )
    models = ModelStoreClient(connect(federation.plane.service("modelstore").grpc_address, tls))
    own = models.upload(b"\x00" * 56, dtype="float32").ref.digest
    assert models.download(own) == b"\x00" * 56
    assert len(models.download(status["model_version"])) == 56  # the global model is shared
    assert _code(lambda: models.download(hospital_update)) == grpc.StatusCode.PERMISSION_DENIED
    assert any(
        e["event"] == "request_rejected" and "own uploads" in str(e["details"])
        for e in _audit(federation, "modelstore")
    )
