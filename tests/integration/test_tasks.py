"""Every task through real processes, with bad data at one site: an unknown class, a
non-numeric regression target, a negative survival time and an event of 2 each make that site
decline with a message naming its file and row, and the job completes on the other sites; a
site whose test set holds one class reports a null AUC with the reason. The jobs run under
secure aggregation, Paillier, and client- and sample-level DP across the tasks."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from fedsilo.cli.federation import start_sites
from fedsilo.data import SiteConfig
from fedsilo.federations import Federation, gbsg2, heart_disease, packaged

from .conftest import FAST_LIVENESS, REPO, require_heart_data

pytestmark = pytest.mark.slow

GBSG2_DATA = (REPO / ".." / "shared" / "data" / "gbsg2_survival").resolve()
SITES = ("alpha", "beta", "gamma")
CENTRES = dict(zip(SITES, ("centre-1", "centre-2", "centre-3"), strict=True))
PACKAGED = dict(zip(SITES, packaged.SITES, strict=True))
HOSPITALS = dict(zip(SITES, ("cleveland", "hungarian", "va"), strict=True))


def replace_cell(source: Path, target: Path, row: int, column: str, value: str) -> int:
    """Copy a CSV file with a header, one cell of data row `row` replaced; returns its line."""
    with source.open(newline="") as handle:
        rows = list(csv.reader(handle))
    rows[row + 1][rows[0].index(column)] = value
    with target.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return row + 2  # the header is line 1


def prepare(folder: Path) -> dict[str, Any]:
    """Each site's files; alpha's are broken one way per dataset. Returns what alpha's
    messages must name."""
    if not (GBSG2_DATA / "centre-1" / "gbsg2.csv").exists():
        pytest.fail(f"GBSG2 data not found at {GBSG2_DATA}")
    heart = require_heart_data()
    packaged.prepare_digits(folder / "digits")
    packaged.prepare_diabetes(folder / "diabetes")
    alpha = folder / "alpha"
    alpha.mkdir()
    centre = GBSG2_DATA / "centre-1" / "gbsg2.csv"
    expected = {
        "gbsg2-time": (
            alpha / "time.csv",
            replace_cell(centre, alpha / "time.csv", 4, "time", "-3"),
            "column 'time' has value '-3': a survival time cannot be negative",
        ),
        "gbsg2-event": (
            alpha / "event.csv",
            replace_cell(centre, alpha / "event.csv", 9, "cens", "2"),
            "column 'cens' has value '2': an event is 1 (observed) or 0 (censored)",
        ),
        "digits": (
            alpha / "digits.csv",
            replace_cell(folder / "digits" / "site-1.csv", alpha / "digits.csv", 20, "digit", "11"),
            "column 'digit' has value '11', which is not among the job's classes",
        ),
    }
    pacsv.write_csv(pq.read_table(folder / "diabetes" / "site-1.parquet"), alpha / "raw.csv")
    line = replace_cell(alpha / "raw.csv", alpha / "diabetes.csv", 7, "progression", "n/a")
    expected["diabetes"] = (
        alpha / "diabetes.csv",
        line,
        "column 'progression' has value 'n/a', which is not a finite number (a regression target)",
    )
    # alpha's heart-disease rows: the patients with disease only, so its test set is one class.
    rows = (heart / "processed.cleveland.data").read_text().splitlines()
    positives = [row for row in rows if row and row.rsplit(",", 1)[1] not in ("0", "?")]
    (alpha / "heart.data").write_text("\n".join(positives) + "\n")
    return expected


def site_config(site: str, folder: Path) -> SiteConfig:
    heart = require_heart_data()
    good = site != "alpha"
    centre = GBSG2_DATA / CENTRES[site] / "gbsg2.csv"
    part = PACKAGED[site]
    alpha = folder / "alpha"
    diabetes = packaged.diabetes_spec(folder / "diabetes" / f"{part}.parquet")
    if not good:
        diabetes = diabetes.model_copy(update={"path": alpha / "diabetes.csv", "header": True})
    return SiteConfig(
        site=site,
        datasets={
            "gbsg2-time": gbsg2.dataset_spec(centre if good else alpha / "time.csv"),
            "gbsg2-event": gbsg2.dataset_spec(centre if good else alpha / "event.csv"),
            "digits": packaged.digits_spec(
                folder / "digits" / f"{part}.csv" if good else alpha / "digits.csv"
            ),
            "diabetes": diabetes,
            "heart": heart_disease.dataset_spec(
                heart / heart_disease.HOSPITALS[HOSPITALS[site]] if good else alpha / "heart.data"
            ),
        },
    )


SAMPLE_DP = {"mode": "sample", "clip_norm": 1.0, "target_epsilon": 5.0}
CLIENT_DP = {"mode": "client", "clip_norm": 0.5, "target_epsilon": 5.0}


def small(job: Any, dataset: str, **update: Any) -> dict[str, Any]:
    update |= {"dataset": dataset, "rounds": 1, "local_steps": 5, "clients_per_round": None}
    return {**job.model_dump(mode="json"), **update, "name": f"test-{dataset}"}


def test_bad_labels_decline_naming_file_and_row_and_the_others_finish(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    expected = prepare(data)
    federation = Federation(
        name="tasks-test",
        title="tasks",
        dataset="gbsg2-time",
        sites=SITES,
        site_config=site_config,
        job=gbsg2.reference_job,
        default_algorithm="fedavg",
        data_env="UNUSED",
        data_folder="unused",
        marker="unused",
    )
    plane = start_sites(
        tmp_path / "state", data, federation, aggregators=1, extra_env=FAST_LIVENESS
    )
    try:
        api = plane.api()
        # Every protection and both kinds of differential privacy, over the tasks.
        jobs = {
            "gbsg2-time": small(gbsg2.reference_job(), "gbsg2-time", protection="secagg"),
            "gbsg2-event": small(gbsg2.reference_job(), "gbsg2-event", privacy=CLIENT_DP),
            "digits": small(
                packaged.digits_job(), "digits", protection="paillier", privacy=SAMPLE_DP
            ),
            "diabetes": small(
                packaged.diabetes_job(), "diabetes", protection="secagg", privacy=SAMPLE_DP
            ),
        }
        for dataset, spec in jobs.items():
            status = wait(api, api.submit_job(spec)["job_id"])
            assert status["state"] == "completed", status
            assert sorted(status["history"][-1]["participants"]) == ["beta", "gamma"]
            path, line, message = expected[dataset]
            declined = [e["detail"] for e in status["events"] if e["kind"] == "declined"]
            assert declined and all(
                detail.startswith(f"alpha: dataset '{dataset}': {path} line {line}: {message}")
                for detail in declined
            ), declined
            assert status["history"][-1]["test_metric"] is not None
            if spec.get("privacy"):
                assert 0 < status["history"][-1]["epsilon"] <= 5.0 + 1e-6

        heart = {
            **heart_disease.reference_job().model_dump(mode="json"),
            "dataset": "heart",
            "rounds": 1,
            "local_steps": 10,
        }
        status = wait(api, api.submit_job(heart)["job_id"])
        assert status["state"] == "completed" and status["metric"] == "auc"
        alpha = status["history"][-1]["per_site"]["alpha"]
        assert "auc" not in alpha and "accuracy" in alpha and alpha["num_examples"] > 0
        assert alpha["undefined"]["auc"].startswith("the test set holds one class only (")
        assert alpha["undefined"]["auc"].endswith("examples of class 1)")
        # The federated AUC comes from the sites that define it.
        assert status["history"][-1]["test_metrics"]["auc"] > 0.5
    finally:
        plane.stop()


def wait(api: Any, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status: dict[str, Any] = api.job(job_id)
        if status["state"] != "running":
            return status
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} did not end in {timeout_s}s")
