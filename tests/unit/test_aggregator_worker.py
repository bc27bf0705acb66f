"""combine_shard with in-memory blobs: the same function the aggregator replicas run."""

from __future__ import annotations

import hashlib
import json
import threading

import numpy as np
import pytest

from fedsilo.aggregator.blas import saxpy
from fedsilo.aggregator.fold import (
    AXPY_COORDINATES,
    CHUNK_COORDINATES,
    fold_inputs,
    weighted_sum,
)
from fedsilo.aggregator.sources import ObjectStoreSource, RangeReader, ShardInputError
from fedsilo.aggregator.worker import combine_shard
from fedsilo.storage import BlobStore, LocalDirectoryStore
from fedsilo.v1 import aggregator_pb2


class Blobs:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def put(self, payload: bytes | memoryview, dtype: str = "float32") -> str:
        digest = hashlib.sha256(payload).hexdigest()
        self.data[digest] = bytes(payload)
        return digest

    def read(self, digest: str, offset: int, length: int) -> bytes:
        return self.data[digest][offset : offset + length]

    def open_range(self, digest: str, offset: int, length: int, what: str) -> RangeReader:
        # Uneven pieces: the combine must not depend on how the store chunks a range.
        data = self.read(digest, offset, length)
        return RangeReader(
            (data[start : start + 7777] for start in range(0, len(data), 7777)), length, what
        )


def _shard(
    blobs: Blobs, updates: list[np.ndarray], counts: list[int], **fields: object
) -> aggregator_pb2.Shard:
    size = updates[0].size
    return aggregator_pb2.Shard(
        shard_id="s",
        job_id="j",
        round=1,
        begin=0,
        end=size,
        base_digest=blobs.put(np.zeros(size, "<f4").tobytes()),
        inputs=[
            aggregator_pb2.ShardInput(
                client_id=f"c{i}", digest=blobs.put(u.tobytes()), num_examples=n
            )
            for i, (u, n) in enumerate(zip(updates, counts, strict=True))
        ],
        algorithm_json=json.dumps({"name": "fedavg"}),
        **fields,
    )


def _result(blobs: Blobs, shard: aggregator_pb2.Shard) -> np.ndarray:
    weights = combine_shard(shard, blobs, blobs.put).weights
    return np.frombuffer(blobs.data[weights], "<f4")


def test_fedavg_weights_clients_by_examples() -> None:
    blobs = Blobs()
    updates = [np.full(8, 1.0, "<f4"), np.full(8, 4.0, "<f4")]
    np.testing.assert_allclose(_result(blobs, _shard(blobs, updates, [3, 1])), 1.75)


def test_with_client_level_dp_clients_count_equally_and_noise_has_the_right_scale() -> None:
    blobs = Blobs()
    size, clip, noise = 200_000, 0.5, 1.5
    updates = [np.full(size, 0.1, "<f4"), np.full(size, 0.3, "<f4")]
    privacy = json.dumps({"mode": "client", "clip_norm": clip, "noise_multiplier": noise})
    result = _result(blobs, _shard(blobs, updates, [100, 1], privacy_json=privacy))
    assert abs(result.mean() - 0.2) < 0.01  # uniform weights, not 100:1
    assert abs(result.std() - noise * clip / 2) / (noise * clip / 2) < 0.01  # z·C on the sum
    again = _result(blobs, _shard(blobs, updates, [100, 1], privacy_json=privacy))
    assert not np.array_equal(result, again)  # fresh, unpredictable noise every time


def test_a_shard_spanning_many_chunks_equals_one_weighted_sum() -> None:
    blobs = Blobs()
    size = 3 * CHUNK_COORDINATES + 123
    rng = np.random.default_rng(7)
    updates = [rng.standard_normal(size).astype("<f4") for _ in range(5)]
    counts = [5, 1, 30, 7, 2]

    result = _result(blobs, _shard(blobs, updates, counts))

    expected = (np.asarray(counts, np.float64) / sum(counts)) @ np.stack(updates)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_threads_fold_disjoint_parts_to_the_same_bits(threads: int) -> None:
    blobs = Blobs()
    size = max(4 * CHUNK_COORDINATES, AXPY_COORDINATES) + 1001  # BLAS's axpy path
    rng = np.random.default_rng(11)
    updates = [rng.standard_normal(size).astype("<f4") for _ in range(4)]
    inputs = _shard(blobs, updates, [3, 9, 1, 4]).inputs
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    begin, end = 77, size - 5

    one = weighted_sum(blobs, list(inputs), weights, begin, end, threads=1)
    many = weighted_sum(blobs, list(inputs), weights, begin, end, threads=threads)

    np.testing.assert_array_equal(many, one)  # same order of additions per coordinate
    np.testing.assert_allclose(one, weights @ np.stack(updates)[:, begin:end], atol=1e-5)
    rings = [rng.integers(0, 2**32, size, dtype=np.uint64).astype("<u4") for _ in range(3)]
    ring_inputs = _shard(blobs, rings, [1, 1, 1]).inputs
    ring_sum = np.empty(end - begin, np.uint32)

    def add(index: int, values: np.ndarray, block: np.ndarray) -> None:
        np.add(block, values, out=block) if index else np.copyto(block, values)

    fold_inputs(blobs, list(ring_inputs), begin, end, ring_sum, add, threads=threads)
    expected = (sum(r[begin:end].astype(np.uint64) for r in rings) % 2**32).astype(np.uint32)
    np.testing.assert_array_equal(ring_sum, expected)


def test_an_input_shorter_or_longer_than_its_range_is_refused() -> None:
    blobs = Blobs()
    shard = _shard(blobs, [np.ones(100, "<f4"), np.ones(100, "<f4")], [1, 1])
    short = blobs.put(np.ones(99, "<f4").tobytes())
    shard.inputs[1].digest = short
    with pytest.raises(ShardInputError, match="ended 4 bytes early"):
        combine_shard(shard, blobs, blobs.put)

    reader = RangeReader(iter([b"abcd", b"ef"]), 4, "input")
    assert bytes(reader.take(4)) == b"abcd"
    with pytest.raises(ShardInputError, match="longer than its range"):
        reader.finish()
    short = RangeReader(iter([b"abc"]), 5, "input")
    with pytest.raises(ShardInputError, match="input ended 2 bytes early"):
        short.take(5)


def test_stream_pieces_are_views_within_a_chunk_and_copies_across_chunks() -> None:
    chunks = [b"0123456789", b"abcdef", b"", b"ghij"]
    reader = RangeReader(iter(chunks), 20, "input")
    first = reader.take(4)
    assert bytes(first) == b"0123" and first.obj is chunks[0]  # no copy
    assert bytes(reader.take(8)) == b"456789ab"  # across two chunks
    assert bytes(reader.take(8)) == b"cdefghij"  # across an empty one
    reader.finish()


def test_directory_store_ranges_are_mapped_not_copied(tmp_path) -> None:
    store = BlobStore(LocalDirectoryStore(tmp_path))
    values = np.arange(1000, dtype="<f4")
    digest = store.put(values.tobytes()).digest
    source = ObjectStoreSource(store)

    reader = source.open_range(digest, 100 * 4, 600 * 4, "update")
    piece = reader.take(300 * 4)
    np.testing.assert_array_equal(np.frombuffer(piece, "<f4"), values[100:400])
    assert piece.readonly
    np.testing.assert_array_equal(np.frombuffer(reader.take(300 * 4), "<f4"), values[400:700])
    with pytest.raises(ValueError, match="past the end"):
        reader.take(4)
    reader.finish()
    partly = source.open_range(digest, 0, 600 * 4, "update")
    partly.take(300 * 4)
    with pytest.raises(ShardInputError, match="1200 bytes unread"):
        partly.finish()
    with pytest.raises(ShardInputError, match="ended 400 bytes early"):
        source.open_range(digest, 900 * 4, 200 * 4, "update")


def test_blas_axpy_adds_in_place_and_refuses_what_it_cannot_take() -> None:
    x = np.arange(5, dtype=np.float32)
    y = np.ones(5, dtype=np.float32)
    saxpy(x, y, 2.0)
    np.testing.assert_array_equal(y, [1, 3, 5, 7, 9])
    saxpy(np.frombuffer(x.tobytes(), np.float32), y, -1.0)  # a read-only x is fine
    np.testing.assert_array_equal(y, [1, 2, 3, 4, 5])
    with pytest.raises(TypeError, match="float32"):
        saxpy(x.astype(np.float64), y, 1.0)
    with pytest.raises(ValueError, match="one length"):
        saxpy(x[:4], y, 1.0)
    with pytest.raises(ValueError, match="contiguous"):
        saxpy(np.arange(10, dtype=np.float32)[::2], y, 1.0)


def test_blas_axpy_gives_each_thread_its_own_sum() -> None:
    """Called through ctypes, the routine runs without the GIL, in threads at once."""
    xs = [np.full(1 << 20, float(i), np.float32) for i in range(4)]
    ys = [np.zeros(1 << 20, np.float32) for _ in range(4)]

    def work(i: int) -> None:
        for _ in range(20):
            saxpy(xs[i], ys[i], 0.5)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, y in enumerate(ys):
        np.testing.assert_array_equal(y, np.full(1 << 20, 10.0 * i, np.float32))
