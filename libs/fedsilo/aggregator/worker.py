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

WriteBlob = Callable[[bytes, str], str]  # (data, dtype) -> digest
# Coordinates per client row of the combine buffer: rows of all inputs stay in cache while one
# matrix-vector product folds them, so each byte of an update crosses memory once.
CHUNK_COORDINATES = 1 << 15


@dataclass(frozen=True)
class ShardResult:
    weights: str
    server_state: dict[str, str]
    input_bytes: int


def _read_vector(source: BlobSource, digest: str, begin: int, end: int, what: str) -> Vector:
    data = source.read(digest, begin * 4, (end - begin) * 4)
    if len(data) != (end - begin) * 4:
        raise ShardInputError(f"{what} {digest[:12]}: got {len(data)} bytes for [{begin}, {end})")
    return np.frombuffer(data, dtype="<f4")


def fold_inputs(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    begin: int,
    end: int,
    fold: Callable[[NDArray[Any], slice], None],
    dtype: str,
) -> None:
    """Stream every input's [begin, end) in chunks into one preallocated buffer of
    (inputs, chunk) values and hand each filled block to `fold(block, where)`, `where` being
    the block's coordinates relative to `begin`. Memory is len(inputs) * CHUNK_COORDINATES
    values, not len(inputs) * (end - begin)."""
    count = end - begin
    chunk = min(CHUNK_COORDINATES, count)
    itemsize = np.dtype(dtype).itemsize
    buffer = np.empty(len(inputs) * chunk, dtype=dtype)
    readers = [
        source.open_range(
            item.digest,
            begin * itemsize,
            count * itemsize,
            f"input of {item.client_id} ({item.digest[:12]})",
        )
        for item in inputs
    ]
    for start in range(0, count, chunk):
        width = min(chunk, count - start)
        block = buffer[: len(inputs) * width].reshape(len(inputs), width)
        for row, reader in zip(block, readers, strict=True):
            reader.fill(row.data.cast("B"))
        fold(block, slice(start, start + width))
    for reader in readers:
        reader.finish()


def weighted_sum(
    source: BlobSource,
    inputs: list[aggregator_pb2.ShardInput],
    weights: NDArray[Any],
    begin: int,
    end: int,
) -> Vector:
    total = np.empty(end - begin, dtype=np.float32)
    vector = np.asarray(weights, dtype=np.float32)

    def fold(block: NDArray[Any], where: slice) -> None:
        np.matmul(vector, block, out=total[where])

    fold_inputs(source, inputs, begin, end, fold, "<f4")
    return total


def combine_shard(shard: aggregator_pb2.Shard, source: BlobSource, write: WriteBlob) -> ShardResult:
    """Weighted mean of the clients' deltas over [begin, end), then the server optimizer step.

    The inputs are streamed chunk by chunk and folded with one matrix-vector product per
    chunk, so memory is a few shard-sized vectors whatever the number of clients.
    """
    begin, end = shard.begin, shard.end
    if end <= begin:
        raise ShardInputError(f"empty shard range [{begin}, {end})")
    inputs = sorted(shard.inputs, key=lambda item: item.client_id)  # deterministic sum order
    if not inputs:
        raise ShardInputError(f"shard {shard.shard_id} has no inputs")
    if shard.protection == "paillier":
        return _multiply_ciphertexts(shard, inputs, source, write)
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
        delta = _unmasked_sum(secagg, inputs, source, begin, end)
    else:
        delta = weighted_sum(source, inputs, weights, begin, end)
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
        weights=write(new_weights.astype("<f4").tobytes(), "float32"),
        server_state={
            name: write(value.astype("<f4").tobytes(), "float32")
            for name, value in new_state.items()
        },
        input_bytes=(len(inputs) + 1 + len(state)) * (end - begin) * 4,
    )


def _unmasked_sum(
    secagg: dict[str, Any],
    inputs: list[aggregator_pb2.ShardInput],
    source: BlobSource,
    begin: int,
    end: int,
) -> Vector:
    """Secure aggregation: the ring sum of the masked inputs over [begin, end), with the
    survivors' self masks and the dropped clients' pairwise masks removed, back to floats.
    Only the sum is ever seen; no single input can be unmasked."""
    total = np.empty(end - begin, dtype=np.uint32)

    def fold(block: NDArray[Any], where: slice) -> None:
        # uint32 addition wraps: the sum in the ring Z_2^32.
        np.sum(block, axis=0, dtype=np.uint32, out=total[where])

    fold_inputs(source, inputs, begin, end, fold, "<u4")
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
    ) -> None:
        self.worker_id = worker_id
        self._queue = queue
        self._models = models
        self._source = source or ModelStoreSource(models)
        self._write = write or self._upload
        self._poll_s = poll_s

    def _upload(self, data: bytes, dtype: str) -> str:
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
            result = combine_shard(shard, self._source, self._write)
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
                weights=common_pb2.BlobRef(digest=result.weights),
                server_state=result.server_state,
                seconds=seconds,
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
