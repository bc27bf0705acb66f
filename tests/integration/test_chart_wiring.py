"""The charts configure a working system: render the control plane and two hospital sites, run
every rendered container as a local process with exactly its manifest's command, arguments
and environment (tests/charts/cluster.py says what is mapped), and train to the end."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from charts.cluster import LocalCluster
from charts.rendering import CLIENT, CONTROL_PLANE, render, site_values

from fedsilo.cli.api import OperatorApi
from fedsilo.pki import certificate_identity

from .conftest import ACCESS_KEY, SECRET_KEY, require_heart_data, small_job

pytestmark = pytest.mark.slow

NAMESPACE = "fedsilo"
SITES = ("cleveland", "hungary")
S3_SECRET = "wiring-s3"


def control_plane_values(s3_endpoint: str) -> dict[str, object]:
    return {
        # The only name the test adds to the certificates: it dials every Service as localhost.
        "tls": {"extraDnsNames": ["localhost"]},
        "objectStorage": {
            "mode": "external",
            "bucket": "wiring",
            "external": {"endpoint": s3_endpoint, "secure": False, "existingSecret": S3_SECRET},
        },
        "aggregator": {"replicas": 2},
        # 14 parameters, 4 per shard: both replicas get work.
        "scheduler": {"shardParameters": 4},
    }


def site_chart_values(site: str, token: str, ca_pem: str, data: Path) -> dict[str, object]:
    service = f"fl-fedsilo-{{}}.{NAMESPACE}.svc"
    return {
        "site": site,
        "controlPlane": {
            # Given only the registry's enrollment address: the rest is discovered.
            "registry": service.format("registry") + ":50052",
            "caCert": ca_pem,
        },
        "enrollment": {"token": token},
        "data": {"existingClaim": "", "hostPath": str(data)},
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path, NAMESPACE)
    yield local
    codes = local.stop()
    failed = {name: code for name, code in codes.items() if code != 0}
    assert not failed, f"pods did not stop cleanly on SIGTERM: {failed}"


def test_the_rendered_charts_run_a_federation(cluster, s3_endpoint, tmp_path):
    data = require_heart_data()
    plane = render(
        CONTROL_PLANE, control_plane_values(s3_endpoint), release="fl", namespace=NAMESPACE
    )
    cluster.add_secret(
        S3_SECRET, {"access-key": ACCESS_KEY.encode(), "secret-key": SECRET_KEY.encode()}
    )

    # The pre-install hook: the bootstrap Job's own command writes the TLS Secrets (as files).
    (job,) = plane.kind("Job")
    job_pod = cluster.pod_from_spec("tls-bootstrap", {}, job["spec"]["template"]["spec"])
    secrets = tmp_path / "secrets"
    cluster.run_to_completion(job_pod, ("--directory", str(secrets)))
    for folder in secrets.iterdir():
        cluster.add_secret(folder.name, {f.name: f.read_bytes() for f in folder.iterdir()})
    registry_cert = cluster.secrets["fl-fedsilo-registry-tls"]["tls.crt"]
    assert str(certificate_identity(registry_cert).identity) == "service/registry"

    cluster.load(plane)
    assert len([p for p in cluster.pods if "aggregator" in p.name]) == 2
    cluster.start()
    cluster.wait_ready(cluster.pods)

    # `helm test`: its Pod's health checks pass against every service.
    (test_pod,) = plane.kind("Pod")
    report = cluster.run_to_completion(
        cluster.pod_from_spec("helm-test", {}, test_pod["spec"]), timeout_s=150
    )
    assert report.count(": SERVING") == 5, report

    # The operator: the REST API with the chart's generated token, verified by the chart's CA.
    ca_pem = cluster.secrets["fl-fedsilo-ca"]["ca.crt"]
    (tmp_path / "ca.crt").write_bytes(ca_pem)
    scheduler = cluster.pod("fl-fedsilo-scheduler")
    http_port = scheduler.ports[8443]
    token = cluster.secrets["fl-fedsilo-operator-token"]["token"].decode()
    api = OperatorApi(f"https://localhost:{http_port}", token=token, ca_cert=tmp_path / "ca.crt")

    # Two hospitals install the client chart with their example values and a token each.
    site_pods = []
    for site in SITES:
        values = site_chart_values(site, api.add_site(site)["token"], ca_pem.decode(), data)
        rendered = render(
            CLIENT, values, values_files=(site_values(site),), release=site, namespace=NAMESPACE
        )
        before = len(cluster.pods)
        cluster.load(rendered)
        site_pods += cluster.pods[before:]
    cluster.start(site_pods)
    cluster.wait_ready(site_pods, timeout_s=120)

    # The example sites allow at most epsilon 8: the job trains with DP-SGD, under secure
    # aggregation.
    privacy = {"mode": "sample", "clip_norm": 1.0, "noise_multiplier": 1.2}
    spec = small_job({"name": "fedavg"}, rounds=3, protection="secagg", privacy=privacy)
    job_id = api.submit_job(spec)["job_id"]
    status = wait_for_job(cluster, api, job_id)

    assert status["state"] == "completed", status["error"]
    rounds = {h["round"]: h for h in status["history"]}
    assert sorted(rounds) == [0, 1, 2, 3]
    assert sorted(rounds[3]["participants"]) == sorted(SITES)
    assert api.model(job_id)["round"] == 3
    # Each replica of the aggregator Deployment combined shards, under its pod's name.
    for pod in (p for p in cluster.pods if "aggregator" in p.name):
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{pod.ports[9090]}/metrics").read()
        assert f'fedsilo_aggregation_shards_total{{worker="{pod.name}"}}' in metrics.decode()
    # The sites' certificates are kept in their state volumes, for the next start.
    for pod in site_pods:
        assert any(Path(pod.local("/var/lib/fedsilo/client")).rglob("*.crt")), pod.name


def wait_for_job(cluster: LocalCluster, api: OperatorApi, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        cluster.supervise()
        status = api.job(job_id)
        if status["state"] != "running":
            return status
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still running: {api.job(job_id)}")
