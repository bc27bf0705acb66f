from __future__ import annotations

from pathlib import Path

from fedsilo.scheduler.status import summarize_evaluations
from fedsilo.scheduler.store import SchedulerStore


def test_evaluations_of_one_round_leave_the_others_unread(tmp_path: Path) -> None:
    store = SchedulerStore(tmp_path / "s.db")
    store.create_job("job-1", "test", "{}")
    for round_ in (1, 2):
        for site in ("a", "b"):
            store.add_evaluation("job-1", round_, f"{site}-1", site, "v", 10, {"accuracy": 0.5})

    one = store.evaluations("job-1", 2)
    every = store.evaluations("job-1")

    assert list(one) == [2] and sorted(one[2]) == ["a", "b"]
    assert one[2]["a"] == {"accuracy": 0.5, "num_examples": 10}
    assert sorted(every) == [1, 2] and every[2] == one[2]


def test_a_metric_is_the_weighted_mean_over_the_sites_that_defined_it(tmp_path: Path) -> None:
    store = SchedulerStore(tmp_path / "s.db")
    store.create_job("job-1", "test", "{}")
    store.add_evaluation("job-1", 1, "a-1", "a", "v", 30, {"accuracy": 0.5, "auc": 0.9})
    store.add_evaluation("job-1", 1, "b-1", "b", "v", 10, {"accuracy": 0.7, "auc": 0.5})
    undefined = {"auc": "the test set holds one class only (5 examples of class 1)"}
    store.add_evaluation("job-1", 1, "c-1", "c", "v", 5, {"accuracy": 1.0}, undefined)

    per_site = store.evaluations("job-1", 1)[1]
    summary = summarize_evaluations(per_site)

    assert per_site["c"]["undefined"] == undefined
    assert summary["test_metrics"]["auc"] == (30 * 0.9 + 10 * 0.5) / 40
    assert summary["test_metrics"]["accuracy"] == (30 * 0.5 + 10 * 0.7 + 5 * 1.0) / 45


def test_the_primary_metric_is_the_jobs_else_its_tasks_else_the_sites(tmp_path: Path) -> None:
    from fedsilo.scheduler.status import primary_metric

    store = SchedulerStore(tmp_path / "s.db")
    store.create_job("job-1", "test", "{}")
    for site, n, value in (("a", 30, 0.61), ("b", 10, 0.71)):
        store.add_evaluation(
            "job-1", 1, f"{site}-1", site, "v", n, {"c_index": value, "loss": 3.0}, None, "c_index"
        )
    per_site = store.evaluations("job-1", 1)[1]

    assert primary_metric({"metric": "auc", "task": "binary"}, per_site) == "auc"
    assert primary_metric({"task": "regression"}, per_site) == "r2"
    assert primary_metric({}, per_site) == "c_index"  # the task left to the sites' labels
    summary = summarize_evaluations(per_site, "c_index")
    assert summary["test_metric"] == (30 * 0.61 + 10 * 0.71) / 40
    assert summary["mean_test_accuracy"] is None  # no site reports an accuracy for survival
