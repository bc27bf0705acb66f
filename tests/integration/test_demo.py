"""`fedsilo demo` end to end, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedsilo.federations import heart_disease

from .conftest import require_heart_data

pytestmark = pytest.mark.slow


def test_demo_writes_results_and_a_convergence_plot(tmp_path: Path) -> None:
    data_dir = require_heart_data()
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedsilo.cli.main",
            "demo",
            "--algorithm",
            "fedprox",
            "--rounds",
            "3",
            "--out",
            str(out),
            "--data-dir",
            str(data_dir),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    results = json.loads((out / "results.json").read_text())
    assert results["algorithm"] == "fedprox" and results["protection"] == "secagg"
    assert [r["round"] for r in results["rounds"]] == [1, 2, 3]
    for row in results["rounds"]:
        assert 0 <= row["mean_test_accuracy"] <= 1 and row["duration_s"] > 0
    sites = set(heart_disease.HOSPITALS)
    assert set(results["final"]["per_site"]) == sites
    assert results["final"]["mean_test_accuracy"] == results["rounds"][-1]["mean_test_accuracy"]
    # AUC next to accuracy: every hospital's test set holds both classes.
    final = results["final"]
    assert 0.5 < final["metrics"]["auc"] <= 1 and 0 < final["metrics"]["average_precision"] <= 1
    assert all("auc" in final["per_site_metrics"][site] for site in sites)
    assert results["federation"] == "heart" and results["task"] == "binary"
    assert results["metric"] == "auc" and "test auc per site" in result.stdout
    assert "federated test accuracy" in result.stdout  # accuracy beside the AUC
    for source in (final, results["baselines"]["pooled"], results["baselines"]["local"]):
        assert 0.5 < source["union_test_metrics"]["auc"] <= 1
        assert set(source["per_site_metrics"]) == sites
    assert set(results["baselines"]["pooled"]["per_site"]) == sites
    assert set(results["baselines"]["local"]["per_site"]) == sites
    services = {p["service"] for p in results["processes"]}
    assert {"registry", "keymanager", "scheduler", "modelstore", "aggregator-0"} <= services
    assert {f"client-{site}" for site in sites} <= services
    assert all(p["exit_code"] == 0 and p["pid"] > 0 for p in results["processes"])
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for site in sites:
        assert site in result.stdout  # the per-hospital table


def test_the_gbsg2_demo_reaches_the_pooled_c_index_under_secure_aggregation(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "fedsilo.cli.main", "demo", "--federation", "gbsg2"),
            *("--out", str(out), "--quiet", "--aggregators", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((out / "results.json").read_text())
    assert (results["federation"], results["task"], results["metric"]) == (
        "gbsg2",
        "survival",
        "c_index",
    )
    assert results["protection"] == "secagg" and results["final"]["mean_test_accuracy"] is None
    federated = results["final"]["union_test_metrics"]["c_index"]
    pooled = results["baselines"]["pooled"]["union_test_metrics"]["c_index"]
    local = results["baselines"]["local"]["union_test_metrics"]["c_index"]
    # A Cox model learned across the centres, as good as the pooled one on all test rows.
    assert federated > 0.55 and abs(federated - pooled) < 0.03 and local > 0.5
    assert set(results["final"]["per_site_metrics"]) == set(results["sites"])
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
