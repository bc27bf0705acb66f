"""Both charts rendered for each supported scenario: valid Kubernetes objects, the platform's
security and probing conventions on every workload, and the toggles doing what they say."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from charts.rendering import (
    CLIENT,
    CONTROL_PLANE,
    EXAMPLES,
    SERVICES,
    SITE_SECRETS,
    HelmError,
    Manifests,
    helm,
    render,
    site_values,
)

EXTERNAL_S3 = {
    "objectStorage": {
        "mode": "external",
        "region": "eu-central-1",
        "external": {
            "endpoint": "s3.eu-central-1.amazonaws.com:443",
            "existingSecret": "hospital-consortium-s3",
            "cidrs": ["52.219.0.0/16"],
        },
    }
}
CONTROL_PLANE_SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-s3": EXTERNAL_S3,
    "cert-manager": {"tls": {"mode": "cert-manager"}},
    "hpa": {"aggregator": {"autoscaling": {"enabled": True}}},
    "monitoring": {
        "monitoring": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "grafanaDashboards": {"enabled": True},
        }
    },
    "no-network-policy": {"networkPolicy": {"enabled": False}},
}
SITES = ("cleveland", "hungary", "switzerland")
# Custom resources whose schemas kubernetes-validate does not carry; their shape is asserted
# by the tests below instead.
CUSTOM_KINDS = {
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def control_plane(scenario: str = "defaults", **values: Any) -> Manifests:
    return render(CONTROL_PLANE, {**CONTROL_PLANE_SCENARIOS[scenario], **values})


def site(name: str, **values: Any) -> Manifests:
    return render(
        CLIENT, {**SITE_SECRETS, **values}, values_files=(site_values(name),), release=name
    )


def all_renderings() -> dict[str, Manifests]:
    rendered = {f"control-plane/{name}": control_plane(name) for name in CONTROL_PLANE_SCENARIOS}
    rendered["control-plane/example"] = render(
        CONTROL_PLANE, values_files=(EXAMPLES / "control-plane.yaml",)
    )
    rendered.update({f"site/{name}": site(name) for name in SITES})
    return rendered


@pytest.fixture(scope="module")
def renderings() -> dict[str, Manifests]:
    return all_renderings()


def pod_specs(manifests: Manifests) -> list[tuple[str, dict[str, Any]]]:
    specs = [(w["metadata"]["name"], w["spec"]["template"]["spec"]) for w in manifests.workloads()]
    specs += [(j["metadata"]["name"], j["spec"]["template"]["spec"]) for j in manifests.kind("Job")]
    specs += [(p["metadata"]["name"], p["spec"]) for p in manifests.kind("Pod")]
    return specs


def test_helm_lint_passes_for_both_charts():
    helm("lint", "--strict", CONTROL_PLANE)
    helm(
        "lint",
        "--strict",
        CLIENT,
        "--values",
        site_values("cleveland"),
        "--set",
        "enrollment.token=t,controlPlane.caCertConfigMap=ca",
    )


def test_every_object_is_valid_for_kubernetes_1_30_and_the_newest_schema(renderings):
    checked = 0
    for scenario, manifests in renderings.items():
        for item in manifests:
            if (item["apiVersion"], item["kind"]) in CUSTOM_KINDS:
                continue
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(item, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    pytest.fail(f"{scenario}: {item['kind']} {item['metadata']['name']}: {error}")
                checked += 1
    assert checked > 100


def test_every_object_carries_the_standard_labels(renderings):
    for scenario, manifests in renderings.items():
        for item in manifests:
            labels = item["metadata"].get("labels", {})
            for key in (
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
                "app.kubernetes.io/part-of",
                "app.kubernetes.io/managed-by",
                "helm.sh/chart",
            ):
                assert key in labels, (
                    f"{scenario}: {item['kind']} {item['metadata']['name']}: {key}"
                )


def test_workload_selectors_match_their_pods_and_services_select_pods(renderings):
    for scenario, manifests in renderings.items():
        pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in manifests.workloads()]
        for workload in manifests.workloads():
            selector = workload["spec"]["selector"]["matchLabels"]
            assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        for service in manifests.kind("Service"):
            selector = service["spec"]["selector"]
            assert any(selector.items() <= labels.items() for labels in pod_labels), (
                f"{scenario}: Service {service['metadata']['name']} selects no pods"
            )


def test_every_pod_runs_locked_down(renderings):
    for scenario, manifests in renderings.items():
        for name, spec in pod_specs(manifests):
            where = f"{scenario}: {name}"
            assert spec["securityContext"]["runAsNonRoot"] is True, where
            assert spec["securityContext"]["runAsUser"] != 0, where
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
            for container in spec["containers"]:
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True, where
                assert context["allowPrivilegeEscalation"] is False, where
                assert context["capabilities"]["drop"] == ["ALL"], where
                assert context["seccompProfile"]["type"] == "RuntimeDefault", where
                assert container["resources"]["requests"], where
                assert container["resources"]["limits"]["memory"], where


def test_fedsilo_services_have_grpc_startup_liveness_and_readiness_probes(renderings):
    for scenario, manifests in renderings.items():
        for workload in manifests.workloads():
            (container,) = workload["spec"]["template"]["spec"]["containers"]
            if not container["command"][-1].startswith("fedsilo_services."):
                continue
            ports = {port["name"]: port["containerPort"] for port in container["ports"]}
            settings = manifests.settings(workload)
            assert int(settings["FEDSILO_HEALTH_PORT"]) == ports["health"]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert container[probe]["grpc"]["port"] == ports["health"], (
                    f"{scenario}: {workload['metadata']['name']} {probe}"
                )


def test_readiness_asks_for_the_service_each_server_registers(renderings):
    manifests = renderings["control-plane/defaults"]
    expected = {
        "registry": "fedsilo.v1.Registry",
        "keymanager": "fedsilo.v1.KeyManager",
        "scheduler": "fedsilo.v1.Scheduler",
        "modelstore": "fedsilo.v1.ModelStore",
    }
    for component, service in expected.items():
        (container,) = manifests.component(component)["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["grpc"]["service"] == service


def test_settings_changes_roll_the_pods():
    before = control_plane().component("scheduler")["spec"]["template"]["metadata"]
    after = control_plane(logLevel="DEBUG").component("scheduler")["spec"]["template"]["metadata"]
    assert before["annotations"]["checksum/settings"] != after["annotations"]["checksum/settings"]


def test_aggregator_autoscaling_and_disruption_budget_toggle():
    fixed = control_plane(aggregator={"replicas": 3, "podDisruptionBudget": {"enabled": False}})
    assert fixed.component("aggregator")["spec"]["replicas"] == 3
    assert not fixed.kind("HorizontalPodAutoscaler") and not fixed.kind("PodDisruptionBudget")

    scaled = control_plane("hpa")
    (hpa,) = scaled.kind("HorizontalPodAutoscaler")
    deployment = scaled.component("aggregator")
    assert "replicas" not in deployment["spec"], "the HPA, not the chart, owns replicas"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    (budget,) = scaled.kind("PodDisruptionBudget")
    assert (
        budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    )


def test_stateful_services_keep_their_databases_on_volumes(renderings):
    manifests = renderings["control-plane/defaults"]
    for component in ("registry", "keymanager", "scheduler"):
        workload = manifests.component(component)
        assert workload["kind"] == "StatefulSet" and workload["spec"]["replicas"] == 1
        (claim,) = workload["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "state"
        database = manifests.settings(workload)[f"FEDSILO_{component.upper()}_DB"]
        assert database.startswith("/var/lib/fedsilo/")


def _secret_volumes(workload: dict[str, Any]) -> dict[str, str]:
    """mountPath -> Secret name."""
    spec = workload["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    (container,) = spec["containers"]
    return {
        m["mountPath"]: secrets[m["name"]]
        for m in container["volumeMounts"]
        if m["name"] in secrets
    }


def test_only_the_keymanager_mounts_the_ca_key(renderings):
    for scenario in ("control-plane/defaults", "control-plane/cert-manager"):
        manifests = renderings[scenario]
        ca_secret = "fl-fedsilo-ca"
        holders = [
            w["metadata"]["labels"]["app.kubernetes.io/component"]
            for w in manifests.workloads()
            if ca_secret in _secret_volumes(w).values()
        ]
        assert holders == ["keymanager"], scenario


def test_builtin_tls_job_issues_every_secret_the_workloads_mount():
    manifests = control_plane()
    (job,) = manifests.kind("Job")
    assert "pre-install" in job["metadata"]["annotations"]["helm.sh/hook"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    issued = {arg.split(":")[1] for arg in container["args"] if arg.startswith("--service=")}
    mounted = {
        secret
        for w in manifests.workloads()
        for path, secret in _secret_volumes(w).items()
        if path == "/etc/fedsilo/tls"
    }
    assert mounted == issued
    (role,) = manifests.kind("Role")
    named = next(rule for rule in role["rules"] if "resourceNames" in rule)
    assert set(named["resourceNames"]) == issued | {"fl-fedsilo-ca"}
    assert set(named["verbs"]) == {"get", "update"}, "the Job may not list or delete Secrets"


def test_cert_manager_issues_spiffe_identities_for_every_service():
    manifests = control_plane("cert-manager")
    assert not manifests.kind("Job"), "cert-manager mode needs no bootstrap Job"
    certificates = {c["spec"]["secretName"]: c["spec"] for c in manifests.kind("Certificate")}
    assert certificates["fl-fedsilo-ca"]["isCA"] is True
    for workload in manifests.workloads():
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        if component == "minio":
            continue
        spec = certificates[_secret_volumes(workload)["/etc/fedsilo/tls"]]
        assert spec["uris"] == [f"spiffe://fedsilo/service/{component}"]
        assert f"fl-fedsilo-{component}.fedsilo.svc" in spec["dnsNames"]
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["privateKey"]["algorithm"] == "ECDSA"


def test_external_s3_needs_its_secret_and_is_used_instead_of_minio():
    manifests = control_plane("external-s3")
    assert not [w for w in manifests.workloads() if w["metadata"]["name"].endswith("-minio")]
    settings = manifests.settings(manifests.component("modelstore"))
    assert settings["FEDSILO_S3_ENDPOINT"] == "s3.eu-central-1.amazonaws.com:443"
    assert settings["FEDSILO_S3_SECURE"] == "true"
    assert "hospital-consortium-s3" in settings["FEDSILO_S3_SECRET_KEY"]
    with pytest.raises(HelmError, match="existingSecret is required"):
        render(
            CONTROL_PLANE,
            {"objectStorage": {"mode": "external", "external": {"endpoint": "s3.example:443"}}},
        )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"aggregator": {"replicas": "two"}}, "/aggregator/replicas"),
        ({"aggregator": {"replica": 2}}, "additional properties 'replica' not allowed"),
        ({"telemetry": {}}, "additional properties 'telemetry' not allowed"),
        ({"tls": {"mode": "none"}}, "/tls/mode"),
        ({"objectStorage": {"mode": "nfs"}}, "/objectStorage/mode"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "/securityContext"),
        ({"networkPolicy": {"clients": {"cidrs": ["everyone"]}}}, "/networkPolicy/clients/cidrs"),
    ],
)
def test_control_plane_schema_rejects_bad_values(values, message):
    with pytest.raises(HelmError, match=message):
        render(CONTROL_PLANE, values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"site": "St Olav"}, "/site"),
        ({"training": {"torchThreads": 0}}, "/training/torchThreads"),
        ({"policy": {"max_epsilon": -1}}, "/policy/max_epsilon"),
        ({"policy": {"max_epsilonn": 1}}, "additional properties 'max_epsilonn' not allowed"),
        ({"controlPlane": {"registry": "no-port"}}, "/controlPlane/registry"),
        ({"data": {"existingClaim": "", "hostPath": ""}}, "exactly one of data.existingClaim"),
        ({"enrollment": {"token": ""}}, "enrollment.token or enrollment.existingSecret"),
    ],
)
def test_client_schema_and_templates_reject_bad_values(values, message):
    with pytest.raises(HelmError, match=message):
        site("cleveland", **values)


def test_client_mounts_its_data_read_only_and_declares_paths_inside_it(renderings):
    manifests = renderings["site/cleveland"]
    (workload,) = manifests.workloads()
    spec = workload["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    data = next(m for m in container["volumeMounts"] if m["name"] == "data")
    assert data["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == "data")
    assert volume["persistentVolumeClaim"] == {
        "claimName": "cleveland-heart-records",
        "readOnly": True,
    }
    settings = manifests.settings(workload)
    assert settings["FEDSILO_DATA_DIR"] == data["mountPath"]
    site_config = yaml.safe_load(
        manifests.get("ConfigMap", "cleveland-fedsilo-client-site")["data"]["site.yaml"]
    )
    assert site_config["site"] == "cleveland"
    assert site_config["policy"] == {"max_epsilon": 8, "min_clients": 2}
    assert site_config["datasets"]["heart-disease"]["path"] == "processed.cleveland.data"


def test_client_egress_reaches_only_the_control_plane_and_dns(renderings):
    for name in SITES:
        (policy,) = renderings[f"site/{name}"].kind("NetworkPolicy")
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        control, dns = policy["spec"]["egress"]
        assert control["to"] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
        assert {p["port"] for p in control["ports"]} == {50051, 50052}
        assert {p["port"] for p in dns["ports"]} == {53}
        assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
        (ingress,) = policy["spec"]["ingress"]
        assert ingress["ports"] == [{"protocol": "TCP", "port": 9090}]


def test_monitoring_objects_select_what_the_services_expose(renderings):
    manifests = renderings["control-plane/monitoring"]
    (monitor,) = manifests.kind("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [
        s for s in manifests.kind("Service") if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scraped} == set(
        SERVICES
    )
    for service in scraped:
        assert "metrics" in {port["name"] for port in service["spec"]["ports"]}
    (rule,) = manifests.kind("PrometheusRule")
    rules_file = CONTROL_PLANE / "files" / "alerts" / "fedsilo-rules.yaml"
    assert rule["spec"] == yaml.safe_load(rules_file.read_text())
    dashboards = [
        c
        for c in manifests.kind("ConfigMap")
        if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == len(list((CONTROL_PLANE / "files" / "dashboards").glob("*.json")))
    for config_map in dashboards:
        for text in config_map["data"].values():
            assert json.loads(text)["panels"]
    quiet = renderings["control-plane/defaults"]
    assert not quiet.kind("ServiceMonitor") and not quiet.kind("PrometheusRule")
