"""Secure aggregation at 10M parameters, on this machine: a client's masking, the aggregator's
unmasking of 100 clients at 30% dropouts, and the bytes a masked upload takes per parameter.

One SecAgg+ round through fedsilo.secagg's own state machines: 100 clients advertise keys and
share their secrets over the neighbour graph of recommended_degree(100) = 20; 30 clients,
drawn at random, drop out after sharing (the costly case: their pairwise masks with surviving
neighbours dangle); the 70 survivors send masked inputs and reveal shares; the server
reconstructs the self seeds and dangling pair seeds.

- client masking: quantize a 10M float32 update into the ring (stochastic rounding) and
  ClientRound.masked_input: self mask, plus or minus one pairwise mask per neighbour. On one
  thread, and on ClientRound's default of one thread per core (both figures printed).
- server unmasking: what an aggregator replica does with a shard (worker._unmasked_sum):
  ring-sum the survivors' masked inputs, ServerRound.unmask (remove every survivor's self
  mask and every dangling pair mask), dequantize_sum. Once in one process for all
  coordinates, once as 2 coordinate shards in 2 processes (2 replicas).
- upload: the masked input serialized as the client agent uploads it (little-endian uint32).

References, measured in the same run: the keystream rate of ChaCha20, AES-256-CTR and
AES-256-GCM through `cryptography`'s update_into into a reused buffer, and numpy's uint32
add rate. From them a floor: the masks' keystream bytes at the PRG's rate. Medians of --runs
(wall clock; process CPU time next to it, since a busy machine inflates the wall clock).
Writes bench/results/secagg.json.

    .venv/bin/python bench/secagg.py [--params 10000000] [--clients 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from machine import machine
from numpy.typing import NDArray
from timing import timed

from fedsilo.parallel import available_cpus
from fedsilo.secagg import (
    ClientRound,
    RingSpec,
    RoundConfig,
    SealedShare,
    ServerRound,
    Unmasking,
    dequantize_sum,
    expand_mask,
    neighbours,
    quantize,
    recommended_degree,
    recommended_threshold,
    ring_add_into,
    share_holders,
)
from fedsilo.secagg.masking import CHUNK_COORDINATES

RESULTS = Path(__file__).parent / "results"

# The targets.
TARGET_MASK_S = 0.150
TARGET_UNMASK_S = 4.0
TARGET_BYTES_PER_PARAMETER = 4.0

JOB = "bench-secagg"
CLIP = 0.05

# The survivors' masked inputs, set before the shard pool forks so that its processes read
# them without copying (as replicas read them from storage).
_MASKED: list[NDArray[np.uint32]] = []


def keystream_rates(total_bytes: int, runs: int) -> dict[str, float]:
    """Bytes per second of each cipher's keystream, update_into a reused cache-sized buffer."""
    key, chunk = bytes(range(32)), 4 * CHUNK_COORDINATES
    zeros, buffer = bytes(chunk), bytearray(chunk)
    ciphers: dict[str, Callable[[], CipherContext]] = {
        "ChaCha20": lambda: Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor(),
        "AES-256-CTR": lambda: Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor(),
        "AES-256-GCM": lambda: Cipher(algorithms.AES(key), modes.GCM(bytes(12))).encryptor(),
    }
    rates = {}
    for name, make in ciphers.items():

        def generate(make: Callable[[], CipherContext] = make) -> None:
            encryptor = make()
            for _ in range(total_bytes // chunk):
                encryptor.update_into(zeros, buffer)

        rates[name] = (total_bytes // chunk) * chunk / timed(generate, runs).cpu_s
    out = np.empty(total_bytes // 4, np.uint32)
    rates["fedsilo expand_mask"] = (
        total_bytes / timed(lambda: expand_mask(key, 0, len(out), out=out), runs).cpu_s
    )
    return rates


def add_rates(params: int, runs: int) -> dict[str, float]:
    """numpy uint32 in-place add: bytes of one operand per second, whole vectors (main
    memory) and chunk by chunk as masking does it (cache)."""
    total, other = np.ones(params, np.uint32), np.ones(params, np.uint32)
    chunk_total, chunk_other = total[:CHUNK_COORDINATES], other[:CHUNK_COORDINATES]
    repeats = max(1, params // CHUNK_COORDINATES)
    whole = timed(lambda: np.add(total, other, out=total), runs).cpu_s
    chunked = timed(
        lambda: [np.add(chunk_total, chunk_other, out=chunk_total) for _ in range(repeats)], runs
    ).cpu_s
    return {
        "whole vectors": 4 * params / whole,
        "cache-sized chunks": 4 * repeats * len(chunk_total) / chunked,
    }


def recoverable_dropouts(
    client_ids: list[str], config: RoundConfig, count: int, rng: np.random.Generator
) -> list[str]:
    """`count` clients drawn at random such that every client keeps `threshold` surviving
    share holders; with fewer the round aborts, and there is nothing to unmask."""
    graph = neighbours(client_ids, config.degree, config.graph_seed)
    while True:
        dropped = set(rng.choice(client_ids, size=count, replace=False).tolist())
        if all(
            sum(holder not in dropped for holder in share_holders(graph, client))
            >= config.threshold
            for client in client_ids
        ):
            return sorted(dropped)


def unmask_shard(begin: int, end: int, unmasking: Unmasking, spec: RingSpec) -> NDArray[Any]:
    """What worker._unmasked_sum does for one shard, on the inputs in _MASKED."""
    total = np.zeros(end - begin, dtype=np.uint32)
    for masked in _MASKED:
        ring_add_into(total, masked[begin:end])
    plain = ServerRound.unmask(total, begin, unmasking)
    return dequantize_sum(plain, spec, len(_MASKED))


def _unmask_shard_task(args: tuple[int, int, Unmasking, RingSpec]) -> NDArray[Any]:
    return unmask_shard(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    params, n = args.params, args.clients
    rng = np.random.default_rng(args.seed)

    print(f"\nreferences, median CPU time of {args.runs} runs:")
    prg = keystream_rates(4 * params, args.runs)
    adds = add_rates(params, args.runs)
    for name, rate in prg.items():
        print(f"  keystream {name:<22} {rate / 1e9:6.2f} GB/s   x{rate / prg['ChaCha20']:.2f}")
    for name, rate in adds.items():
        print(f"  numpy uint32 add, {name:<19} {rate / 1e9:6.2f} GB/s")

    # One round of the protocol.
    degree = recommended_degree(n)
    config = RoundConfig(JOB, 1, degree, recommended_threshold(degree), rng.bytes(32))
    spec = RingSpec(clip=CLIP, num_clients=n)
    clients = [ClientRound(f"site-{i:03d}", config) for i in range(n)]
    advertised = [client.advertise() for client in clients]
    server = ServerRound(config, advertised)
    sealed: list[SealedShare] = []
    for client in clients:
        sealed += client.share(advertised)
    shared = [client.client_id for client in clients]
    dropped = recoverable_dropouts(shared, config, round(args.dropout * n), rng)
    survivors = [client for client in clients if client.client_id not in dropped]
    alive = [client.client_id for client in survivors]

    def update() -> NDArray[np.float32]:
        return (rng.standard_normal(params, dtype=np.float32) * np.float32(CLIP / 4)).clip(
            -CLIP, CLIP
        )

    # Client masking, on the first survivor.
    client, values = survivors[0], update()
    quantize_s = timed(lambda: quantize(values, spec, rng), args.runs)
    quantized = quantize(values, spec, rng)
    # One thread, then ClientRound's default: one thread per core of this machine.
    client.threads = 1
    mask_only_1t = timed(lambda: client.masked_input(quantized, shared), args.runs)
    mask_1t = timed(lambda: client.masked_input(quantize(values, spec, rng), shared), args.runs)
    client.threads = None
    mask_only_s = timed(lambda: client.masked_input(quantized, shared), args.runs)
    mask_s = timed(lambda: client.masked_input(quantize(values, spec, rng), shared), args.runs)
    upload = client.masked_input(quantized, shared).astype("<u4").tobytes()
    bytes_per_parameter = len(upload) / params

    # The survivors' masked inputs, and the sum they must unmask to.
    expected = np.zeros(params, np.uint32)
    _MASKED.clear()
    for survivor in survivors:
        survivor_quantized = quantize(update(), spec, rng)
        ring_add_into(expected, survivor_quantized)
        _MASKED.append(survivor.masked_input(survivor_quantized, shared))
    reveals = []
    for survivor in survivors:
        mine = [s for s in sealed if s.holder == survivor.client_id]
        reveals += survivor.reveal(mine, alive, dropped)
    start = time.perf_counter()
    unmasking = server.reconstruct(shared, alive, reveals)
    reconstruct_s = time.perf_counter() - start
    expansions = len(unmasking.self_seeds) + len(unmasking.dangling_pairs)

    def check(result: NDArray[Any]) -> None:
        np.testing.assert_array_equal(result, dequantize_sum(expected, spec, len(alive)))

    check(unmask_shard(0, params, unmasking, spec))
    unmask_1p = timed(lambda: unmask_shard(0, params, unmasking, spec), args.runs)
    middle = params // 2
    shards = [(0, middle, unmasking, spec), (middle, params, unmasking, spec)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        check(np.concatenate(pool.map(_unmask_shard_task, shards)))
        unmask_2p = timed(lambda: pool.map(_unmask_shard_task, shards), args.runs)

    # Floors: the masks' keystream at the PRG's engine rate (AES-256-GCM), plus their adds.
    engine, add_rate = prg["AES-256-GCM"], adds["cache-sized chunks"]
    mask_floor_s = (degree + 1) * 4 * params * (1 / engine + 1 / add_rate)
    unmask_floor_s = expansions * 4 * params * (1 / engine + 1 / add_rate)

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    print(
        f"\nround: {n} clients, degree {degree}, threshold {config.threshold}, "
        f"{len(dropped)} dropped after sharing; {params:,} parameters; medians of {args.runs}"
    )
    cores = available_cpus()
    print("client masking (quantize + self mask + pairwise masks):")
    print(
        f"  quantize                {quantize_s.wall_s:7.3f} s wall  {quantize_s.cpu_s:7.3f} s CPU"
    )
    print(
        f"  masked_input, 1 thread  {mask_only_1t.wall_s:7.3f} s wall  "
        f"{mask_only_1t.cpu_s:7.3f} s CPU   floor {mask_floor_s:.3f} s "
        f"(x{mask_only_1t.cpu_s / mask_floor_s:.2f} CPU)"
    )
    print(
        f"  masked_input, {cores} threads {mask_only_s.wall_s:7.3f} s wall  "
        f"{mask_only_s.cpu_s:7.3f} s CPU"
    )
    print(
        f"  both, 1 thread          {mask_1t.wall_s:7.3f} s wall  {mask_1t.cpu_s:7.3f} s CPU"
        f"{'':24}target < {TARGET_MASK_S} s: {verdict(mask_1t.wall_s < TARGET_MASK_S)}"
    )
    print(
        f"  both, {cores} threads (default) {mask_s.wall_s:5.3f} s wall"
        f"{'':38}target < {TARGET_MASK_S} s: {verdict(mask_s.wall_s < TARGET_MASK_S)}"
    )
    print(
        f"server unmasking of {len(alive)} inputs: {len(unmasking.self_seeds)} self masks + "
        f"{len(unmasking.dangling_pairs)} dangling pair masks = {expansions} expansions "
        f"({expansions * 4 * params / 1e9:.1f} GB of keystream); seeds reconstructed by the "
        f"scheduler in {reconstruct_s:.3f} s"
    )
    print(
        f"  1 process           {unmask_1p.wall_s:8.3f} s wall  {unmask_1p.cpu_s:8.3f} s CPU   "
        f"floor {unmask_floor_s:.3f} s (x{unmask_1p.cpu_s / unmask_floor_s:.2f} CPU)   "
        f"target < {TARGET_UNMASK_S} s: {verdict(unmask_1p.wall_s < TARGET_UNMASK_S)}"
    )
    print(
        f"  2 shards, 2 processes {unmask_2p.wall_s:6.3f} s wall"
        f"{'':28}target < {TARGET_UNMASK_S} s: {verdict(unmask_2p.wall_s < TARGET_UNMASK_S)}"
    )
    print(
        f"masked upload: {len(upload):,} bytes = {bytes_per_parameter:.2f} bytes per parameter   "
        f"target <= {TARGET_BYTES_PER_PARAMETER}: "
        f"{verdict(bytes_per_parameter <= TARGET_BYTES_PER_PARAMETER)}"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "secagg.json").write_text(
        json.dumps(
            {
                "machine": info,
                "load_average_at_start": os.getloadavg()[0],
                "params": params,
                "clients": n,
                "degree": degree,
                "dropped": len(dropped),
                "runs": args.runs,
                "keystream_bytes_per_second": prg,
                "keystream_speedup_vs_chacha20": {
                    name: rate / prg["ChaCha20"] for name, rate in prg.items()
                },
                "numpy_uint32_add_bytes_per_second": adds,
                "client": {
                    "quantize": quantize_s.__dict__,
                    "masked_input_1_thread": mask_only_1t.__dict__,
                    "masking_1_thread": mask_1t.__dict__,
                    "threads": cores,
                    "masked_input_threads": mask_only_s.__dict__,
                    "masking_threads": mask_s.__dict__,
                    "floor_1_thread_s": mask_floor_s,
                    "target_s": TARGET_MASK_S,
                    "pass_1_thread": mask_1t.wall_s < TARGET_MASK_S,
                    "pass_threads": mask_s.wall_s < TARGET_MASK_S,
                },
                "server": {
                    "self_masks": len(unmasking.self_seeds),
                    "dangling_pairs": len(unmasking.dangling_pairs),
                    "reconstruct_s": reconstruct_s,
                    "unmask_1_process": unmask_1p.__dict__,
                    "unmask_2_shards_2_processes": {"wall_s": unmask_2p.wall_s},
                    "floor_s": unmask_floor_s,
                    "target_s": TARGET_UNMASK_S,
                    "pass_1_process": unmask_1p.wall_s < TARGET_UNMASK_S,
                    "pass_2_processes": unmask_2p.wall_s < TARGET_UNMASK_S,
                },
                "upload": {
                    "bytes": len(upload),
                    "bytes_per_parameter": bytes_per_parameter,
                    "target": TARGET_BYTES_PER_PARAMETER,
                    "pass": bytes_per_parameter <= TARGET_BYTES_PER_PARAMETER,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
