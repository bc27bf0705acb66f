"""The chart's dashboards and alert rules against a real Prometheus scraping a real federation:
every dashboard query returns data, every alert expression evaluates over series that exist,
the rules load healthy, the ε alert fires for the site whose policy cap is nearly spent, and
the anomaly alert for the site that poisons three rounds in a row."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml
from unit.observability import (
    DASHBOARDS,
    RULES,
    TEMPLATE_VALUES,
    alert_queries,
    alert_rules,
    dashboard_queries,
    selectors,
)

from fedsilo.cli.up import LocalControlPlane, free_port
from fedsilo.federations import heart_disease
from fedsilo.policy import SitePolicy

from .conftest import (
    FAST_LIVENESS,
    SHARD_PARAMETERS,
    enroll_site,
    local_server,
    poisoning,
    require_heart_data,
    small_job,
    start_federation,
)

pytestmark = pytest.mark.slow

# The capped site spends ε close to its cap on the private job: FedsiloSiteEpsilonNearCap fires.
CAPPED_SITE, MAX_EPSILON, TARGET_EPSILON = "va", 4.5, 4.0
# Rounds of the poisoned job: the alert wants 3 anomalous rounds in a row.
ANOMALOUS_ROUNDS = 4
# Windows that reach back over the whole run, so every rate() sees the jobs.
RUN_VALUES = {**TEMPLATE_VALUES, "__rate_interval": "10m"}


@dataclass(frozen=True)
class Observed:
    url: str  # Prometheus
    jobs: dict[str, dict[str, Any]]  # job status by what it exercises

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = _api(self.url, "/api/v1/query", {"query": expr})
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def _api(url: str, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    response = httpx.get(url + path, params=params, timeout=10)
    body: dict[str, Any] = response.json()
    return body


def _wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus: {what} not seen within {timeout_s:.0f} s")
        time.sleep(0.5)


def _prometheus_config(plane: LocalControlPlane) -> dict[str, Any]:
    """One scrape job per kind of service, named as the chart's Services are (fedsilo-...)."""
    targets: dict[str, list[str]] = {}
    for process in plane.processes:
        kind = process.name.split("-")[0]  # aggregator-0 -> aggregator, client-va -> client
        targets.setdefault(f"fedsilo-{kind}", []).append(
            f"127.0.0.1:{process.info['metrics_port']}"
        )
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": addresses}]}
            for name, addresses in sorted(targets.items())
        ],
    }


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus not found; `make prometheus` installs it")
    folder = tmp_path_factory.mktemp("observability")
    federation = start_federation(
        folder / "federation",
        require_heart_data(),
        aggregators=2,
        shard_parameters=SHARD_PARAMETERS,
        extra_env=FAST_LIVENESS,
        policies={CAPPED_SITE: SitePolicy(max_epsilon=MAX_EPSILON)},
    )
    try:
        config = folder / "prometheus.yml"
        config.write_text(yaml.safe_dump(_prometheus_config(federation.plane)))
        url = f"http://127.0.0.1:{free_port()}"
        command = [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            "--log.level=warn",
        ]
        with local_server(command, f"{url}/-/ready", folder / "prometheus.log") as server:
            _wait_for(lambda: httpx.get(f"{url}/-/ready").status_code == 200, "readiness")
            seen = Observed(url, {})
            targets = len(federation.plane.processes)
            _wait_for(
                lambda: len(seen.query('up{job=~"fedsilo-.*"} == 1')) == targets,
                f"all {targets} targets up",
            )
            seen.jobs["secagg+dp"] = federation.run_job(
                small_job(
                    {"name": "fedavg"},
                    rounds=2,
                    protection="secagg",
                    privacy={"mode": "client", "clip_norm": 0.05, "target_epsilon": TARGET_EPSILON},
                )
            )
            seen.jobs["paillier"] = federation.run_job(
                small_job(
                    {"name": "fedavg"},
                    rounds=1,
                    protection="paillier",
                    paillier={"key_bits": 1024, "clip": 0.5},
                )
            )
            # Last, a plaintext job with a robust rule and a fifth site that poisons every
            # round: its anomaly scores and streak reach the gauges and the alert fires.
            stop = threading.Event()
            poisoning(enroll_site(federation, folder, "mallory", heart_disease.DATASET), stop)
            try:
                seen.jobs["poisoned"] = federation.run_job(
                    small_job(
                        {"name": "fedavg"},
                        rounds=ANOMALOUS_ROUNDS,
                        min_clients=4,  # the capped site wants DP: it declines
                        aggregation={"rule": "median"},
                    )
                )
            finally:
                stop.set()
            for name, status in seen.jobs.items():
                assert status["state"] == "completed", f"{name}: {status['error']}"
            finished = time.time()

            def scraped_since_finished() -> bool:
                # Successful scrapes only (a busy service may miss the 1 s scrape timeout), and
                # several: rate() needs two samples of a series that appeared late in a job.
                window = max(1, int(time.time() - finished))
                scrapes = seen.query(f'sum_over_time(up{{job=~"fedsilo-.*"}}[{window}s])')
                return len(scrapes) == targets and all(
                    float(sample["value"][1]) >= 3 for sample in scrapes
                )

            _wait_for(scraped_since_finished, "three scrapes of every target after the jobs")
            yield seen
        assert server.returncode == 0, f"Prometheus exited with {server.returncode}"
    finally:
        federation.plane.stop()


def firing(observed: Observed, name: str) -> list[dict[str, str]]:
    alerts = _api(observed.url, "/api/v1/alerts")["data"]["alerts"]
    return [
        a["labels"] for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"
    ]


def test_every_dashboard_query_returns_data(observed: Observed) -> None:
    empty = [
        f"{query.where}: {query.filled(RUN_VALUES)}"
        for path in DASHBOARDS
        for query in dashboard_queries(path)
        if not observed.query(query.filled(RUN_VALUES))
    ]
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_every_alert_expression_runs_on_series_that_exist(observed: Observed) -> None:
    missing = []
    for query in alert_queries():
        observed.query(query.expr)  # evaluates; firing or not
        for selector in selectors(query.expr):
            if observed.query(str(selector)):
                continue
            # A matcher that narrows to trouble (server-fault codes) rightly selects nothing in
            # a healthy federation: then the series its equality matchers select must exist
            # and carry the label it tests.
            equal = [
                f"{label}={value}" for label, op, value in selector.label_matchers() if op == "="
            ]
            tested = {label for label, op, _ in selector.label_matchers() if op != "="}
            series = observed.query(f"{selector.metric}{{{', '.join(equal)}}}")
            if not tested or not series or not all(tested <= set(s["metric"]) for s in series):
                missing.append(f"{query.where}: {selector}")
    assert not missing, "selectors without series:\n" + "\n".join(missing)


def test_the_rules_are_loaded_and_evaluate_healthy(observed: Observed) -> None:
    def loaded() -> list[dict[str, Any]]:
        body = _api(observed.url, "/api/v1/rules")
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    _wait_for(lambda: all(rule["health"] != "unknown" for rule in loaded()), "rules evaluated")
    rules = loaded()
    assert sorted(rule["name"] for rule in rules) == sorted(r["alert"] for r in alert_rules())
    unhealthy = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"]
    assert not unhealthy


def test_the_epsilon_alert_fires_for_the_site_near_its_cap(observed: Observed) -> None:
    job_id = observed.jobs["secagg+dp"]["job_id"]
    near_cap = "FedsiloSiteEpsilonNearCap"
    _wait_for(lambda: bool(firing(observed, near_cap)), near_cap)
    assert [(a["site"], a["job_id"]) for a in firing(observed, near_cap)] == [(CAPPED_SITE, job_id)]
    assert firing(observed, "FedsiloSiteEpsilonOverCap") == []
    # The site's own ledger agrees with the job's accountant: it took part in every round.
    spent = observed.jobs["secagg+dp"]["history"][-1]["epsilon"]
    (site,) = observed.query(
        f'fedsilo_site_privacy_epsilon{{site="{CAPPED_SITE}", job_id="{job_id}"}}'
    )
    assert float(site["value"][1]) == pytest.approx(spent, rel=1e-6)
    assert 0.8 * MAX_EPSILON <= spent <= TARGET_EPSILON


def test_the_anomaly_alert_fires_for_the_poisoning_site_only(observed: Observed) -> None:
    job_id = observed.jobs["poisoned"]["job_id"]
    _wait_for(lambda: bool(firing(observed, "FedsiloSiteUpdatesAnomalous")), "the anomaly alert")
    assert [(a["site"], a["job_id"]) for a in firing(observed, "FedsiloSiteUpdatesAnomalous")] == [
        ("mallory", job_id)
    ]
    scores = {
        sample["metric"]["site"]: float(sample["value"][1])
        for sample in observed.query(f'fedsilo_site_anomaly_score{{job_id="{job_id}"}}')
    }
    assert max(scores, key=scores.__getitem__) == "mallory" and CAPPED_SITE not in scores
    last = observed.jobs["poisoned"]["history"][-1]["anomaly"]
    assert scores == pytest.approx({site: s["score"] for site, s in last.items()})


def test_the_panels_show_what_the_jobs_did(observed: Observed) -> None:
    def label_values(expr: str, label: str) -> set[str]:
        return {sample["metric"][label] for sample in observed.query(expr)}

    assert label_values("sum by (kind) (fedsilo_client_protection_seconds_count)", "kind") == {
        "secagg-keys",
        "secagg-share",
        "secagg-mask",
        "secagg-unmask",
        "dp-noise",
        "paillier-encrypt",
    }
    assert label_values(
        "sum by (protection) (fedsilo_aggregation_shard_seconds_count)", "protection"
    ) == {"none", "secagg", "paillier"}
    private = observed.jobs["secagg+dp"]
    (completed,) = observed.query(
        f'fedsilo_rounds_total{{job_id="{private["job_id"]}", outcome="completed"}}'
    )
    assert float(completed["value"][1]) == private["spec"]["rounds"] + 1  # round 0 included
