"""`fedsilo demo`: a reference federation, end to end, as separate OS processes.

The control-plane services and one client per site start on free localhost ports; a job runs
with a live progress bar; the demo then compares the federated model with each site training
alone and with the (illegal in real life) pooled baseline, computed the same way, per site and
on the union of all the sites' test sets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

from rich.table import Table

from fedsilo.algorithms.registry import ALGORITHM_NAMES
from fedsilo.cli.baselines import compute_baselines, federated_scores
from fedsilo.cli.console import console, fmt, print_json
from fedsilo.cli.federation import (
    find_data_dir,
    run_federation,
    start_heart_federation,
    start_sites,
    wait_for_sites,
)
from fedsilo.federations import FEDERATIONS, Federation, heart_disease
from fedsilo.jobs import JobSpec
from fedsilo.privacy import DifferentialPrivacy

DEFAULT_ALGORITHM = heart_disease.DEFAULT_ALGORITHM
__all__ = ["find_data_dir", "run_demo", "start_heart_federation", "start_sites", "wait_for_sites"]


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--federation",
        choices=list(FEDERATIONS),
        default="heart",
        help="heart (default): four hospitals, binary; gbsg2: four centres, survival (Cox, "
        "C-index); digits: multiclass; diabetes: regression",
    )
    parser.add_argument(
        "--algorithm",
        choices=ALGORITHM_NAMES,
        default=None,
        help=f"default: the federation's ({DEFAULT_ALGORITHM} for heart, fedavg otherwise)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="default: the federation's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="demo-out", help="results folder (default ./demo-out)")
    parser.add_argument("--data-dir", default=None, help="the federation's data folder")
    parser.add_argument("--aggregators", type=int, default=2, help="aggregator replicas")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--json", action="store_true", help="print results.json instead of the tables"
    )
    parser.add_argument(
        "--protection",
        choices=["none", "secagg", "paillier"],
        default="secagg",
        help="secagg (default): the control plane sees only masked updates whose masks cancel "
        "in the sum; paillier: only packed Paillier ciphertexts; none: plain updates",
    )
    parser.add_argument(
        "--dp-epsilon",
        type=float,
        default=None,
        help="train with differential privacy spending this epsilon (delta 1e-5)",
    )
    parser.add_argument(
        "--dp-mode",
        choices=["sample", "client"],
        default="sample",
        help="sample: each patient record (DP-SGD at every hospital, the default);"
        " client: each hospital as a whole",
    )


# Clipping norms for this federation: per-example gradients of the logistic regression
# (DP-SGD), and whole client updates, whose median norm measured here is about 0.03.
DP_CLIP = {"sample": 1.0, "client": 0.05}


def job_spec(
    algorithm: str | None,
    rounds: int | None,
    seed: int,
    dp_epsilon: float | None = None,
    dp_mode: str = "sample",
    protection: str = "secagg",
    federation: Federation = heart_disease.FEDERATION,
) -> JobSpec:
    spec = federation.job(algorithm or federation.default_algorithm, seed)
    update: dict[str, Any] = {"rounds": rounds or spec.rounds, "protection": protection}
    if dp_epsilon is not None:
        update["privacy"] = DifferentialPrivacy(
            mode=dp_mode, clip_norm=DP_CLIP[dp_mode], target_epsilon=dp_epsilon
        )
    return spec.model_copy(update=update)


def plot_convergence(results: dict[str, Any], path: Path) -> None:
    """The primary metric's federated figure by round, against the pooled and local-only
    baselines' on the same test sets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = results["metric"]
    points = [(0, results["initial"]["metrics"].get(metric))] + [
        (r["round"], r["metrics"].get(metric)) for r in results["rounds"]
    ]
    points = [(r, v) for r, v in points if v is not None]
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    axes.plot(
        [r for r, _ in points],
        [v for _, v in points],
        marker="o",
        label=f"federated ({results['algorithm']})",
    )
    for kind, color, style, label in (
        ("pooled", "black", "--", "pooled (all data in one place)"),
        ("local", "tab:red", ":", "local only (each site alone)"),
    ):
        value = results["baselines"][kind]["metrics"].get(metric)
        if value is not None:
            axes.axhline(value, color=color, linestyle=style, label=label)
    axes.set_xlabel("round")
    axes.set_ylabel(f"test {metric} (example-weighted over the sites)")
    axes.set_title(results["title"])
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _final_table(results: dict[str, Any]) -> Table:
    metric = results["metric"]
    table = Table(
        title=f"test {metric} per site",
        caption="local only: each site's model trained alone, on its own test set; all test "
        "sets: the union of the sites' test rows, scored together",
    )
    for column in ("site", "local only", "federated", "pooled"):
        table.add_column(column, justify="right" if column != "site" else "left")
    local = results["baselines"]["local"]
    pooled = results["baselines"]["pooled"]
    final = results["final"]
    for site in results["sites"]:
        table.add_row(
            site,
            *(
                fmt(source["per_site_metrics"].get(site, {}).get(metric))
                for source in (local, final, pooled)
            ),
        )
    table.add_row(
        "[bold]weighted mean",
        *(fmt(source["metrics"].get(metric)) for source in (local, final, pooled)),
    )
    table.add_row(
        "[bold]all test sets",
        *(fmt(source["union_test_metrics"].get(metric)) for source in (local, final, pooled)),
    )
    return table


def collect_results(
    federation: Federation,
    spec: JobSpec,
    run: dict[str, Any],
    baselines: dict[str, Any],
    union: dict[str, Any] | None,
) -> dict[str, Any]:
    status = run["status"]
    history = {h["round"]: h for h in status["history"]}
    rounds = [
        {
            "round": r,
            "epsilon": h["epsilon"],
            "test_metric": h["test_metric"],
            "mean_test_accuracy": h["mean_test_accuracy"],
            "weighted_test_accuracy": h["weighted_test_accuracy"],
            "duration_s": h["duration_s"],
            "participants": h["participants"],
            "dropped": h["dropped"],
            "per_site": {s: m["accuracy"] for s, m in h["per_site"].items() if "accuracy" in m},
            "metrics": h["test_metrics"],
            "per_site_metrics": h["per_site"],
        }
        for r, h in sorted(history.items())
        if r > 0
    ]
    empty: dict[str, Any] = {"mean_test_accuracy": None, "per_site": {}, "metrics": {}}
    last = rounds[-1] if rounds else empty
    initial = history.get(0, {})
    return {
        "federation": federation.name,
        "title": federation.title,
        "sites": list(federation.sites),
        "task": spec.task or baselines["pooled"]["task"],
        "metric": status["metric"],
        "algorithm": spec.algorithm.name,
        "algorithm_params": spec.algorithm.model_dump(),
        "protection": spec.protection,
        "privacy": None
        if spec.privacy is None
        else {
            **status["spec"]["privacy"],
            "target_epsilon": spec.privacy.target_epsilon,
            "epsilon": last.get("epsilon"),
        },
        "job_id": status["job_id"],
        "state": status["state"],
        "seed": spec.seed,
        "spec": json.loads(spec.to_json()),
        "initial": {
            "mean_test_accuracy": initial.get("mean_test_accuracy"),
            "metrics": initial.get("test_metrics", {}),
        },
        "rounds": rounds,
        "final": {
            "mean_test_accuracy": last["mean_test_accuracy"],
            "per_site": last["per_site"],
            # Each metric's example-weighted mean over the sites that defined it; per site,
            # every metric and those undefined there, with why.
            "metrics": last["metrics"],
            "per_site_metrics": last.get("per_site_metrics", {}),
            # The final model on all the sites' test rows together (the demo's own scoring).
            "union_test_metrics": (union or {}).get("union_test_metrics", {}),
            "model_version": status["model_version"],
        },
        "baselines": baselines,
        "processes": run["processes"],
        "wall_s": run["wall_s"],
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
    }


def run_demo(args: argparse.Namespace) -> int:
    chosen = FEDERATIONS[args.federation]
    data_dir = find_data_dir(args.data_dir, chosen)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec = job_spec(
        args.algorithm,
        args.rounds,
        args.seed,
        args.dp_epsilon,
        args.dp_mode,
        args.protection,
        chosen,
    )

    def say(*renderables: Any) -> None:
        if not args.json:  # with --json, stdout carries only results.json
            console.print(*renderables)

    say(
        f"[bold]fedsilo demo[/]: {chosen.title}; {spec.algorithm.name}, {spec.rounds} rounds of "
        f"{spec.local_steps} local steps, data from {data_dir}"
    )
    baselines = compute_baselines(chosen, data_dir, spec)
    run = run_federation(
        data_dir, spec, out, chosen, aggregators=args.aggregators, quiet=args.quiet or args.json
    )
    union = None
    if run["weights"] is not None:
        union = federated_scores(chosen, data_dir, spec, run["weights"])
    results = collect_results(chosen, spec, run, baselines, union)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if results["rounds"]:
        plot_convergence(results, out / "convergence.png")
    if args.json:
        print_json(results)
    say(_final_table(results))
    if "accuracy" in results["final"]["metrics"] and results["metric"] != "accuracy":
        say(
            f"federated test accuracy {fmt(results['final']['metrics']['accuracy'])} "
            f"(example-weighted over the sites); {results['metric']} as above"
        )
    say(
        f"job {results['job_id']} {results['state']} in {results['wall_s']:.1f}s; "
        f"wrote {out / 'results.json'} and {out / 'convergence.png'}"
    )
    failed = [p["service"] for p in results["processes"] if p["exit_code"] != 0]
    if failed:
        console.print(f"[red]processes that did not stop cleanly: {', '.join(failed)}")
    return 0 if results["state"] == "completed" and not failed else 1
