from __future__ import annotations

import pytest

from fedsilo.secagg import neighbours, recommended_degree, recommended_threshold, share_holders

IDS = [f"site-{i:02d}" for i in range(12)]


def test_a_large_degree_gives_the_complete_graph() -> None:
    graph = neighbours(IDS[:5], k=4, seed=b"s")
    assert graph == {cid: [other for other in IDS[:5] if other != cid] for cid in IDS[:5]}


def test_the_graph_is_symmetric_and_k_regular() -> None:
    graph = neighbours(IDS, k=4, seed=b"round-3")
    assert set(graph) == set(IDS)
    for cid, peers in graph.items():
        assert len(peers) == 4
        assert cid not in peers
        assert all(cid in graph[peer] for peer in peers)


def test_the_graph_is_deterministic_in_the_seed() -> None:
    assert neighbours(IDS, 4, b"a") == neighbours(list(reversed(IDS)), 4, b"a")
    assert neighbours(IDS, 4, b"a") != neighbours(IDS, 4, b"b")


@pytest.mark.parametrize(
    ("ids", "k", "message"),
    [(IDS, 3, "k must be even"), (IDS, 0, "k must be even"), (["a", "a", "b"], 2, "distinct")],
)
def test_invalid_graphs_are_named(ids: list[str], k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        neighbours(ids, k, b"s")


def test_recommended_degree_grows_logarithmically() -> None:
    assert recommended_degree(1) == 0
    assert recommended_degree(5) == 4
    assert recommended_degree(100) == 20
    assert recommended_degree(1000) == 30
    assert recommended_degree(1000) % 2 == 0


def test_recommended_threshold_is_a_strict_majority_of_the_holders() -> None:
    assert [recommended_threshold(d) for d in (1, 2, 3, 4, 11)] == [2, 2, 3, 3, 7]
    with pytest.raises(ValueError, match="degree"):
        recommended_threshold(0)


def test_share_holders_are_the_client_and_its_neighbours_sorted() -> None:
    graph = neighbours(IDS, k=4, seed=b"s")
    holders = share_holders(graph, "site-05")
    assert holders == sorted(["site-05", *graph["site-05"]])
