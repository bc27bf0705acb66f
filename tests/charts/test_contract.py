"""The charts against the code they deploy: the FEDSILO_* variables each service reads, the
commands the containers run, and the network flows the configured addresses imply."""

from __future__ import annotations

import importlib
import inspect
import json
import re
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from charts.rendering import CLIENT, SERVICES, SITE_SECRETS, Manifests, render
from fedsilo.pki import cluster
from fedsilo.rpc import healthcheck

from .test_manifests import CONTROL_PLANE_SCENARIOS, control_plane, site

# A site's own certificate comes from enrollment (kept in FEDSILO_STATE_DIR), so the client
# agent never reads the service-certificate variables every service inherits.
NOT_READ = {"client": {"FEDSILO_TLS_CERT", "FEDSILO_TLS_KEY"}}
ADDRESS = re.compile(r"^fl-fedsilo-([a-z]+)\.fedsilo\.svc:(\d+)$")


def settings_class(service: str) -> type[BaseSettings]:
    module = importlib.import_module(f"fedsilo_services.{service}.__main__")
    (found,) = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, BaseSettings)
        and value.__module__ == module.__name__
    ]
    return found


def reads(service: str) -> tuple[set[str], set[str]]:
    """(every variable the service reads, those without a default)."""
    fields = settings_class(service).model_fields
    every = {f"FEDSILO_{name.upper()}" for name in fields} - NOT_READ.get(service, set())
    required = {f"FEDSILO_{name.upper()}" for name, f in fields.items() if f.is_required()}
    return every, required


def control_plane_renderings() -> list[Manifests]:
    return [control_plane(name) for name in CONTROL_PLANE_SCENARIOS]


@pytest.fixture(scope="module")
def renderings() -> list[Manifests]:
    return control_plane_renderings()


def chart_env(manifests: Manifests, component: str) -> dict[str, str]:
    return manifests.settings(manifests.component(component))


@pytest.mark.parametrize("service", SERVICES)
def test_the_chart_sets_exactly_the_variables_each_service_reads(renderings, service):
    every, required = reads(service)
    seen: set[str] = set()
    for manifests in renderings:
        env = set(chart_env(manifests, service))
        assert env <= every, f"{service}: the chart sets variables it never reads: {env - every}"
        assert required <= env, f"{service}: the chart leaves out {required - env}"
        seen |= env
    assert seen == every, f"{service}: no scenario sets {every - seen}"


def test_the_client_chart_sets_exactly_what_the_agent_reads():
    every, required = reads("client")
    plain = site("cleveland")
    env = set(plain.settings(plain.workloads()[0]))
    assert required <= env <= every
    # The discovered addresses are overridden only when the values say so.
    overrides = {s: f"{s}.example.org:443" for s in ("scheduler", "modelstore", "keymanager")}
    pinned = site("cleveland", controlPlane={**SITE_SECRETS["controlPlane"], **overrides})
    pinned_env = pinned.settings(pinned.workloads()[0])
    assert set(pinned_env) == every, f"missing {every - set(pinned_env)}"
    assert pinned_env["FEDSILO_SCHEDULER_ADDRESS"] == "scheduler.example.org:443"
    assert "FEDSILO_SCHEDULER_ADDRESS" not in env


@pytest.mark.parametrize("service", SERVICES)
def test_the_charts_values_parse_as_the_services_settings(renderings, service, monkeypatch):
    for manifests in renderings:
        for name, value in chart_env(manifests, service).items():
            monkeypatch.setenv(name, "placeholder" if value.startswith("<from") else value)
        settings: Any = settings_class(service)()
        assert settings.grpc_port == 50051 and settings.insecure is False
        assert str(settings.tls_cert).startswith("/etc/fedsilo/tls/")


def test_containers_run_the_service_modules(renderings):
    for component in SERVICES:
        (container,) = renderings[0].component(component)["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", f"fedsilo_services.{component}"]
        assert importlib.util.find_spec(f"fedsilo_services.{component}.__main__") is not None


def test_hook_commands_parse_with_the_modules_they_run():
    manifests = control_plane()
    (job,) = manifests.kind("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "fedsilo.pki.cluster"]
    services = [
        cluster.ServiceCertificate.parse(arg.split("=", 1)[1])
        for arg in container["args"]
        if arg.startswith("--service=")
    ]
    assert {s.service for s in services} == set(SERVICES)
    (test_pod,) = manifests.kind("Pod")
    (probe,) = test_pod["spec"]["containers"]
    assert probe["command"] == ["python", "-m", "fedsilo.rpc.healthcheck"]
    targets = [arg for arg in probe["args"] if not arg.startswith("--")]
    assert len(targets) == len(SERVICES)
    with pytest.raises(SystemExit) as help_exit:
        healthcheck.main(["--help"])
    assert help_exit.value.code == 0


def _allows(policies: list[dict[str, Any]], selected: str, peer: str, port: int, way: str) -> bool:
    """Some policy selecting `selected` pods lets traffic `way` (ingress/egress) with `peer`."""
    for policy in policies:
        spec = policy["spec"]
        if (
            spec["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
            != selected
        ):
            continue
        for rule in spec.get(way, []):
            peers = rule.get("from" if way == "ingress" else "to", [])
            labels = [p.get("podSelector", {}).get("matchLabels", {}) for p in peers]
            ports = {p["port"] for p in rule.get("ports", [])}
            if port in ports and any(
                lab.get("app.kubernetes.io/component") == peer for lab in labels
            ):
                return True
    return False


def test_every_configured_address_has_its_network_flow_allowed(renderings):
    for manifests in renderings:
        policies = manifests.kind("NetworkPolicy")
        if not policies:
            continue
        flows = 0
        for component in SERVICES:
            for value in chart_env(manifests, component).values():
                match = ADDRESS.match(value)
                if not match:
                    continue
                target, port = match.group(1), int(match.group(2))
                assert _allows(policies, target, component, port, "ingress"), (
                    f"{component} -> {target}:{port} has no ingress allowance"
                )
                assert _allows(policies, component, target, port, "egress"), (
                    f"{component} -> {target}:{port} has no egress allowance"
                )
                flows += 1
        assert flows >= 8
        (deny,) = [p for p in policies if p["metadata"]["name"].endswith("-default-deny")]
        assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]


def test_sites_may_reach_exactly_the_services_they_are_given_or_told():
    """A site is given the registry's enrollment address and learns the rest from the
    registry's advertised endpoints: each has its sites-to-<service> flow."""
    manifests = control_plane()
    agent = render(
        CLIENT,
        {**SITE_SECRETS, "site": "cleveland"}
        | {
            "controlPlane": {
                **SITE_SECRETS["controlPlane"],
                "registry": "fl-fedsilo-registry.fedsilo.svc:50052",
            },
            "data": {"hostPath": "/srv/heart"},
            "datasets": {"heart-disease": {"path": "records.csv"}},
            "networkPolicy": {
                "controlPlane": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "fedsilo"}}
                }
            },
        },
    )
    given = [
        value
        for name, value in agent.settings(agent.workloads()[0]).items()
        if name.endswith("_ADDRESS")
    ]
    registry = manifests.settings(manifests.component("registry"))
    told = json.loads(registry["FEDSILO_SITE_ENDPOINTS"])
    assert set(told) == {"registry", "scheduler", "modelstore", "keymanager"}
    dialled = {
        (m.group(1), int(m.group(2)))
        for value in [*given, *told.values()]
        if (m := ADDRESS.match(value))
    }
    assert dialled == {
        ("registry", 50051),
        ("registry", 50052),
        ("scheduler", 50051),
        ("modelstore", 50051),
        ("keymanager", 50051),
    }
    client_labels = agent.workloads()[0]["spec"]["template"]["metadata"]["labels"]
    for target, port in dialled:
        policy = next(
            p
            for p in manifests.kind("NetworkPolicy")
            if p["metadata"]["name"] == f"fl-fedsilo-sites-to-{target}"
        )
        (rule,) = policy["spec"]["ingress"]
        assert port in {p["port"] for p in rule["ports"]}
        (peer,) = rule["from"]
        assert peer["podSelector"]["matchLabels"].items() <= client_labels.items()
