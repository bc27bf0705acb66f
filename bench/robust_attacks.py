"""The attack campaign: the heart-disease federation's four hospitals and a fifth site that
attacks (bench/adversary.py, the platform's own agent with its update tampered with), for
every aggregation rule, through the real services.

One control plane and five client processes serve the whole campaign. For each attack
(sign flip x4, scaling x100, label flipping, Gaussian noise of 10x the update's norm, "a
little is enough") and for the clean run (the fifth site honest, on a copy of the largest
hospital's data), each rule trains the reference job with every site in every round. The
final model is scored on the union of the four hospitals' test sets (AUC); the attacker's
rank is its place among the five sites by their mean anomaly score over the job's rounds (1:
the highest), with the share of rounds it ranked first; the aggregation time is the median
AGGREGATING phase of the rounds.

Writes `runs` into bench/results/robust.json: a list of {federation, attack, rule, clean,
attacked, drop, attacker_rank, ...}; bench/robust_timing.py writes the same file's timing.

    make bench-robust ARGS='--rounds 10 --attacks sign_flip scaling --rules median krum'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from adversary import ATTACKS
from machine import machine

from fedsilo.cli.api import OperatorApi
from fedsilo.cli.baselines import federated_scores
from fedsilo.cli.console import watch_job
from fedsilo.cli.federation import find_data_dir, start_sites, wait_for_sites
from fedsilo.federations import FEDERATIONS, Federation
from fedsilo.jobs import JobSpec, parse_job_spec

RESULTS = Path(__file__).parent / "results" / "robust.json"
ATTACKER = "mallory"
RULES: dict[str, dict[str, Any]] = {
    "weighted_mean": {"rule": "weighted_mean"},
    "median": {"rule": "median"},
    "trimmed_mean": {"rule": "trimmed_mean", "beta": 0.2},
    "krum": {"rule": "krum", "f": 1, "m": 3},
    "centered_clipping": {"rule": "centered_clipping", "tau": "median"},
    "norm_bounded_mean": {"rule": "norm_bounded_mean"},
}


def campaign_job(
    federation: Federation, rule: dict[str, Any], rounds: int, seed: int, learning_rate: float
) -> JobSpec:
    """The federation's reference job with plain FedAvg's server step (the rule is the only
    difference between runs), every site in every round."""
    sites = len(federation.sites) + 1
    return parse_job_spec(
        {
            **json.loads(federation.job("fedavg", seed).to_json()),
            "name": f"{federation.name}-{rule['rule']}",
            "rounds": rounds,
            "learning_rate": learning_rate,
            "clients_per_round": sites,
            "min_clients": sites,
            "aggregation": rule,
        }
    )


def attacker_ranks(status: dict[str, Any]) -> dict[str, Any]:
    """The attacker's rank among the sites by anomaly score (1: the highest): by the mean
    score over the job's scored rounds (`attacker_rank`), and round by round."""
    rounds = [
        {site: s["score"] for site, s in row["anomaly"].items()}
        for row in status["history"]
        if ATTACKER in row.get("anomaly", {})
    ]
    if not rounds:
        return {"attacker_rank": None, "round_ranks": [], "scores": {}}
    sites = sorted(rounds[0])
    mean = {site: statistics.fmean(r.get(site, 0.0) for r in rounds) for site in sites}

    def rank(scores: dict[str, float]) -> int:
        return sorted(scores, key=scores.__getitem__, reverse=True).index(ATTACKER) + 1

    return {
        "attacker_rank": rank(mean),
        "round_ranks": [rank(r) for r in rounds],
        "scores": mean,
    }


def run_job(
    api: OperatorApi, federation: Federation, data_dir: Path, spec: JobSpec
) -> dict[str, Any]:
    started = time.perf_counter()
    job_id = api.submit_job(json.loads(spec.to_json()))["job_id"]
    status = watch_job(api, job_id, quiet=True)
    if status["state"] != "completed":
        raise RuntimeError(f"job {job_id} ({spec.name}) ended {status['state']}: {status['error']}")
    weights = np.frombuffer(api.model_weights(job_id), dtype="<f4").copy()
    union = federated_scores(federation, data_dir, spec, weights)["union_test_metrics"]
    ranks = attacker_ranks(status)
    honest = [v for site, v in ranks["scores"].items() if site != ATTACKER]
    aggregating = [
        row["phase_seconds"].get("AGGREGATING")
        for row in status["history"]
        if row["phase_seconds"].get("AGGREGATING") is not None
    ]
    return {
        "metric": status["metric"],
        "value": union[status["metric"]],
        "attacker_rank": ranks["attacker_rank"],
        "rounds_attacker_first": (
            sum(r == 1 for r in ranks["round_ranks"]) / len(ranks["round_ranks"])
            if ranks["round_ranks"]
            else None
        ),
        "round_ranks": ranks["round_ranks"],
        "attacker_score": ranks["scores"].get(ATTACKER),
        "highest_honest_score": max(honest) if honest else None,
        "aggregating_s": statistics.median(aggregating) if aggregating else None,
        "wall_s": time.perf_counter() - started,
    }


def start_campaign(federation: Federation, data_dir: Path, work: Path, attack_file: Path) -> Any:
    """The federation's sites plus the attacker, on a copy of the first site's data."""
    plane = start_sites(work / "state", data_dir, federation, aggregators=2)
    try:
        sites_dir = work / "state" / "sites"
        peers = [str(sites_dir / f"{site}.yaml") for site in federation.sites]
        config = federation.site_config(federation.sites[0], data_dir)
        config = config.model_copy(update={"site": ATTACKER})
        config_path = sites_dir / f"{ATTACKER}.yaml"
        config.write(config_path)
        attack_file.write_text(json.dumps({"attack": "none"}))
        bench = str(Path(__file__).parent)
        plane.start_client(
            ATTACKER,
            config_path,
            module="adversary",
            PYTHONPATH=os.pathsep.join(filter(None, [bench, os.environ.get("PYTHONPATH")])),
            FEDSILO_BENCH_ATTACK_FILE=str(attack_file),
            FEDSILO_BENCH_PEERS=",".join(peers),
        )
        plane.wait_ready()
        wait_for_sites(plane.api(), len(federation.sites) + 1)
    except BaseException:
        plane.stop()
        raise
    return plane


def campaign(args: argparse.Namespace) -> list[dict[str, Any]]:
    federation = FEDERATIONS["heart"]
    data_dir = find_data_dir(None, federation)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fedsilo-robust-") as folder:
        work = Path(folder)
        attack_file = work / "attack.json"
        plane = start_campaign(federation, data_dir, work, attack_file)
        try:
            api = plane.api()
            clean: dict[str, dict[str, Any]] = {}
            for attack in ("none", *args.attacks):
                attack_file.write_text(json.dumps({"attack": attack}))
                for name in args.rules:
                    spec = campaign_job(
                        federation, RULES[name], args.rounds, args.seed, args.learning_rate
                    )
                    result = run_job(api, federation, data_dir, spec)
                    if attack == "none":
                        clean[name] = result
                        print(
                            f"clean     {name:<18} {result['metric']} {result['value']:.3f}  "
                            f"({result['wall_s']:.0f} s)",
                            flush=True,
                        )
                        continue
                    runs.append(
                        {
                            "federation": federation.name,
                            "attack": attack,
                            "rule": name,
                            "metric": result["metric"],
                            "clean": clean[name]["value"],
                            "attacked": result["value"],
                            "drop": clean[name]["value"] - result["value"],
                            "attacker_rank": result["attacker_rank"],
                            "rounds_attacker_first": result["rounds_attacker_first"],
                            "round_ranks": result["round_ranks"],
                            "attacker_score": result["attacker_score"],
                            "highest_honest_score": result["highest_honest_score"],
                            "aggregating_s": result["aggregating_s"],
                            "clean_aggregating_s": clean[name]["aggregating_s"],
                            "sites": len(federation.sites) + 1,
                            "rounds": args.rounds,
                            "learning_rate": args.learning_rate,
                            "seed": args.seed,
                        }
                    )
                    row = runs[-1]
                    print(
                        f"{attack:<9} {name:<18} clean {row['clean']:.3f} attacked "
                        f"{row['attacked']:.3f} drop {row['drop']:+.3f} attacker rank "
                        f"{row['attacker_rank']} (first in {row['rounds_attacker_first']:.0%} "
                        f"of rounds) mean score {row['attacker_score']:.2f} vs "
                        f"{row['highest_honest_score']:.2f}  ({result['wall_s']:.0f} s)",
                        flush=True,
                    )
        finally:
            plane.stop()
    return runs


def table(runs: list[dict[str, Any]]) -> str:
    """The README's table: attacked AUC (clean in the header) and the attacker's rank."""
    rules = list(dict.fromkeys(run["rule"] for run in runs))
    clean = {run["rule"]: run["clean"] for run in runs}
    header = "| attack | " + " | ".join(f"{r} (clean {clean[r]:.3f})" for r in rules) + " |"
    lines = [header, "|---" * (len(rules) + 1) + "|"]
    for attack in dict.fromkeys(run["attack"] for run in runs):
        cells = {run["rule"]: run for run in runs if run["attack"] == attack}
        lines.append(
            f"| {attack} | "
            + " | ".join(
                f"{cells[r]['attacked']:.3f} (rank {cells[r]['attacker_rank']})" for r in rules
            )
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument(
        "--attacks", nargs="+", default=[a for a in ATTACKS if a != "none"], choices=ATTACKS[1:]
    )
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    args = parser.parse_args()
    host = machine()
    print(f"machine: {host['cpu']}, {host['cores']} cores, Python {host['python']}")
    started = time.perf_counter()
    runs = campaign(args)
    print(table(runs))
    print(f"campaign: {time.perf_counter() - started:.0f} s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    existing.update(runs=runs, runs_machine=host, runs_at=datetime.now(UTC).isoformat())
    RESULTS.write_text(json.dumps(existing, indent=2))
    print(f"wrote {RESULTS}")
    if not runs:
        sys.exit("no runs")


if __name__ == "__main__":
    main()
