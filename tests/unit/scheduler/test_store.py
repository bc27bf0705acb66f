from __future__ import annotations

from pathlib import Path

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
