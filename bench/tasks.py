"""Every task through the real services: the reference federations for multiclass (digits,
macro F1), regression (diabetes, R²), survival (GBSG2, Cox, C-index) and binary (heart, AUC),
each over several seeds, against the pooled and local-only baselines trained with the same job.

Each run starts the control plane and one client process per site (fedsilo.cli.federation
.run_federation), trains the federation's reference job (protection "none" by default) and
scores the final model on the union of the sites' test sets, as the baselines are scored
(fedsilo.cli.baselines). Prints the medians over seeds and writes bench/results/tasks.json: a
list with one entry per federation, {task, dataset, metric, federated, pooled, local, gap, ...}.

    make bench-tasks ARGS='--federations digits heart --seeds 5 --protection secagg'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machine import machine

from fedsilo.cli.baselines import compute_baselines, federated_scores
from fedsilo.cli.demo import job_spec
from fedsilo.cli.federation import find_data_dir, run_federation
from fedsilo.federations import FEDERATIONS, Federation
from fedsilo.jobs import JobSpec

RESULTS = Path(__file__).parent / "results"
# The order of the table, and the primary metric each federation's job names.
ORDER = ("digits", "diabetes", "gbsg2", "heart")
EXPECTED_METRIC = {"digits": "macro_f1", "diabetes": "r2", "gbsg2": "c_index", "heart": "auc"}


def median(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return statistics.median(defined) if defined else None


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class RunFailed(RuntimeError):
    pass


def one_run(
    federation: Federation, data_dir: Path, spec: JobSpec, work: Path, aggregators: int
) -> dict[str, Any]:
    """The federated job, its baselines and the three union-of-test-sets figures for one seed."""
    started = time.perf_counter()
    baselines = compute_baselines(federation, data_dir, spec)
    baseline_s = time.perf_counter() - started
    run = run_federation(data_dir, spec, work, federation, aggregators=aggregators, quiet=True)
    status = run["status"]
    failed = [p["service"] for p in run["processes"] if p["exit_code"] != 0]
    if status["state"] != "completed" or run["weights"] is None:
        raise RunFailed(
            f"{federation.name} seed {spec.seed}: job {status['job_id']} {status['state']}: "
            f"{status.get('error')} (state in {run['state_dir']})"
        )
    metric = str(status["metric"])
    union = federated_scores(federation, data_dir, spec, run["weights"])
    history = [h for h in status["history"] if h["round"] > 0]
    last = history[-1] if history else {}
    return {
        "seed": spec.seed,
        "metric": metric,
        "task": baselines["pooled"]["task"],
        "federated": union["union_test_metrics"].get(metric),
        "pooled": baselines["pooled"]["union_test_metrics"].get(metric),
        "local": baselines["local"]["union_test_metrics"].get(metric),
        # The example-weighted mean over the sites, as the sites reported it / scored here.
        "federated_weighted": last.get("test_metrics", {}).get(metric),
        "pooled_weighted": baselines["pooled"]["metrics"].get(metric),
        "local_weighted": baselines["local"]["metrics"].get(metric),
        "federated_union_metrics": union["union_test_metrics"],
        "pooled_union_metrics": baselines["pooled"]["union_test_metrics"],
        "local_union_metrics": baselines["local"]["union_test_metrics"],
        "job_state": status["state"],
        "rounds_completed": len(history),
        "run_s": run["wall_s"],
        "baselines_s": baseline_s,
        "processes_not_clean": failed,
    }


def summarise(
    federation: Federation, spec: JobSpec, runs: list[dict[str, Any]], info: dict[str, Any]
) -> dict[str, Any]:
    metric = runs[0]["metric"]
    federated = median([r["federated"] for r in runs])
    pooled = median([r["pooled"] for r in runs])
    gap = None if federated is None or pooled is None else federated - pooled
    return {
        "task": runs[0]["task"],
        "dataset": federation.name,
        "metric": metric,
        "federated": federated,
        "pooled": pooled,
        "local": median([r["local"] for r in runs]),
        "gap": gap,
        "scored_on": "union of the sites' test sets; medians over seeds",
        "federated_weighted": median([r["federated_weighted"] for r in runs]),
        "pooled_weighted": median([r["pooled_weighted"] for r in runs]),
        "local_weighted": median([r["local_weighted"] for r in runs]),
        "seeds": [r["seed"] for r in runs],
        "runs": runs,
        "sites": len(federation.sites),
        "site_names": list(federation.sites),
        "algorithm": spec.algorithm.name,
        "protection": spec.protection,
        "rounds": spec.rounds,
        "local_steps": spec.local_steps,
        "median_run_s": statistics.median(r["run_s"] for r in runs),
        "median_baselines_s": statistics.median(r["baselines_s"] for r in runs),
        "machine": info,
    }


def print_table(entries: list[dict[str, Any]]) -> None:
    print(
        "\nunion of the sites' test sets, median over seeds; gap = federated - pooled; "
        "s/run: control plane, sites and job"
    )
    header = (
        f"{'federation':<10} {'task':<10} {'metric':<9} {'federated':>9} {'pooled':>9} "
        f"{'gap':>8} {'local':>9} {'s/run':>7}"
    )
    print(header)
    print("-" * len(header))
    for e in entries:
        print(
            f"{e['dataset']:<10} {e['task']:<10} {e['metric']:<9} {fmt(e['federated']):>9} "
            f"{fmt(e['pooled']):>9} {fmt(e['gap']):>8} {fmt(e['local']):>9} "
            f"{e['median_run_s']:>7.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--federations", nargs="+", choices=list(FEDERATIONS), default=list(ORDER), metavar="NAME"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument(
        "--protection", choices=["none", "secagg", "paillier"], default="none", help="default none"
    )
    parser.add_argument(
        "--algorithm", default=None, help="default: each federation's own (fedyogi for heart)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="default: each federation's")
    parser.add_argument("--aggregators", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "tasks.json"))
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    info = machine()
    info.update(cpus=info["cores"], date=datetime.now(UTC).isoformat(timespec="seconds"))
    print(f"machine: {info['cpu']}, {info['cpus']} cores, Python {info['python']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-tasks-") as tmp:
        for name in args.federations:
            federation = FEDERATIONS[name]
            data_dir = find_data_dir(None, federation)
            runs: list[dict[str, Any]] = []
            specs = [
                job_spec(
                    args.algorithm,
                    args.rounds,
                    seed,
                    protection=args.protection,
                    federation=federation,
                )
                for seed in range(args.seeds)
            ]
            for seed, spec in enumerate(specs):
                try:
                    run = one_run(
                        federation, data_dir, spec, Path(tmp) / f"{name}-{seed}", args.aggregators
                    )
                except RunFailed as failure:
                    print(f"FAILED {failure}", file=sys.stderr)
                    if entries:
                        print_table(entries)
                    return 1
                runs.append(run)
                expected = EXPECTED_METRIC.get(name)
                note = f" (expected {expected})" if expected and expected != run["metric"] else ""
                unclean = run["processes_not_clean"]
                print(
                    f"  {name:<9} seed {seed}  {run['metric']}{note}: federated "
                    f"{fmt(run['federated'])}  pooled {fmt(run['pooled'])}  local "
                    f"{fmt(run['local'])}  ({run['run_s']:.1f}s run, "
                    f"{run['baselines_s']:.1f}s baselines)"
                    + (f"  processes that did not stop cleanly: {unclean}" if unclean else ""),
                    flush=True,
                )
            entries.append(summarise(federation, specs[0], runs, info))
            # Rewritten after each federation, so a later failure keeps what was measured.
            out.write_text(json.dumps(entries, indent=2))
    print_table(entries)
    print(
        f"\n{len(entries)} federations x {args.seeds} seeds in {time.perf_counter() - started:.0f}s"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
