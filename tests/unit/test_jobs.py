from __future__ import annotations

from pathlib import Path

import pytest

from fedsilo.jobs import JobSpecError, load_job_spec, parse_job_spec


def test_defaults_and_named_algorithm() -> None:
    spec = parse_job_spec({"dataset": "heart-disease", "algorithm": {"name": "fedprox"}})
    assert spec.algorithm.name == "fedprox" and spec.algorithm.mu == 0.01
    assert spec.rounds == 15 and spec.batch_size == 4


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"dataset": "d", "rounds": 0}, "rounds"),
        ({"dataset": "d", "algorithm": {"name": "fedprox", "mu": -1}}, "algorithm.fedprox.mu"),
        ({"dataset": "d", "algorithm": {"name": "sgd-magic"}}, "algorithm"),
        ({"dataset": "d", "learnig_rate": 0.1}, "learnig_rate"),
        ({"rounds": 3}, "dataset"),
        ({"dataset": "d", "model": {"name": "mlp"}}, "model"),
    ],
)
def test_errors_name_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(JobSpecError) as error:
        parse_job_spec(spec)
    assert f"  {field}" in str(error.value)


def test_quorum_must_be_reachable() -> None:
    with pytest.raises(JobSpecError, match="min_clients"):
        parse_job_spec({"dataset": "d", "clients_per_round": 2, "min_clients": 3})


def test_yaml_files_and_bad_yaml(tmp_path: Path) -> None:
    good = tmp_path / "job.yaml"
    good.write_text("dataset: heart-disease\nalgorithm:\n  name: fedadam\n  server_lr: 0.3\n")
    assert load_job_spec(good).algorithm.server_lr == 0.3
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed\n")
    with pytest.raises(JobSpecError, match="not valid YAML"):
        load_job_spec(bad)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"task": "regression", "metric": "auc"}, "metric 'auc' does not apply to a regression"),
        ({"task": "binary", "loss": {"name": "cox"}}, "loss.name 'cox' does not apply to a binary"),
        (
            {"task": "survival", "model": {"name": "mlp", "hidden": [4]}, "classes": [0, 1]},
            "classes",
        ),
        ({"task": "binary", "model": {"name": "cox"}}, "model 'cox' is a survival model"),
        ({"task": "binary", "classes": [0, 1, 2]}, "a binary task has two classes"),
        ({"task": "multiclass", "classes": [0, 1, 0]}, "classes repeat a label"),
        (
            {"task": "multiclass", "classes": [0, 1, 2], "loss": {"class_weights": [1, 2]}},
            "loss.class_weights has 2 weights for 3 classes",
        ),
        ({"task": "binary", "target": {"center": 3}}, "target scaling applies to regression"),
        (
            {
                "task": "survival",
                "privacy": {"mode": "sample", "clip_norm": 1.0, "noise_multiplier": 1.0},
            },
            "use privacy.mode 'client' for survival jobs",
        ),
    ],
)
def test_task_settings_that_do_not_fit_are_refused(spec: dict[str, object], message: str) -> None:
    with pytest.raises(JobSpecError, match=message):
        parse_job_spec({"dataset": "d", **spec})


def test_the_primary_metric_defaults_to_the_tasks() -> None:
    assert parse_job_spec({"dataset": "d", "task": "survival"}).primary_metric == "c_index"
    assert parse_job_spec({"dataset": "d", "task": "multiclass"}).primary_metric == "macro_f1"
    assert parse_job_spec({"dataset": "d", "metric": "log_loss"}).primary_metric == "log_loss"
    assert parse_job_spec({"dataset": "d"}).primary_metric is None  # left to the sites' labels
