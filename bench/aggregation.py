"""Aggregation throughput, and aggregator replicas dividing a large round.

1. Plaintext weighted FedAvg of 10 x 10M float32 updates with the aggregator's own fold
   (block by block of the output, each input's piece read in place, from memory or from the
   object store's mapped files, scaled and added in cache; one thread per CPU), against a
   single `weights @ stacked` numpy call on the same, already stacked data.
2. A 100M-parameter x 10-client round reduced by 1, 2 and 4 aggregator replicas: real
   `python -m fedsilo_services.aggregator` processes read the updates from the object store
   (a directory) and write their shard results to it, as the chart runs them, beside a real
   model store process; the shard queue they lease from is served here with the scheduler's
   own leasing code
   (fedsilo.scheduler.shards). Each replica folds with one thread, as a pod with one CPU
   would. The sets of 1, 2 and 4 replicas run side by side, each on its own queue, and the
   rounds alternate between them, so that the machine's drift touches every set alike.
3. Exactness under failure: with 2 replicas, one is killed (SIGKILL) holding a lease; its
   shard is leased again after the lease runs out, and the result must equal, bit for bit,
   the round reduced by a single replica.

   The object store is a directory: once in memory (tmpfs, an object store that keeps up,
   as a MinIO tier sized for the aggregators would) and once on this machine's disk.

    make bench-aggregation ARGS='--runs 3 --parameters 100000000'
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from machine import machine
from timing import median_seconds

from fedsilo.aggregator.fold import weighted_sum
from fedsilo.aggregator.sources import ObjectStoreSource
from fedsilo.aggregator.worker import single_threaded_blas
from fedsilo.cli.processes import ServiceProcess, spawn
from fedsilo.parallel import available_cpus
from fedsilo.rpc.channels import CHANNEL_OPTIONS
from fedsilo.scheduler.planning import plan_shards
from fedsilo.scheduler.shards import LeaseLost, ShardState, complete, lease_next, renew_lease
from fedsilo.storage import BlobStore, LocalDirectoryStore
from fedsilo.v1 import aggregator_pb2, aggregator_pb2_grpc

RESULTS = Path(__file__).parent / "results"
MEMORY_STORE = "/dev/shm"
GB = 1e9


class MemorySource:
    """Updates already received into memory: pieces are views of it, as of a received
    message."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def read(self, digest: str, offset: int, length: int) -> bytes:
        return self.blobs[digest][offset : offset + length]

    def open_range(self, digest: str, offset: int, length: int, what: str) -> MemoryRange:
        return MemoryRange(memoryview(self.blobs[digest])[offset : offset + length])


class MemoryRange:
    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.position = 0

    def take(self, size: int) -> memoryview:
        self.position += size
        return self.view[self.position - size : self.position]

    def finish(self) -> None:
        assert self.position == len(self.view)


def throughput(clients: int, parameters: int, runs: int) -> dict[str, float]:
    """The fold against `weights @ stacked`, in memory and from the object store's files.

    This machine's memory bandwidth drifts (a shared host), so the reference and the two
    folds run interleaved, run after run, each reported as the median of its runs, with
    BLAS single-threaded as the aggregator service runs it. The reference with numpy's
    default BLAS threads is timed too, first and on its own (switching BLAS threads between
    runs leaves spinning threads on the cores), and its ratio reported beside."""
    rng = np.random.default_rng(0)
    stacked = rng.standard_normal((clients, parameters), dtype=np.float32)
    weights = rng.uniform(1, 10, clients).astype(np.float32)
    weights /= weights.sum()
    source = MemorySource({f"c{i}": stacked[i].tobytes() for i in range(clients)})
    inputs = [aggregator_pb2.ShardInput(client_id=f"c{i}", digest=f"c{i}") for i in range(clients)]
    size = clients * parameters * 4
    t_ref_default = median_seconds(lambda: weights @ stacked, runs)
    single_threaded_blas()
    threads = available_cpus()
    with tempfile.TemporaryDirectory(dir=os.environ.get("FEDSILO_BENCH_TMP")) as scratch:
        # The replicas' path: the object store's files, mapped (page cache).
        blobs = BlobStore(LocalDirectoryStore(Path(scratch)))
        stored = ObjectStoreSource(blobs)
        on_disk = [
            aggregator_pb2.ShardInput(client_id=f"c{i}", digest=blobs.put(row.tobytes()).digest)
            for i, row in enumerate(stacked)
        ]
        actions = {
            "reference": lambda: weights @ stacked,
            "fold": lambda: weighted_sum(source, inputs, weights, 0, parameters, threads),
            "store": lambda: weighted_sum(stored, on_disk, weights, 0, parameters, threads),
        }
        for name in ("fold", "store"):
            np.testing.assert_allclose(actions[name](), actions["reference"](), atol=1e-5)
        times: dict[str, list[float]] = {name: [] for name in actions}
        for _ in range(runs):
            for name, action in actions.items():
                times[name].append(median_seconds(action, 1))
    t_ref, t_ours, t_store = (statistics.median(times[name]) for name in actions)
    return {
        "bytes": size,
        "threads": threads,
        "fold_s": t_ours,
        "fold_from_store_s": t_store,
        "reference_s": t_ref,
        "reference_default_blas_threads_s": t_ref_default,
        "ratio_to_default_blas_reference": t_ref_default / t_ours,
        "store_ratio_to_default_blas_reference": t_ref_default / t_store,
        "fold_gb_s": size / t_ours / GB,
        "fold_from_store_gb_s": size / t_store / GB,
        "reference_gb_s": size / t_ref / GB,
        "ratio_to_reference": t_ref / t_ours,
        "store_ratio_to_reference": t_ref / t_store,
    }


class BenchQueue(aggregator_pb2_grpc.AggregationQueueServicer):
    """The AggregationQueue service over one round's shards, with the scheduler's leasing."""

    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self._wake = threading.Condition()
        self._shards: list[ShardState] = []
        self._template = aggregator_pb2.Shard()
        self.leases: list[tuple[str, str]] = []  # (worker, shard) in lease order

    def start_round(self, template: aggregator_pb2.Shard, parameters: int, width: int) -> None:
        with self._wake:
            self._template = template
            self._shards = [
                ShardState(f"shard-{i}", begin, end)
                for i, (begin, end) in enumerate(plan_shards(parameters, width))
            ]
            self.leases = []
            self._wake.notify_all()

    def wait_done(self, timeout_s: float) -> list[ShardState]:
        deadline = time.monotonic() + timeout_s
        with self._wake:
            while not all(shard.done for shard in self._shards):
                if not self._wake.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise TimeoutError("the round was not reduced in time")
            return list(self._shards)

    def LeaseShard(
        self, request: aggregator_pb2.LeaseShardRequest, context: grpc.ServicerContext
    ) -> aggregator_pb2.LeaseShardResponse:
        deadline = time.monotonic() + request.wait_s
        with self._wake:
            while True:
                shard = lease_next(self._shards, request.worker_id, time.time(), self.lease_s)
                if shard is not None:
                    self.leases.append((request.worker_id, shard.shard_id))
                    self._wake.notify_all()
                    message = aggregator_pb2.Shard()
                    message.CopyFrom(self._template)
                    message.shard_id, message.lease_id = shard.shard_id, shard.lease_id
                    message.begin, message.end = shard.begin, shard.end
                    message.lease_expires_unix = shard.lease_expires
                    return aggregator_pb2.LeaseShardResponse(has_shard=True, shard=message)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return aggregator_pb2.LeaseShardResponse(has_shard=False)
                self._wake.wait(timeout=min(remaining, 0.5))

    def RenewLease(
        self, request: aggregator_pb2.RenewLeaseRequest, context: grpc.ServicerContext
    ) -> aggregator_pb2.RenewLeaseResponse:
        with self._wake:
            shard = next(s for s in self._shards if s.shard_id == request.shard_id)
            try:
                expires = renew_lease(shard, request.lease_id, time.time(), self.lease_s)
            except LeaseLost as lost:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(lost))
            return aggregator_pb2.RenewLeaseResponse(lease_expires_unix=expires)

    def CompleteShard(
        self, request: aggregator_pb2.CompleteShardRequest, context: grpc.ServicerContext
    ) -> aggregator_pb2.CompleteShardResponse:
        with self._wake:
            shard = next(s for s in self._shards if s.shard_id == request.shard_id)
            accepted = complete(
                shard,
                request.lease_id,
                request.worker_id,
                request.weights.digest,
                dict(request.server_state),
            )
            self._wake.notify_all()
            return aggregator_pb2.CompleteShardResponse(accepted=accepted)


class Bench:
    """A model store over one objects folder, and shard queues that replicas lease from."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = BlobStore(LocalDirectoryStore(root / "objects"))
        self._servers: list[grpc.Server] = []
        self.common = {
            "FEDSILO_INSECURE": "true",
            "FEDSILO_AUDIT_DIR": str(root / "audit"),
            "FEDSILO_STORAGE_PATH": str(root / "objects"),
        }
        self.modelstore = spawn(
            "modelstore",
            "fedsilo_services.modelstore",
            {**self.common, "FEDSILO_KEYMANAGER_ADDRESS": "127.0.0.1:1"},
            root / "run",
        )
        self.modelstore.wait_ready(60)

    def replicas(self, count: int, prefix: str, lease_s: float) -> Replicas:
        """`count` aggregator processes leasing from a queue of their own."""
        queue = BenchQueue(lease_s)
        server = grpc.server(futures.ThreadPoolExecutor(32), options=CHANNEL_OPTIONS[:2])
        aggregator_pb2_grpc.add_AggregationQueueServicer_to_server(queue, server)
        address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        server.start()
        self._servers.append(server)
        workers = [
            spawn(
                f"{prefix}-{i}",
                "fedsilo_services.aggregator",
                {
                    **self.common,
                    "FEDSILO_SCHEDULER_ADDRESS": address,
                    "FEDSILO_MODELSTORE_ADDRESS": self.modelstore.grpc_address,
                    "FEDSILO_WORKER_ID": f"{prefix}-{i}",
                    "FEDSILO_DIRECT_STORAGE": "true",
                    "FEDSILO_POLL_S": "0.5",
                    "FEDSILO_THREADS": "1",
                    "OPENBLAS_NUM_THREADS": "1",
                    "OMP_NUM_THREADS": "1",
                },
                self.root / "run",
            )
            for i in range(count)
        ]
        for worker in workers:
            worker.wait_ready(60)
        return Replicas(queue, workers)

    def result(self, digests: list[str]) -> np.ndarray:
        return np.concatenate([np.frombuffer(self.blobs.get(d), "<f4") for d in digests])

    def close(self) -> None:
        for process in [self.modelstore]:
            process.process.terminate()
            process.process.wait(30)
        for server in self._servers:
            server.stop(0)


@dataclass
class Replicas:
    queue: BenchQueue
    workers: list[ServiceProcess]

    def reduce(self, template: aggregator_pb2.Shard, parameters: int, width: int) -> list[str]:
        self.queue.start_round(template, parameters, width)
        return [shard.weights for shard in self.queue.wait_done(timeout_s=900)]


def stop(workers: list[ServiceProcess]) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.terminate()
    for worker in workers:
        worker.process.wait(30)


def write_round(
    bench: Bench, clients: int, parameters: int
) -> tuple[aggregator_pb2.Shard, np.ndarray]:
    """Synthetic updates of `parameters` float32 each, their counts, and the zero base model;
    returns the shard template and the expected new weights (computed in float64)."""
    rng = np.random.default_rng(1)
    counts = rng.integers(50, 500, clients)
    expected = np.zeros(parameters, np.float64)
    inputs = []
    for i in range(clients):
        update = rng.standard_normal(parameters, dtype=np.float32)
        expected += update * (counts[i] / counts.sum())
        ref = bench.blobs.put(update.tobytes())
        inputs.append(
            aggregator_pb2.ShardInput(
                client_id=f"site-{i}", digest=ref.digest, num_examples=int(counts[i])
            )
        )
        del update
    base = bench.blobs.put(np.zeros(parameters, "<f4").tobytes()).digest
    template = aggregator_pb2.Shard(
        job_id="bench",
        round=1,
        base_digest=base,
        inputs=inputs,
        algorithm_json=json.dumps({"name": "fedavg"}),
    )
    return template, expected


def replica_scaling(
    clients: int, parameters: int, width: int, counts: list[int], runs: int, where: str | None
) -> dict[str, object]:
    """Every replica count's processes run side by side, each set on its own queue (idle
    replicas only long-poll), and the rounds alternate between the sets, run after run: the
    machine's drift touches every count alike."""
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(dir=where) as scratch:
        bench = Bench(Path(scratch))
        sets: dict[int, Replicas] = {}
        try:
            written = time.perf_counter()
            template, expected = write_round(bench, clients, parameters)
            print(
                f"  wrote {clients} updates of {parameters:,} float32 in "
                f"{time.perf_counter() - written:.1f}s"
            )
            for count in counts:
                sets[count] = bench.replicas(count, f"{count}x-aggregator", lease_s=30.0)
            times: dict[int, list[float]] = {count: [] for count in counts}
            digests: dict[int, list[str]] = {}
            for _ in range(runs):
                for count, replicas in sets.items():
                    start = time.perf_counter()
                    digests[count] = replicas.reduce(template, parameters, width)
                    times[count].append(time.perf_counter() - start)
            reference = bench.result(digests[counts[0]])
            np.testing.assert_allclose(reference, expected, rtol=0, atol=1e-4)
            for count in counts:
                exact = bool(np.array_equal(bench.result(digests[count]), reference))
                results[str(count)] = {
                    "median_s": statistics.median(times[count]),
                    "runs_s": times[count],
                    "exact": exact,
                }
                print(
                    f"  {count} replica(s): median {statistics.median(times[count]):.2f}s "
                    f"(runs {', '.join(f'{t:.2f}' for t in times[count])}), "
                    f"bit-identical to {counts[0]} replica(s): {exact}"
                )
        finally:
            for replicas in sets.values():
                stop(replicas.workers)
        try:
            results["killed_replica_exact"] = kill_one(
                bench, template, parameters, width, reference
            )
        finally:
            bench.close()
    return results


def kill_one(
    bench: Bench,
    template: aggregator_pb2.Shard,
    parameters: int,
    width: int,
    reference: np.ndarray,
) -> bool:
    """Two replicas; SIGKILL one as soon as it holds a lease; the other finishes the round
    after the lease runs out. The result must be bit-identical."""
    replicas = bench.replicas(2, "kill-aggregator", lease_s=3.0)
    victim, queue = replicas.workers[0], replicas.queue
    name = "kill-aggregator-0"
    try:
        queue.start_round(template, parameters, width)
        deadline = time.monotonic() + 60
        while not any(worker == name for worker, _ in queue.leases):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} never leased a shard")
            time.sleep(0.01)
        os.killpg(victim.process.pid, signal.SIGKILL)
        victim.process.wait()
        shards = queue.wait_done(timeout_s=900)
        releases = [s for w, s in queue.leases if w == name]
        again = [s for w, s in queue.leases if w != name and s in releases]
        exact = bool(np.array_equal(bench.result([s.weights for s in shards]), reference))
        print(
            f"  killed {name} holding {releases[-1]}; re-leased to the survivor: "
            f"{bool(again)}; result bit-identical: {exact}"
        )
        return exact and bool(again)
    finally:
        stop(replicas.workers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="rounds per replica count")
    parser.add_argument("--fold-runs", type=int, default=21)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--fold-parameters", type=int, default=10_000_000)
    parser.add_argument("--parameters", type=int, default=100_000_000)
    parser.add_argument("--shard-parameters", type=int, default=4_000_000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--object-stores", nargs="+", choices=["memory", "disk"], default=["memory", "disk"]
    )
    args = parser.parse_args()
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")

    print(
        f"plaintext FedAvg fold, {args.clients} x {args.fold_parameters:,} float32, "
        f"median of {args.fold_runs}, interleaved with the reference:"
    )
    fold = throughput(args.clients, args.fold_parameters, args.fold_runs)
    print(
        f"  fedsilo fold, {fold['threads']} threads: {fold['fold_gb_s']:.2f} GB/s "
        f"({fold['fold_s'] * 1e3:.0f} ms); "
        f"numpy weights @ stacked {fold['reference_gb_s']:.2f} GB/s "
        f"({fold['reference_s'] * 1e3:.0f} ms); ratio {fold['ratio_to_reference']:.2f} "
        f"(target >= 0.7: {'PASS' if fold['ratio_to_reference'] >= 0.7 else 'FAIL'})"
    )
    print(
        f"  from the object store's files (page cache): {fold['fold_from_store_gb_s']:.2f} "
        f"GB/s, ratio {fold['store_ratio_to_reference']:.2f}"
    )
    print(
        f"  against the reference with numpy's default BLAS threads, timed on its own "
        f"({fold['reference_default_blas_threads_s'] * 1e3:.0f} ms): ratio "
        f"{fold['ratio_to_default_blas_reference']:.2f}, from the store "
        f"{fold['store_ratio_to_default_blas_reference']:.2f}"
    )

    stores = {
        # An object store that keeps up with the replicas, as a MinIO or S3 tier sized for the
        # aggregators does: the scaling measured is the aggregators' own.
        "memory": MEMORY_STORE if Path(MEMORY_STORE).is_dir() else None,
        # This machine's one virtual disk: once its dirty-page budget is spent, writes wait
        # for writeback (shard results are not fsynced, so they seldom do).
        "disk": os.environ.get("FEDSILO_BENCH_TMP"),
    }
    scaling: dict[str, object] = {}
    for store in args.object_stores:
        where = stores[store]
        if store == "memory" and where is None:
            print(f"  no {MEMORY_STORE} here: skipping the in-memory object store")
            continue
        print(
            f"replicas, {args.clients} x {args.parameters:,} float32 in shards of "
            f"{args.shard_parameters:,}, median of {args.runs}, object store {store} "
            f"({where or tempfile.gettempdir()}):"
        )
        result = replica_scaling(
            args.clients, args.parameters, args.shard_parameters, args.replicas, args.runs, where
        )
        one, two = result.get("1"), result.get("2")
        if isinstance(one, dict) and isinstance(two, dict):
            ratio = two["median_s"] / one["median_s"]
            result["two_over_one"] = ratio
            verdict = "PASS" if ratio <= 0.65 else "FAIL"
            print(f"  2 replicas / 1 replica = {ratio:.2f} (target <= 0.65: {verdict})")
        scaling[store] = result
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "aggregation.json"
    out.write_text(json.dumps({"machine": info, "fold": fold, "replicas": scaling}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
