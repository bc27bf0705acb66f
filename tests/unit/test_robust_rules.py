"""The robust rules as the replicas run them (combine_shard over in-memory blobs), the
combinations refused at submission, and the anomaly scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_aggregator_worker import Blobs, _shard

from fedsilo.aggregator.anomaly import ShardStatistics, anomaly_scores
from fedsilo.aggregator.fold import CHUNK_COORDINATES
from fedsilo.aggregator.rules import check_rule
from fedsilo.aggregator.worker import combine_shard
from fedsilo.jobs import parse_job_spec


def combined(updates: list[np.ndarray], rule: dict[str, object], threads: int = 1) -> np.ndarray:
    blobs = Blobs()
    shard = _shard(blobs, updates, [10] * len(updates), aggregation_json=json.dumps(rule))
    weights = combine_shard(shard, blobs, blobs.put, threads=threads).weights
    return np.frombuffer(blobs.data[weights], "<f4")


@pytest.mark.parametrize("threads", [1, 3])
def test_the_median_is_numpys_over_every_block(threads: int) -> None:
    rng = np.random.default_rng(0)
    size = 2 * CHUNK_COORDINATES + 123  # blocks of the fold, and a short last one
    for count in (4, 5):
        updates = [rng.normal(size=size).astype("<f4") for _ in range(count)]
        expected = np.median(np.stack(updates), axis=0)
        assert np.allclose(combined(updates, {"rule": "median"}, threads), expected, atol=1e-6)


def test_the_trimmed_mean_drops_the_extremes_of_each_coordinate() -> None:
    updates = [np.array([1.0, -5.0, 0.0], "<f4") * k for k in (1, 2, 3, 4, 100)]
    # beta 0.2 of 5: one value cut at each end, per coordinate.
    result = combined(updates, {"rule": "trimmed_mean", "beta": 0.2})
    assert result == pytest.approx([3.0, -15.0, 0.0])
    assert combined(updates, {"rule": "trimmed_mean", "beta": 0.0}) == pytest.approx(
        np.mean(np.stack(updates), axis=0)
    )


def test_one_wild_update_moves_the_median_little_and_the_mean_far() -> None:
    honest = [np.full(8, v, "<f4") for v in (0.9, 1.0, 1.1, 1.05)]
    wild = [np.full(8, 1000.0, "<f4")]
    assert np.all(np.abs(combined(honest + wild, {"rule": "median"}) - 1.05) < 1e-6)
    assert np.all(combined(honest + wild, {"rule": "weighted_mean"}) > 100)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"aggregation": {"rule": "median"}, "protection": "secagg"}, "secure aggregation hides"),
        ({"aggregation": {"rule": "trimmed_mean"}, "protection": "paillier"}, "Paillier"),
        (
            {
                "aggregation": {"rule": "median"},
                "privacy": {"mode": "client", "clip_norm": 1.0, "noise_multiplier": 1.0},
            },
            "calibrated to the mean's sensitivity",
        ),
        (
            {"aggregation": {"rule": "trimmed_mean", "beta": 0.5}},
            r"beta must be a number in \[0, 0.5\)",
        ),
        ({"aggregation": {"rule": "trimmed_mean", "k": 1}}, "takes beta only"),
        ({"aggregation": {"rule": "median", "beta": 0.1}}, "takes no parameters"),
        ({"aggregation": {"rule": "krum2"}}, "unknown aggregation rule 'krum2'"),
    ],
)
def test_combinations_that_cannot_work_are_refused_saying_why(
    fields: dict[str, object], message: str
) -> None:
    spec = parse_job_spec({"dataset": "d", "min_clients": 3, **fields})
    with pytest.raises(ValueError, match=message):
        check_rule(spec)


def test_robust_rules_run_in_plaintext_and_with_sample_level_dp() -> None:
    for fields in (
        {"aggregation": {"rule": "median"}},
        {
            "aggregation": {"rule": "trimmed_mean", "beta": 0.25},
            "privacy": {"mode": "sample", "clip_norm": 1.0, "noise_multiplier": 1.0},
        },
    ):
        check_rule(parse_job_spec({"dataset": "d", "min_clients": 4, **fields}))


def test_statistics_merge_over_ranges_and_score_the_outlier_highest() -> None:
    rng = np.random.default_rng(1)
    honest = [rng.normal(1.0, 0.3, 100) for _ in range(4)]
    flipped = -4 * honest[0]
    updates = [*honest, flipped]
    aggregate = np.median(np.stack(updates), axis=0)

    def part(begin: int, end: int) -> ShardStatistics:
        return ShardStatistics(
            clients=tuple(f"c{i}" for i in range(5)),
            squared_norms=tuple(float(u[begin:end] @ u[begin:end]) for u in updates),
            dots=tuple(float(u[begin:end] @ aggregate[begin:end]) for u in updates),
            aggregate_squared_norm=float(aggregate[begin:end] @ aggregate[begin:end]),
        )

    merged = ShardStatistics.merge([part(0, 37), part(37, 100)])
    assert merged is not None
    assert merged.squared_norms[4] == pytest.approx(float(flipped @ flipped))
    scores = anomaly_scores(merged, {f"c{i}": f"site-{i}" for i in range(5)})
    flipped_score = scores["site-4"]
    assert flipped_score["cosine"] == pytest.approx(
        float(flipped @ aggregate) / (np.linalg.norm(flipped) * np.linalg.norm(aggregate))
    )
    norms = [np.linalg.norm(u) for u in updates]
    assert flipped_score["norm_ratio"] == pytest.approx(norms[4] / np.median(norms))
    assert flipped_score["score"] == pytest.approx(
        1 - flipped_score["cosine"] + max(math.log2(flipped_score["norm_ratio"]), 0.0)
    )
    assert max(scores, key=lambda s: scores[s]["score"]) == "site-4"
    assert all(scores[f"site-{i}"]["score"] < 1.0 for i in range(4))
    # Ranges that saw different inputs do not merge.
    other = ShardStatistics(("c0",), (1.0,), (1.0,), 1.0)
    assert ShardStatistics.merge([part(0, 37), other]) is None


def test_sites_are_scored_against_the_median_update_whatever_the_rule() -> None:
    """Under FedAvg a scaled update drags the mean toward itself; the scores' reference is
    the coordinate-wise median, so the honest sites keep their cosines, and a short update
    (a site the model already fits) is not an anomaly."""
    rng = np.random.default_rng(2)
    honest = [rng.normal(1.0, 0.5, 300).astype("<f4") for _ in range(4)]
    short = (0.05 * honest[3]).astype("<f4")
    updates = [*honest[:3], short, (100 * honest[0]).astype("<f4")]
    blobs = Blobs()
    shard = _shard(blobs, updates, [10] * 5, aggregation_json='{"rule": "weighted_mean"}')
    stats = combine_shard(shard, blobs, blobs.put).stats
    assert stats is not None
    median = np.median(np.stack(updates).astype(np.float64), axis=0)
    assert stats.dots == pytest.approx([float(u.astype(np.float64) @ median) for u in updates])
    assert stats.aggregate_squared_norm == pytest.approx(float(median @ median))
    scores = anomaly_scores(stats, {})
    assert max(scores, key=lambda c: scores[c]["score"]) == stats.clients[4]
    assert all(scores[c]["score"] < 1.0 for c in stats.clients[:4])


def test_a_gram_stage_returns_the_inputs_gram_matrix_over_the_range() -> None:
    rng = np.random.default_rng(2)
    updates = [rng.normal(size=CHUNK_COORDINATES + 77).astype("<f4") for _ in range(3)]
    blobs = Blobs()
    shard = _shard(blobs, updates, [1, 1, 1], stage="gram")
    result = combine_shard(shard, blobs, blobs.put, threads=2)
    assert result.weights == "" and result.gram is not None
    stacked = np.stack(updates).astype(np.float64)
    assert np.allclose(np.reshape(result.gram, (3, 3)), stacked @ stacked.T, rtol=1e-9)


def vectors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    honest = rng.normal(1.0, 0.2, size=(5, 50))
    return np.vstack([honest, -10 * honest[:1]]), np.full(6, 1 / 6)


def test_multi_krum_picks_the_updates_closest_to_their_neighbours() -> None:
    from fedsilo.aggregator.geometry import krum

    updates, weights = vectors()
    coefficients = krum(updates @ updates.T, weights, {"f": 1, "m": 3})
    # Brute force: each update's summed squared distance to its n - f - 2 = 3 nearest.
    distances = ((updates[:, None, :] - updates[None, :, :]) ** 2).sum(axis=2)
    scores = [np.sort(np.delete(row, i))[:3].sum() for i, row in enumerate(distances)]
    chosen = set(np.argsort(scores)[:3].tolist())
    assert {i for i, c in enumerate(coefficients) if c > 0} == chosen and 5 not in chosen
    assert coefficients.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs more than 4 updates, got 4"):
        krum(updates[:4] @ updates[:4].T, weights[:4], {"f": 1})


@pytest.mark.parametrize("tau", [2.0, "median"])
def test_centered_clipping_in_coefficients_equals_iterating_on_the_vectors(
    tau: float | str,
) -> None:
    from fedsilo.aggregator.geometry import centered_clipping

    updates, weights = vectors()
    coefficients = centered_clipping(updates @ updates.T, weights, {"tau": tau, "iterations": 4})
    norms = np.linalg.norm(updates, axis=1)
    v = (weights * np.minimum(1, np.median(norms) / norms)) @ updates  # the norm-bounded start
    for _ in range(4):
        steps = updates - v
        norms = np.linalg.norm(steps, axis=1)
        radius = np.median(norms) if tau == "median" else tau
        v = v + (weights[:, None] * steps * np.minimum(1, radius / norms)[:, None]).sum(axis=0)
    assert coefficients @ updates == pytest.approx(v)
    honest = updates[:5].mean(axis=0)
    # The flipped update pulls the plain mean far off, the clipped centre little.
    assert np.linalg.norm(v - honest) < 0.2 * np.linalg.norm(weights @ updates - honest)


def test_norm_bounding_scales_long_updates_to_the_median_norm() -> None:
    from fedsilo.aggregator.geometry import norm_bounded

    updates, weights = vectors()
    coefficients = norm_bounded(updates @ updates.T, weights, {"bound": "median"})
    norms = np.linalg.norm(updates, axis=1)
    scaled = coefficients[:, None] * updates / weights[:, None]
    assert np.linalg.norm(scaled, axis=1).max() == pytest.approx(np.median(norms))
    fixed = norm_bounded(updates @ updates.T, weights, {"bound": 0.5})
    assert np.allclose(fixed / weights * norms, 0.5)


@pytest.mark.parametrize(
    ("aggregation", "message"),
    [
        ({"rule": "krum", "f": 1}, r"min_clients is 4; raise it to 5 or lower f"),
        ({"rule": "krum", "f": -1}, "f must be an integer >= 0"),
        ({"rule": "centered_clipping", "tau": 0}, "tau must be a positive number or 'median'"),
        (
            {"rule": "norm_bounded_mean", "bound": "mean"},
            "bound must be a positive number or 'median'",
        ),
        ({"rule": "krum", "coefficients": {}}, "takes f, m; got coefficients"),
    ],
)
def test_gram_rules_check_their_parameters(aggregation: dict[str, object], message: str) -> None:
    spec = parse_job_spec({"dataset": "d", "min_clients": 4, "aggregation": aggregation})
    with pytest.raises(ValueError, match=message):
        check_rule(spec)


@pytest.mark.parametrize("count", range(1, 14))
def test_the_sorting_network_sorts_every_zero_one_input(count: int) -> None:
    """The 0-1 principle: a comparator network that sorts every 0/1 input sorts all."""
    import itertools

    from fedsilo.aggregator.selection import pruned_network, sorting_network

    network = sorting_network(count)
    bits = np.array(list(itertools.product([0.0, 1.0], repeat=count)), dtype=np.float32).T
    rows = bits.copy()
    for low, high in network:
        rows[low], rows[high] = np.minimum(rows[low], rows[high]), np.maximum(rows[low], rows[high])
    assert np.array_equal(rows, np.sort(bits, axis=0))
    middle = frozenset({(count - 1) // 2, count // 2})
    assert len(pruned_network(count, middle)) <= len(network)


@pytest.mark.parametrize("count", [1, 2, 7, 12, 40])  # 40: the tiled loop
def test_the_compiled_selection_matches_numpy_with_ties_and_signed_zeros(count: int) -> None:
    from fedsilo.aggregator.selection import selection_kernel

    rng = np.random.default_rng(count)
    values = np.round(rng.normal(size=(count, 1001)), 1).astype(np.float32)  # many ties
    values[:, :10] = -0.0
    low, high = (count - 1) // 2, count // 2
    out = np.empty(values.shape[1], dtype=np.float32)
    median_terms = ((low, 0.5), (high, 0.5)) if low != high else ((low, 1.0),)
    selection_kernel(count, frozenset({low, high}), median_terms)(list(values), out)
    assert np.allclose(out, np.median(values, axis=0), atol=1e-6)
    cut = count // 4
    ends = frozenset(range(cut)) | frozenset(range(count - cut, count))
    middle = tuple((wire, 1.0 / (count - 2 * cut)) for wire in range(cut, count - cut))
    selection_kernel(count, ends, middle)(list(values), out)
    expected = np.sort(values, axis=0)[cut : count - cut].mean(axis=0)
    assert np.allclose(out, expected, atol=1e-6)
    with pytest.raises(ValueError, match="fall outside"):
        selection_kernel(count, frozenset({count}), middle)
