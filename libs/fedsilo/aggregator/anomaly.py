"""Per-site anomaly scores from what the aggregator sees: each update's norm against the median
norm, and its cosine similarity to the round's coordinate-wise median update (robust, whatever
rule aggregates: under FedAvg one large update drags the mean, and every honest site's cosine
with it, toward itself).

Each aggregator replica measures its coordinate range (`shard_statistics`: every input's
squared norm and dot product with the reference, and the reference's squared norm); the
scheduler adds the ranges up (`ShardStatistics.merge`) and scores the sites (`anomaly_scores`).
A site's score is (1 - cosine) + max(0, log2(norm / median norm)): about 0.3 for an honest site
on non-IID data, 4 for a sign flip x4, 6.6 for a scaling x100; a site that sends nothing useful
(a zero update) scores 1.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedsilo.aggregator.fold import fold_inputs
from fedsilo.aggregator.sources import BlobSource
from fedsilo.v1 import aggregator_pb2


@dataclass(frozen=True)
class ShardStatistics:
    clients: tuple[str, ...]
    squared_norms: tuple[float, ...]
    dots: tuple[float, ...]  # each input's dot product with the reference (the median update)
    aggregate_squared_norm: float

    @staticmethod
    def merge(parts: Iterable[ShardStatistics]) -> ShardStatistics | None:
        """The whole vector's statistics from its ranges' (None when there are none, or the
        ranges saw different inputs)."""
        items = list(parts)
        if not items or any(part.clients != items[0].clients for part in items):
            return None
        return ShardStatistics(
            clients=items[0].clients,
            squared_norms=tuple(
                map(math.fsum, zip(*(p.squared_norms for p in items), strict=True))
            ),
            dots=tuple(map(math.fsum, zip(*(p.dots for p in items), strict=True))),
            aggregate_squared_norm=math.fsum(p.aggregate_squared_norm for p in items),
        )


def shard_statistics(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    delta: NDArray[np.float32],
    begin: int,
    end: int,
    threads: int = 1,
) -> ShardStatistics:
    """One more read of the inputs over [begin, end): squared norms and dot products with
    `delta` (the reference over the same range), block by block, in one compiled pass
    per piece that accumulates in float64 (fedsilo.aggregator.kernels)."""
    from fedsilo.aggregator.kernels import norm_and_dot, read_only

    squared = [0.0] * len(inputs)
    dots = [0.0] * len(inputs)
    lock = threading.Lock()
    reference = np.ascontiguousarray(delta, dtype=np.float32)  # read, never written

    def accumulate(index: int, values: NDArray[Any], block: NDArray[Any]) -> None:
        # `block` is the matching range of `reference`, read and left as it is.
        norm, dot = norm_and_dot(read_only(values), read_only(block))
        with lock:
            squared[index] += norm
            dots[index] += dot

    fold_inputs(source, inputs, begin, end, reference, accumulate, threads)
    return ShardStatistics(
        clients=tuple(item.client_id for item in inputs),
        squared_norms=tuple(squared),
        dots=tuple(dots),
        aggregate_squared_norm=norm_and_dot(read_only(reference), read_only(reference))[0],
    )


# Above this a site's update is called anomalous (honest sites score about 0.3).
DEFAULT_THRESHOLD = 2.0


def anomaly_scores(
    stats: ShardStatistics,
    sites: Mapping[str, str],
    previous: Mapping[str, Mapping[str, float]] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, dict[str, float]]:
    """site -> {score, norm_ratio, cosine, streak}; `sites` maps client ids to site names;
    `streak` counts the consecutive rounds above `threshold`, continuing `previous` (the last
    round's scores)."""
    norms = [math.sqrt(max(value, 0.0)) for value in stats.squared_norms]
    median = statistics.median(norms) if norms else 0.0
    aggregate = math.sqrt(max(stats.aggregate_squared_norm, 0.0))
    out: dict[str, dict[str, float]] = {}
    for client, norm, dot in zip(stats.clients, norms, stats.dots, strict=True):
        cosine = dot / (norm * aggregate) if norm > 0 and aggregate > 0 else 0.0
        ratio = norm / median if median > 0 else 1.0
        # Only the excess counts: a short update has little influence on any rule (and a site
        # whose data the model already fits sends one); a long one is how a site takes over.
        excess = max(math.log2(ratio), 0.0) if ratio > 0 else 0.0
        site = sites.get(client, client)
        score = (1.0 - cosine) + excess
        before = (previous or {}).get(site, {}).get("streak", 0.0)
        out[site] = {
            "score": score,
            "norm_ratio": ratio,
            "cosine": cosine,
            "streak": before + 1.0 if score > threshold else 0.0,
        }
    return out
