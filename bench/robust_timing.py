"""Robust aggregation's cost: the coordinate-wise median and trimmed mean against weighted
FedAvg on the same 10 x 10M float32 updates, with the aggregator's own fold (in memory, one
thread per CPU and single-threaded), and what one of two replicas does (half the range).

Runs interleave the rules, run after run, and report medians: this machine's memory bandwidth
drifts. Writes `median_vs_fedavg_time_ratio` (and the rest) into bench/results/robust.json,
beside the attack campaign's `runs` (bench/robust_attacks.py).

    make bench-robust-timing ARGS='--runs 5 --parameters 10000000 --clients 10'
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from aggregation import MemorySource
from machine import machine
from timing import median_seconds

from fedsilo.aggregator.anomaly import shard_statistics
from fedsilo.aggregator.rules import aggregation_rule
from fedsilo.aggregator.worker import single_threaded_blas
from fedsilo.parallel import available_cpus
from fedsilo.v1 import aggregator_pb2

RESULTS = Path(__file__).parent / "results" / "robust.json"
RULES = {
    "weighted_mean": {},
    "median": {},
    "trimmed_mean": {"beta": 0.2},
}


def measure(clients: int, parameters: int, runs: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    stacked = rng.standard_normal((clients, parameters), dtype=np.float32)
    source = MemorySource({f"c{i}": stacked[i].tobytes() for i in range(clients)})
    inputs = [aggregator_pb2.ShardInput(client_id=f"c{i}", digest=f"c{i}") for i in range(clients)]
    weights = np.full(clients, 1 / clients)
    single_threaded_blas()
    cpus = available_cpus()

    def action(rule: str, end: int, threads: int) -> Any:
        combine = aggregation_rule(rule).combine
        return lambda: combine(source, inputs, weights, 0, end, threads, RULES[rule])

    cases = {
        (rule, span, threads): action(
            rule, parameters if span == "all" else parameters // 2, threads
        )
        for rule in RULES
        for span in ("all", "half")
        for threads in (1, cpus)
    }
    expected = np.median(stacked[:, :1000], axis=0)
    assert np.allclose(cases[("median", "all", 1)]()[:1000], expected, atol=1e-6)
    delta = cases[("weighted_mean", "all", cpus)]()
    times: dict[Any, list[float]] = {case: [] for case in cases}
    statistics_s = []
    for _ in range(runs):
        for case, run in cases.items():
            times[case].append(median_seconds(run, 1))
        statistics_s.append(
            median_seconds(lambda: shard_statistics(source, inputs, delta, 0, parameters, cpus), 1)
        )
    seconds = {case: statistics.median(values) for case, values in times.items()}
    out: dict[str, Any] = {
        "clients": clients,
        "parameters": parameters,
        "runs": runs,
        "threads": cpus,
        "seconds": {f"{r}/{s}/{t}-threads": v for (r, s, t), v in seconds.items()},
        "anomaly_statistics_s": statistics.median(statistics_s),
    }
    for rule in ("median", "trimmed_mean"):
        for threads in (1, cpus):
            out[f"{rule}_vs_fedavg_ratio_{threads}_threads"] = (
                seconds[(rule, "all", threads)] / seconds[("weighted_mean", "all", threads)]
            )
        out[f"{rule}_half_range_share"] = seconds[(rule, "half", 1)] / seconds[(rule, "all", 1)]
    out["fedavg_half_range_share"] = (
        seconds[("weighted_mean", "half", 1)] / seconds[("weighted_mean", "all", 1)]
    )
    out["median_vs_fedavg_time_ratio"] = out[f"median_vs_fedavg_ratio_{cpus}_threads"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--parameters", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    host = machine()
    print(f"machine: {host['cpu']}, {host['cores']} cores, Python {host['python']}")
    figures = measure(args.clients, args.parameters, args.runs)
    print(f"{args.clients} x {args.parameters:,} float32, medians of {args.runs} runs")
    for name, value in figures["seconds"].items():
        print(f"  {name:<34} {value:8.3f} s")
    print(f"  anomaly statistics pass            {figures['anomaly_statistics_s']:8.3f} s")
    for key in sorted(figures):
        if "ratio" in key or "share" in key:
            print(f"  {key:<44} {figures[key]:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    existing.update(
        timing=figures,
        median_vs_fedavg_time_ratio=figures["median_vs_fedavg_time_ratio"],
        machine=host,
    )
    RESULTS.write_text(json.dumps(existing, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
