"""Control plane at scale, on this machine: 1,000 simulated sites enrolled (one-time token,
CSR, certificate each) and heartbeating against one registry, 100 of them selected per round,
50 rounds of a tiny job through the real services (registry, keymanager, scheduler, model
store, 2 aggregator replicas), each its own process; the sites are one more process
(fedsilo.simulation: no torch, synthetic updates).

Reports enrollment time; heartbeats/s (the registry's counter) and whether any was dropped
(every beat a site sent must have been answered OK, and counted by the registry); round
latency (median of the job's history); and the resident memory (VmRSS) of the registry and
the scheduler, sampled every few seconds. Memory is flat when the peak RSS while the second
half of the rounds ran exceeds the peak while the first half ran by at most FLAT_MIB or
FLAT_FRACTION of it, whichever is larger. PASS: every round completed with every selected
site, no heartbeat dropped, every site enrolled, flat memory. Writes
bench/results/control_plane.json (with the samples).

    .venv/bin/python bench/control_plane.py [--clients 1000] [--per-round 100] [--rounds 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machine import machine
from rss import MIB, rss_bytes

from fedsilo.cli.api import ApiError
from fedsilo.cli.simulation import load_job, population_stats, start_population, stop_population
from fedsilo.cli.up import LocalControlPlane, start_control_plane

RESULTS = Path(__file__).parent / "results"
FLAT_MIB = 8.0
FLAT_FRACTION = 0.05
WATCHED = ("registry", "scheduler")
HEARTBEATS = "fedsilo_heartbeats_total"


def rss_mib(pid: int) -> float:
    """VmRSS of a process in MiB; 0 once it has exited."""
    return rss_bytes(pid) / MIB


def counter_value(metrics_url: str, name: str) -> float:
    """One unlabelled counter from a service's /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    return 0.0


@dataclass
class Sampler:
    """Every `interval_s`: the job's round, the RSS of the watched services and the registry's
    heartbeat counter, until stopped."""

    plane: LocalControlPlane
    job_id: str
    interval_s: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    state: str = "running"
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        api = self.plane.api()
        registry = self.plane.service("registry")
        while self.state == "running":
            try:
                job = next(j for j in api.list_jobs() if j["job_id"] == self.job_id)
                beats = counter_value(registry.metrics_url, HEARTBEATS)
            except (ApiError, OSError) as error:  # a slow answer under load: sample again
                self.errors.append(str(error))
                time.sleep(self.interval_s)
                continue
            self.state = job["state"]
            self.samples.append(
                {
                    "t": time.time(),
                    "round": job["round"],
                    "phase": job["phase"],
                    "heartbeats_total": beats,
                    **{
                        f"{name}_rss_mib": rss_mib(self.plane.service(name).pid) for name in WATCHED
                    },
                }
            )
            time.sleep(self.interval_s)


def flat_memory(samples: list[dict[str, Any]], name: str, rounds: int) -> dict[str, Any]:
    """Peak RSS while rounds 1..R/2 ran against rounds R/2+1..R."""
    half = rounds // 2
    first = [s[f"{name}_rss_mib"] for s in samples if 1 <= s["round"] <= half]
    second = [s[f"{name}_rss_mib"] for s in samples if s["round"] > half]
    if not first or len(second) < 2:
        return {"flat": False, "why": "too few samples; lower --sample-s"}
    growth = max(second) - max(first)
    bound = max(FLAT_MIB, FLAT_FRACTION * max(first))
    late = [s for s in samples if s["round"] > half]
    trend = statistics.linear_regression(
        [s["round"] for s in late], [s[f"{name}_rss_mib"] for s in late]
    )
    return {
        "start_mib": first[0],
        "end_mib": second[-1],
        "peak_first_half_mib": max(first),
        "peak_second_half_mib": max(second),
        "growth_mib": growth,
        "bound_mib": bound,
        "second_half_mib_per_round": trend.slope,  # reported, not judged: sampling is noisy
        "flat": growth <= bound,
    }


def round_latencies(status: dict[str, Any]) -> list[float]:
    """Training rounds (round 0 only draws the initial model), selection to evaluation."""
    return [
        row["duration_s"]
        for row in status["history"]
        if row["round"] >= 1 and row["duration_s"] is not None
    ]


def run(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    began = time.perf_counter()
    plane = start_control_plane(state_dir, aggregators=2)
    try:
        started = time.perf_counter()
        population = start_population(
            plane,
            args.clients,
            timeout_s=args.enroll_timeout_s,
            FEDSILO_ENROLL_CONCURRENCY=str(args.enroll_concurrency),
        )
        enrolled = population_stats(population)
        print(
            f"enrolled {enrolled['enrolled']} of {args.clients} sites in "
            f"{enrolled['enrollment_s']:.1f} s (process start included: "
            f"{time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        api = plane.api()
        job_id = api.submit_job(load_job(args.per_round, args.rounds))["job_id"]
        job_started = time.time()
        sampler = Sampler(plane, job_id, args.sample_s)
        watcher = threading.Thread(target=sampler.run, daemon=True)
        watcher.start()
        last_round = -1
        while watcher.is_alive():
            watcher.join(timeout=10)
            if sampler.samples and sampler.samples[-1]["round"] != last_round:
                last = sampler.samples[-1]
                last_round = last["round"]
                print(
                    f"  round {last_round:>3} {last['phase']:<12} "
                    + "  ".join(f"{n} {last[f'{n}_rss_mib']:.0f} MiB" for n in WATCHED),
                    flush=True,
                )
            if time.time() - job_started > args.timeout_s:
                api.cancel(job_id)
                break
        job_ended = time.time()
        status = api.job(job_id)
        stats = stop_population(population)
        # Every beat the population saw answered OK was counted by the registry (a beat cut
        # off by the population's stop may be counted there and not here).
        registry_beats = counter_value(plane.service("registry").metrics_url, HEARTBEATS)
    finally:
        plane.stop()
    samples = sampler.samples
    during = [s for s in samples if s["round"] >= 1]
    beats = (
        (during[-1]["heartbeats_total"] - during[0]["heartbeats_total"])
        / (during[-1]["t"] - during[0]["t"])
        if len(during) >= 2
        else 0.0
    )
    latencies = round_latencies(status)
    completed = status["state"] == "completed" and len(latencies) == args.rounds
    heartbeats = stats["heartbeats"]
    memory = {name: flat_memory(samples, name, args.rounds) for name in WATCHED}
    return {
        "clients": args.clients,
        "per_round": args.per_round,
        "rounds": args.rounds,
        "job_state": status["state"],
        "job_error": status["error"],
        "rounds_completed": len(latencies),
        "retried_rounds": sum(row["attempt"] > 0 for row in status["history"]),
        "enrollment_s": stats["enrollment_s"],
        "enrolled": stats["enrolled"],
        "job_s": job_ended - job_started,
        "total_s": time.perf_counter() - began,
        "heartbeats_per_s": beats,
        "heartbeats_expected_per_s": args.clients / stats["heartbeat_interval_s"],
        "heartbeats": heartbeats,
        "registry_heartbeats_total": registry_beats,
        "sampling_errors": sampler.errors,
        "round_latency_s": {
            "median": statistics.median(latencies) if latencies else None,
            "p90": statistics.quantiles(latencies, n=10)[-1] if len(latencies) >= 2 else None,
            "max": max(latencies) if latencies else None,
        },
        "phase_seconds_median": {
            phase: statistics.median(
                row["phase_seconds"].get(phase, 0.0)
                for row in status["history"]
                if row["round"] >= 1
            )
            for phase in ("selecting", "training", "aggregating", "evaluating")
        }
        if latencies
        else {},
        "memory": memory,
        "tasks": stats["tasks"],
        "failures": stats["failures"],
        "passed": completed
        and heartbeats["failed"] == 0
        and registry_beats >= heartbeats["ok"]
        and stats["enrolled"] == args.clients
        and all(m["flat"] for m in memory.values()),
        "samples": samples,
    }


def report(result: dict[str, Any]) -> None:
    latency = result["round_latency_s"]
    beats = result["heartbeats"]
    print(
        f"\n{result['clients']} sites, {result['per_round']} per round, "
        f"{result['rounds_completed']}/{result['rounds']} rounds "
        f"(job {result['job_state']}{': ' + result['job_error'] if result['job_error'] else ''}"
        f", {result['retried_rounds']} retried)"
    )
    print(
        f"  enrollment          {result['enrollment_s']:.1f} s "
        f"({result['enrolled'] / max(result['enrollment_s'], 1e-9):.0f} sites/s)"
    )
    print(
        f"  heartbeats          {result['heartbeats_per_s']:.0f}/s during the job "
        f"(expected {result['heartbeats_expected_per_s']:.0f}/s); {beats['sent']} sent, "
        f"{beats['failed']} failed, {result['registry_heartbeats_total']:.0f} counted by the "
        f"registry; latency median {1000 * beats['latency_s']['median']:.1f} ms, "
        f"p99 {1000 * beats['latency_s']['p99']:.1f} ms"
    )
    if latency["median"] is not None:
        print(
            f"  round latency       median {latency['median']:.2f} s, "
            f"p90 {latency['p90'] or latency['median']:.2f} s, max {latency['max']:.2f} s; "
            "median by phase "
            + ", ".join(f"{k} {v:.2f} s" for k, v in result["phase_seconds_median"].items())
        )
    for name, memory in result["memory"].items():
        if "growth_mib" not in memory:
            print(f"  {name:<19} {memory['why']}")
            continue
        print(
            f"  {name:<19} RSS {memory['start_mib']:.0f} -> {memory['end_mib']:.0f} MiB; peak "
            f"{memory['peak_first_half_mib']:.0f} MiB (first half) -> "
            f"{memory['peak_second_half_mib']:.0f} MiB (second half): "
            f"{memory['growth_mib']:+.1f} MiB, bound {memory['bound_mib']:.1f} MiB: "
            f"{'flat' if memory['flat'] else 'GROWS'} "
            f"(second-half trend {memory['second_half_mib_per_round']:+.2f} MiB/round)"
        )
    print(f"  job {result['job_s']:.0f} s, total {result['total_s']:.0f} s")
    if result["failures"]:
        print(f"  failures: {result['failures']}")
    print(f"\n{'PASS' if result['passed'] else 'FAIL'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--sample-s", type=float, default=2.0, help="RSS sampling interval")
    parser.add_argument("--enroll-concurrency", type=int, default=16)
    parser.add_argument("--enroll-timeout-s", type=float, default=900.0)
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="the job's, at most")
    parser.add_argument("--state-dir", type=Path, default=None, help="default: a temporary one")
    parser.add_argument("--out", type=Path, default=RESULTS / "control_plane.json")
    args = parser.parse_args()
    if not 1 <= args.per_round <= args.clients:
        parser.error("--per-round must be between 1 and --clients")
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fedsilo-control-plane-") as scratch:
        result = run(args, args.state_dir or Path(scratch))
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, **result}, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
