from __future__ import annotations

import pytest

from fedsilo.scheduler.planning import plan_shards, select_clients


def test_shards_cover_every_coordinate_once_and_are_balanced() -> None:
    shards = plan_shards(10, 4)
    assert shards == [(0, 4), (4, 7), (7, 10)]
    assert plan_shards(14, 1 << 20) == [(0, 14)]
    sizes = [end - begin for begin, end in plan_shards(1_000_003, 100_000)]
    assert sum(sizes) == 1_000_003 and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(("parameters", "shard"), [(0, 4), (10, 0)])
def test_invalid_plans_are_refused(parameters: int, shard: int) -> None:
    with pytest.raises(ValueError):
        plan_shards(parameters, shard)


def test_selection_takes_everyone_when_no_count() -> None:
    assert select_clients(["b", "a", "c"], None, {}, seed=1) == ["a", "b", "c"]


def test_selection_prefers_clients_selected_least_often() -> None:
    history = {"a": 3, "b": 3, "c": 0, "d": 1}
    assert select_clients(["a", "b", "c", "d"], 2, history, seed=7) == ["c", "d"]


def test_selection_is_reproducible_and_fair_over_rounds() -> None:
    clients = [f"site-{i}" for i in range(10)]
    history: dict[str, int] = {}
    for round_ in range(5):
        chosen = select_clients(clients, 4, history, seed=round_)
        assert chosen == select_clients(clients, 4, dict(history), seed=round_)
        for client in chosen:
            history[client] = history.get(client, 0) + 1
    assert max(history.values()) - min(history.values()) <= 1
