"""`fedsilo site check`: what a site config yields, read offline, and its problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsilo.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_a_survival_site_shows_rows_columns_and_events(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["site", "check", "--data", str(EXAMPLES / "sites" / "gbsg2-centre-4.yaml"), "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["site"] == "centre-4"
    (dataset,) = report["datasets"]
    assert dataset["task"] == "survival" and dataset["primary_metric"] == "c_index"
    assert dataset["train"] + dataset["test"] == dataset["rows"] > 0
    # horTh and menostat one-hot without their first level, tgrade ordinal.
    assert "horTh=yes" in dataset["columns"] and "tgrade" in dataset["columns"]
    assert "time" not in dataset["columns"] and "split" not in dataset["columns"]
    assert (
        dataset["events"]["train"] + dataset["events"]["test"] + dataset["censored"]
        == dataset["rows"]
    )
    assert dataset["problems"] == []


def test_a_bad_row_is_a_problem_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "outcomes.csv"
    data.write_text("age,label\n50,0\n61,1\n47,maybe\n70,1\n")
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: test\n"
        "datasets:\n"
        "  outcomes:\n"
        "    path: outcomes.csv\n"
        "    header: true\n"
        "    label: {column: label, task: binary}\n"
    )
    code = main(["site", "check", "--data", str(site)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{data} line 4: column 'label' has value 'maybe'" in " ".join(out.split())


def test_checked_against_a_job_the_jobs_classes_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "kinds.csv"
    data.write_text("x,kind\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(10)))
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: test\ndatasets:\n  kinds:\n    path: kinds.csv\n    header: true\n"
        "    label: {column: kind, task: multiclass}\n"
    )
    job = tmp_path / "job.yaml"
    job.write_text("dataset: kinds\ntask: multiclass\nclasses: [a, b, c]\n")
    code = main(["site", "check", "--data", str(site), "--job", str(job), "--json"])
    (dataset,) = json.loads(capsys.readouterr().out)["datasets"]
    assert code == 0 and dataset["classes"]["train"]["c"] == 0
    assert any("classes c do not occur in the test split" in w for w in dataset["warnings"])
