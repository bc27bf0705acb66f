"""An aggregator replica: lease a shard, combine its coordinate range, complete it.

Workers hold no state between shards; the scheduler re-leases a shard whose worker dies or
stalls, and only the first completion under the current lease counts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from fedsilo.aggregator.anomaly import ShardStatistics, shard_statistics
from fedsilo.aggregator.fold import fold_inputs
from fedsilo.aggregator.geometry import range_gram
from fedsilo.aggregator.robust import coordinate_median
from fedsilo.aggregator.rules import aggregation_rule
from fedsilo.aggregator.sources import BlobSource, ModelStoreSource, ShardInputError
from fedsilo.algorithms.aggregate import Vector, normalized_weights
from fedsilo.algorithms.registry import parse_algorithm, server_optimizer
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.paillier import ciphertext_bytes, multiply_range, public_key_from_bytes
from fedsilo.privacy import DifferentialPrivacy, add_gaussian_noise, noise_std_per_client
from fedsilo.secagg import RingSpec, ServerRound, Unmasking, dequantize_sum
from fedsilo.secagg.masking import DanglingPair
from fedsilo.telemetry import AGGREGATED_BYTES, SHARD_SECONDS, SHARDS_COMPLETED
from fedsilo.v1 import aggregator_pb2, aggregator_pb2_grpc, common_pb2

log = logging.getLogger("fedsilo.aggregator")

WriteBlob = Callable[[bytes | memoryview, str], str]  # (data, dtype) -> digest


def single_threaded_blas() -> None:
    """Keep BLAS to one thread for the rest of the process. The fold's BLAS calls are small
    (one block): BLAS's own threads would cost more to wake than they save, and they spin
    between calls on the cores the fold's threads need."""
    threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True)
class ShardResult:
    weights: str
    server_state: dict[str, str]
    input_bytes: int
    stats: ShardStatistics | None = None
    gram: tuple[float, ...] | None = None  # a "gram" stage's result, row-major


def _read_vector(source: BlobSource, digest: str, begin: int, end: int, what: str) -> Vector:
    """A blob's float32 values [begin, end): a view of the mapped file where there is one."""
    reader = source.open_range(digest, begin * 4, (end - begin) * 4, f"{what} {digest[:12]}")
    values = np.frombuffer(reader.take((end - begin) * 4), dtype="<f4")
    reader.finish()
    return values


def _float32_bytes(values: NDArray[Any]) -> memoryview:
    """The values as little-endian float32 bytes, without a copy when they already are."""
    return np.ascontiguousarray(values, dtype="<f4").data.cast("B")


def combine_shard(
    shard: aggregator_pb2.Shard, source: BlobSource, write: WriteBlob, threads: int = 1
) -> ShardResult:
    """Weighted mean of the clients' deltas over [begin, end), then the server optimizer step.

    The inputs are read block by block, in place where the source allows (fold_inputs), so
    memory is a few shard-sized vectors whatever the number of clients; `threads` fold
    disjoint parts of the range at once.
    """
    begin, end = shard.begin, shard.end
    if end <= begin:
        raise ShardInputError(f"empty shard range [{begin}, {end})")
    inputs = sorted(shard.inputs, key=lambda item: item.client_id)  # deterministic sum order
    if not inputs:
        raise ShardInputError(f"shard {shard.shard_id} has no inputs")
    if shard.protection == "paillier":
        return _multiply_ciphertexts(shard, inputs, source, write)
    if shard.stage == "gram":
        gram = range_gram(source, inputs, begin, end, threads)
        return ShardResult(
            weights="",
            server_state={},
            input_bytes=len(inputs) * (end - begin) * 4,
            stats=ShardStatistics(tuple(item.client_id for item in inputs), (), (), 0.0),
            gram=tuple(float(v) for v in gram.reshape(-1)),
        )
    secagg = json.loads(shard.secagg_json) if shard.protection == "secagg" else None
    privacy = (
        DifferentialPrivacy.model_validate_json(shard.privacy_json) if shard.privacy_json else None
    )
    # Under DP every client counts equally: example counts are private data themselves, and
    # fixed weights keep one client's influence (the sensitivity) at C / m.
    weights = normalized_weights(
        [1] * len(inputs) if privacy is not None else [item.num_examples for item in inputs]
    )
    if secagg is not None:
        delta = _unmasked_sum(secagg, inputs, source, begin, end, threads)
    else:
        aggregation = json.loads(shard.aggregation_json or '{"rule": "weighted_mean"}')
        rule_name = aggregation.pop("rule")
        try:
            rule = aggregation_rule(rule_name)
        except ValueError as error:
            raise ShardInputError(str(error)) from None
        delta = rule.combine(source, inputs, weights, begin, end, threads, aggregation)
    # What each site's update looks like against the round's coordinate-wise median (before
    # any noise), whatever the rule: a large update drags the mean toward itself, and with it
    # the cosines of everyone else; the median stays among the honest updates.
    stats = None
    if secagg is None and len(inputs) > 1:
        reference = (
            delta
            if rule_name == "median"
            else coordinate_median(source, inputs, weights, begin, end, threads, {})
        )
        stats = shard_statistics(source, inputs, reference, begin, end, threads)
    if privacy is not None:
        std = noise_std_per_client(
            privacy.clip_norm, privacy.require_noise_multiplier(), len(inputs), distributed=False
        ) / len(inputs)
        # Fresh OS entropy per shard: the noise must be unpredictable, shards independent.
        delta = add_gaussian_noise(delta, std, np.random.default_rng())
    if shard.input_scale and shard.input_scale != 1.0:
        delta *= np.float32(shard.input_scale)
    base = _read_vector(source, shard.base_digest, begin, end, "global model")
    optimizer = server_optimizer(parse_algorithm(json.loads(shard.algorithm_json)))
    if shard.server_state:
        state = {
            name: _read_vector(source, shard.server_state[name], begin, end, f"state {name}").copy()
            for name in optimizer.state_names
        }
    else:
        state = optimizer.initial_state(end - begin)
    new_weights, new_state = optimizer.step(base, delta, state)
    return ShardResult(
        weights=write(_float32_bytes(new_weights), "float32"),
        server_state={
            name: write(_float32_bytes(value), "float32") for name, value in new_state.items()
        },
        input_bytes=(len(inputs) * (2 if stats else 1) + 1 + len(state)) * (end - begin) * 4,
        stats=stats,
    )


def statistics_fields(stats: ShardStatistics | None) -> dict[str, Any]:
    """The CompleteShardRequest fields that carry a range's statistics."""
    if stats is None:
        return {}
    return {
        "stat_clients": list(stats.clients),
        "stat_squared_norms": list(stats.squared_norms),
        "stat_dots": list(stats.dots),
        "stat_aggregate_squared_norm": stats.aggregate_squared_norm,
    }


def result_fields(result: ShardResult) -> dict[str, Any]:
    """A completion's fields besides its identity: weights or Gram matrix, and statistics."""
    fields: dict[str, Any] = {"server_state": result.server_state}
    if result.gram is not None:
        return {
            **fields,
            "stat_clients": list(result.stats.clients if result.stats else ()),
            "gram": list(result.gram),
        }
    return {
        **fields,
        "weights": common_pb2.BlobRef(digest=result.weights),
        **statistics_fields(result.stats),
    }


def _unmasked_sum(
    secagg: dict[str, Any],
    inputs: list[aggregator_pb2.ShardInput],
    source: BlobSource,
    begin: int,
    end: int,
    threads: int = 1,
) -> Vector:
    """Secure aggregation: the ring sum of the masked inputs over [begin, end), with the
    survivors' self masks and the dropped clients' pairwise masks removed, back to floats.
    Only the sum is ever seen; no single input can be unmasked."""
    total = np.empty(end - begin, dtype=np.uint32)

    def accumulate(index: int, values: NDArray[Any], block: NDArray[Any]) -> None:
        if index == 0:
            np.copyto(block, values)
        else:
            np.add(block, values, out=block)  # uint32 addition wraps: the ring Z_2^32

    fold_inputs(source, inputs, begin, end, total, accumulate, threads)
    unmasking = Unmasking(
        {client: bytes.fromhex(seed) for client, seed in secagg["self_seeds"].items()},
        [DanglingPair(s, d, bytes.fromhex(seed)) for s, d, seed in secagg["dangling"]],
    )
    plain = ServerRound.unmask(total, begin, unmasking)
    spec = RingSpec(clip=float(secagg["clip"]), num_clients=int(secagg["ring_clients"]))
    return dequantize_sum(plain, spec, int(secagg["count"]))


def _multiply_ciphertexts(
    shard: aggregator_pb2.Shard,
    inputs: list[aggregator_pb2.ShardInput],
    source: BlobSource,
    write: WriteBlob,
) -> ShardResult:
    """Paillier: [begin, end) are ciphertext indices; their product over the uploads encrypts
    the sum of the plaintexts. The aggregator never sees a plaintext."""
    public_key = public_key_from_bytes(shard.public_key)
    width = ciphertext_bytes(public_key)
    count = shard.end - shard.begin
    uploads = []
    for item in inputs:
        data = source.read(item.digest, shard.begin * width, count * width)
        if len(data) != count * width:
            raise ShardInputError(
                f"upload of {item.client_id} is short for ciphertexts [{shard.begin}, {shard.end})"
            )
        uploads.append(data)
    product = multiply_range(uploads, public_key, shard.begin, shard.end)
    return ShardResult(
        weights=write(product, "bytes"), server_state={}, input_bytes=len(inputs) * count * width
    )


class AggregatorWorker:
    def __init__(
        self,
        worker_id: str,
        queue: aggregator_pb2_grpc.AggregationQueueStub,
        models: ModelStoreClient,
        source: BlobSource | None = None,
        write: WriteBlob | None = None,
        poll_s: float = 5.0,
        threads: int = 1,
    ) -> None:
        self.worker_id = worker_id
        self._queue = queue
        self._models = models
        self._source = source or ModelStoreSource(models)
        self._write = write or self._upload
        self._poll_s = poll_s
        self._threads = threads

    def _upload(self, data: bytes | memoryview, dtype: str) -> str:
        return self._models.upload(data, dtype=dtype).ref.digest

    def run_once(self) -> bool:
        """Lease and combine one shard; False when none was waiting."""
        response = self._queue.LeaseShard(
            aggregator_pb2.LeaseShardRequest(worker_id=self.worker_id, wait_s=self._poll_s),
            timeout=self._poll_s + 10,
        )
        if not response.has_shard:
            return False
        shard = response.shard
        start = time.perf_counter()
        try:
            result = combine_shard(shard, self._source, self._write, self._threads)
        except (ShardInputError, grpc.RpcError) as error:
            # Leave the lease to expire: another replica (or a later try) takes the shard.
            log.error("shard %s: %s", shard.shard_id, error)
            return True
        seconds = time.perf_counter() - start
        accepted = self._queue.CompleteShard(
            aggregator_pb2.CompleteShardRequest(
                shard_id=shard.shard_id,
                lease_id=shard.lease_id,
                worker_id=self.worker_id,
                seconds=seconds,
                **result_fields(result),
            )
        ).accepted
        SHARD_SECONDS.labels(self.worker_id, shard.protection or "none").observe(seconds)
        SHARDS_COMPLETED.labels(self.worker_id).inc()
        AGGREGATED_BYTES.labels(self.worker_id).inc(result.input_bytes)
        log.info(
            "shard %s [%d, %d): %d inputs in %.3fs%s",
            shard.shard_id,
            shard.begin,
            shard.end,
            len(shard.inputs),
            seconds,
            "" if accepted else " (not needed)",
        )
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except grpc.RpcError as error:
                log.warning("scheduler unreachable (%s); retrying", error.code().name)
                stop.wait(1.0)
