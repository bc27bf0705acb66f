"""The Grafana dashboards and Prometheus alert rules of the control-plane chart: well-formed,
querying only metrics the platform exports, accepted by promtool, and every alert proven by
promtool's rule unit tests to fire when it should and stay quiet when it should not."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from observability import (
    BUILTIN_VARIABLES,
    CHART_FILES,
    DASHBOARDS,
    PROMETHEUS_SERIES,
    REPO,
    RULE_TESTS,
    RULES,
    Query,
    Selector,
    alert_queries,
    alert_rules,
    dashboard_queries,
    exported_metric_names,
    load_dashboard,
    panels,
    selectors,
    variables_in,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
QUERIES = [query for path in DASHBOARDS for query in dashboard_queries(path)]
ALERTS = {
    "FedsiloRoundStalled",
    "FedsiloDropoutRateHigh",
    "FedsiloSiteEpsilonNearCap",
    "FedsiloAggregationBacklog",
    "FedsiloServiceDown",
    "FedsiloRpcErrors",
}
# What the dashboards must show: rounds, phases, clients, bytes, replicas, protection, ε,
# accuracy, and the control plane's health.
SHOWN = {
    "fedsilo_rounds_total",
    "fedsilo_round_phase_seconds_sum",
    "fedsilo_round_duration_seconds_sum",
    "fedsilo_clients_selected_total",
    "fedsilo_clients_completed_total",
    "fedsilo_clients_dropped_total",
    "fedsilo_update_bytes_total",
    "fedsilo_aggregation_shard_seconds_bucket",
    "fedsilo_client_protection_seconds_bucket",
    "fedsilo_privacy_epsilon",
    "fedsilo_site_privacy_epsilon",
    "fedsilo_site_privacy_max_epsilon",
    "fedsilo_global_model_accuracy",
    "fedsilo_clients_alive",
    "fedsilo_heartbeats_total",
    "fedsilo_rpc_requests_total",
    "fedsilo_aggregation_shards_pending",
}


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found; `make prometheus` installs it")
    return promtool


def _variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    found = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    assert len(found) == 1, f"{dashboard['title']}: needs one template variable {name!r}"
    return found[0]


def test_selectors_are_every_metric_and_nothing_else() -> None:
    expr = (
        'sum by (job_id) (rate(a_total{code=~"X|Y", s="}"}[5m] offset 1h)) / ignoring (le) '
        "max without (site) (b) >= on (site) group_left () (0.8 * c:recorded) unless d"
        ' or histogram_quantile(0.9, sum by (le) (rate(e_bucket{w="1"}[$__rate_interval])))'
    )
    assert selectors(expr) == [
        Selector("a_total", '{code=~"X|Y", s="}"}'),
        Selector("b", ""),
        Selector("c:recorded", ""),
        Selector("d", ""),
        Selector("e_bucket", '{w="1"}'),
    ]


def test_the_platform_names_its_metrics_as_prometheus_shows_them() -> None:
    names = exported_metric_names()
    assert {"fedsilo_rounds_total", "fedsilo_job_round", "fedsilo_rpc_latency_seconds_bucket"} <= (
        names
    )
    assert "fedsilo_rounds" not in names and "fedsilo_rpc_latency_seconds" not in names


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_well_formed(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["title"] and "fedsilo" in dashboard["tags"]
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"].startswith("fedsilo-")
    datasource = _variable(dashboard, "datasource")
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            assert query == variable["definition"] and query.startswith("label_values(")
            metric = query.removeprefix("label_values(").split(",")[0]
            assert metric in exported_metric_names(), f"variable {variable['name']}: {metric}"
    assert "job_id)" in _variable(dashboard, "job")["definition"]

    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    for panel in panels(dashboard):
        where = f"{path.name}: {panel['title']!r}"
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in "hwxy") and grid["x"] + grid["w"] <= 24, where
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, where
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert panel["targets"], f"{where}: no queries"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, where
            assert target["expr"].strip() and target["legendFormat"].strip(), where
            assert variables_in(target["expr"]) <= defined | BUILTIN_VARIABLES, where


def test_dashboard_uids_are_unique() -> None:
    uids = [load_dashboard(path)["uid"] for path in DASHBOARDS]
    assert len(DASHBOARDS) >= 1 and len(uids) == len(set(uids))


@pytest.mark.parametrize("query", [*QUERIES, *alert_queries()], ids=lambda q: q.where)
def test_queries_name_only_metrics_the_platform_exports(query: Query) -> None:
    found = {selector.metric for selector in selectors(query.filled())}
    assert found, f"{query.where}: no metric in {query.expr!r}"
    unknown = found - exported_metric_names() - PROMETHEUS_SERIES
    assert not unknown, f"{query.where}: {sorted(unknown)} are not exported by fedsilo"


def test_dashboards_show_every_part_of_the_platform() -> None:
    shown = {selector.metric for query in QUERIES for selector in selectors(query.filled())}
    assert shown >= SHOWN, f"no panel shows {sorted(SHOWN - shown)}"
    assert any("by (le, worker)" in query.expr for query in QUERIES)  # time per replica


def test_alert_rules_say_how_bad_what_and_what_to_do() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)) and set(names) >= ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]


def test_promtool_accepts_the_rules_and_every_dashboard_query(tmp_path: Path) -> None:
    promtool = _promtool()
    # Dashboard queries as recording rules: promtool parses every one of them.
    recorded = tmp_path / "dashboards.yaml"
    recorded.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboards",
                        "rules": [
                            {"record": f"dashboard:query{index}", "expr": query.filled()}
                            for index, query in enumerate(QUERIES)
                        ],
                    }
                ]
            }
        )
    )
    for rules in (RULES, recorded):
        result = subprocess.run(
            [promtool, "check", "rules", str(rules)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_in_promtool_unit_tests() -> None:
    promtool = _promtool()
    assert RULE_TESTS, "no promtool rule tests under files/alerts/tests"
    fired, quiet = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= fired, f"no test makes {sorted(names - fired)} fire"
    assert names <= quiet, f"no test shows {sorted(names - quiet)} staying quiet"
    result = subprocess.run(
        [promtool, "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("folder", ["dashboards", "alerts"])
def test_operators_find_the_files_under_k8s(folder: str) -> None:
    link = REPO / "k8s" / folder
    assert link.is_symlink() and not os.readlink(link).startswith("/")
    assert link.resolve() == (CHART_FILES / folder).resolve()
