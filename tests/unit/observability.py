"""The Grafana dashboards and Prometheus alert rules the control-plane chart ships, read the
way tests need them: every PromQL query with its template variables filled in, and the metric
selectors inside a query."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

import fedsilo.telemetry  # noqa: F401  (registers the platform's metrics)

REPO = Path(__file__).resolve().parents[2]
CHART_FILES = REPO / "charts" / "fedsilo-control-plane" / "files"
DASHBOARDS = sorted((CHART_FILES / "dashboards").glob("*.json"))
RULES = CHART_FILES / "alerts" / "fedsilo-rules.yaml"
RULE_TESTS = sorted((CHART_FILES / "alerts" / "tests").glob("*.yaml"))

# Values a query can run with outside Grafana: every job and replica, windows of minutes.
TEMPLATE_VALUES = {
    "job": ".*",
    "worker": ".*",
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
}
BUILTIN_VARIABLES = frozenset(name for name in TEMPLATE_VALUES if name.startswith("__"))
# Series Prometheus itself writes for every target, next to what the services export.
PROMETHEUS_SERIES = frozenset({"up"})


@dataclass(frozen=True)
class Query:
    where: str  # which dashboard, panel and target, or which alert
    expr: str  # as written, template variables included

    def filled(self, values: dict[str, str] = TEMPLATE_VALUES) -> str:
        return fill_variables(self.expr, values)


def load_dashboard(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included (a collapsed row holds its own)."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries(path: Path) -> list[Query]:
    return [
        Query(f"{path.name}: {panel['title']!r} {target.get('refId')}", target.get("expr", ""))
        for panel in panels(load_dashboard(path))
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def alert_queries() -> list[Query]:
    return [Query(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]


_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def variables_in(expr: str) -> set[str]:
    return {braced or bare for braced, bare in _VARIABLE.findall(expr)}


def fill_variables(expr: str, values: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], expr)


_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')')


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: str  # "{...}" as written, or ""

    def __str__(self) -> str:
        return self.metric + self.matchers

    def label_matchers(self) -> list[tuple[str, str, str]]:
        """(label, operator, quoted value) of each matcher."""
        return _MATCHER.findall(self.matchers)


_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''
_TOKEN = re.compile(
    rf"(?P<string>{_STRING})"
    rf"|(?P<matchers>\{{(?:[^}}\"']|{_STRING})*\}})"
    r"|(?P<range>\[[^\]]*\])"
    r"|(?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)"
    r"|(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|0x[0-9a-fA-F]+)"
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)"
)
# Followed by a parenthesised list of label names, not of expressions.
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
    | {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)


def selectors(expr: str) -> list[Selector]:
    """The instant- and range-vector selectors of a PromQL expression, in order: enough PromQL
    for the queries here (aggregations, binary operators and their modifiers, functions,
    offsets); `{__name__=...}` selectors without a metric name are not supported."""
    tokens = [
        (m.lastgroup, m.group())
        for m in _TOKEN.finditer(expr)
        if m.lastgroup not in ("space", None)
    ]
    found = []
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        if kind == "matchers":
            raise ValueError(f"selector without a metric name in {expr!r}")
        if kind == "name" and text.lower() in _LABEL_LIST_KEYWORDS and following[1] == "(":
            index = tokens.index(("other", ")"), index)  # a label list holds no selector
        elif kind == "name" and following[1] != "(" and text.lower() not in _KEYWORDS:
            matchers = following[1] if following[0] == "matchers" else ""
            found.append(Selector(text, matchers))
            index += 1 if matchers else 0
        index += 1
    return found


def exported_metric_names() -> set[str]:
    """The series names the platform's metrics appear under on /metrics: counters with
    `_total`, histograms as `_bucket`, `_sum` and `_count`."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    }
