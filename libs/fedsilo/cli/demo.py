"""`fedsilo demo`: the heart-disease federation, end to end, as separate OS processes.

Five control-plane services and four hospital clients start on free localhost ports; a job runs
with a live progress bar; the demo then compares the federated model with each hospital
training alone and with the (illegal in real life) pooled baseline, computed the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.table import Table

from fedsilo.algorithms.registry import ALGORITHM_NAMES
from fedsilo.cli.api import OperatorApi
from fedsilo.cli.console import console, fmt, print_json, watch_job
from fedsilo.cli.up import LocalControlPlane, start_control_plane
from fedsilo.federations import heart_disease
from fedsilo.jobs import JobSpec
from fedsilo.policy import SitePolicy
from fedsilo.privacy import DifferentialPrivacy

DEFAULT_ALGORITHM = heart_disease.DEFAULT_ALGORITHM


def find_data_dir(explicit: str | None) -> Path:
    """--data-dir, FEDSILO_HEART_DISEASE_DATA, or shared/data beside the repository."""
    candidates = [explicit, os.environ.get("FEDSILO_HEART_DISEASE_DATA")]
    repo = Path(__file__).resolve().parents[3]
    candidates += [
        str(Path.cwd() / "../shared/data/fed_heart_disease"),
        str(repo / "../shared/data/fed_heart_disease"),
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "processed.cleveland.data").exists():
            return Path(candidate).resolve()
    raise SystemExit(
        "heart-disease data not found: pass --data-dir or set "
        "FEDSILO_HEART_DISEASE_DATA to the folder with processed.*.data"
    )


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--algorithm", choices=ALGORITHM_NAMES, default=DEFAULT_ALGORITHM)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="demo-out", help="results folder (default ./demo-out)")
    parser.add_argument("--data-dir", default=None, help="folder of the four processed.*.data")
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
    algorithm: str,
    rounds: int,
    seed: int,
    dp_epsilon: float | None = None,
    dp_mode: str = "sample",
    protection: str = "secagg",
) -> JobSpec:
    params = heart_disease.algorithm_params(algorithm)
    update: dict[str, Any] = {"rounds": rounds, "protection": protection}
    if dp_epsilon is not None:
        update["privacy"] = DifferentialPrivacy(
            mode=dp_mode, clip_norm=DP_CLIP[dp_mode], target_epsilon=dp_epsilon
        )
    return heart_disease.flamby_job(params, seed=seed).model_copy(update=update)


def compute_baselines(data_dir: Path, spec: JobSpec) -> dict[str, Any]:
    """Local-only (each hospital alone, same steps as the whole federated job) and pooled."""
    from fedsilo.data import load_tabular
    from fedsilo.learning import build_model, evaluate, train_centralized, train_local

    sites = {
        site: load_tabular(heart_disease.site_config(site, data_dir).dataset(heart_disease.DATASET))
        for site in heart_disease.HOSPITALS
    }
    local, local_everywhere, pooled = {}, {}, {}
    for site, data in sites.items():
        model = build_model(spec.model, data.num_features, seed=spec.seed)
        train_local(
            model,
            data,
            steps=spec.rounds * spec.local_steps,
            batch_size=spec.batch_size,
            learning_rate=spec.learning_rate,
            optimizer=spec.optimizer,
            seed=spec.seed,
        )
        local[site] = evaluate(model, data.x_test, data.y_test).accuracy
        # FLamby's view of a local model: how it does on every hospital's test set.
        local_everywhere[site] = sum(
            evaluate(model, other.x_test, other.y_test).accuracy for other in sites.values()
        ) / len(sites)
    pooled_model = train_centralized(
        list(sites.values()),
        model_spec=spec.model,
        batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        seed=spec.seed,
        epochs=heart_disease.POOLED_EPOCHS,
        optimizer=spec.optimizer,
    )
    for site, data in sites.items():
        pooled[site] = evaluate(pooled_model, data.x_test, data.y_test).accuracy
    return {
        "local": {
            "mean_test_accuracy": sum(local.values()) / len(local),
            "per_site": local,
            "per_site_on_all_test_sets": local_everywhere,
            "mean_on_all_test_sets": sum(local_everywhere.values()) / len(local),
            "steps": spec.rounds * spec.local_steps,
        },
        "pooled": {
            "mean_test_accuracy": sum(pooled.values()) / len(pooled),
            "per_site": pooled,
            "epochs": heart_disease.POOLED_EPOCHS,
        },
    }


def plot_convergence(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [0] + [r["round"] for r in results["rounds"]]
    accuracy = [results["initial"]["mean_test_accuracy"]] + [
        r["mean_test_accuracy"] for r in results["rounds"]
    ]
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    axes.plot(rounds, accuracy, marker="o", label=f"federated ({results['algorithm']})")
    axes.axhline(
        results["baselines"]["pooled"]["mean_test_accuracy"],
        color="black",
        linestyle="--",
        label="pooled (all data in one place)",
    )
    axes.axhline(
        results["baselines"]["local"]["mean_on_all_test_sets"],
        color="tab:red",
        linestyle=":",
        label="local only (a hospital's own model, on all 4 test sets)",
    )
    axes.set_xlabel("round")
    axes.set_ylabel("mean test accuracy over 4 hospitals")
    axes.set_title("Fed-Heart-Disease: four hospitals, one model")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _final_table(results: dict[str, Any]) -> Table:
    table = Table(
        title="test accuracy per hospital",
        caption="local only: each hospital's model trained alone, on its own test set and "
        "averaged over all four hospitals' test sets (FLamby's local baseline)",
    )
    for column in ("hospital", "local only", "local on all 4", "federated", "pooled"):
        table.add_column(column, justify="right" if column != "hospital" else "left")
    local = results["baselines"]["local"]["per_site"]
    everywhere = results["baselines"]["local"]["per_site_on_all_test_sets"]
    pooled = results["baselines"]["pooled"]["per_site"]
    federated = results["final"]["per_site"]
    for site in heart_disease.HOSPITALS:
        table.add_row(
            site,
            f"{local[site]:.3f}",
            f"{everywhere[site]:.3f}",
            f"{federated.get(site, float('nan')):.3f}",
            f"{pooled[site]:.3f}",
        )
    table.add_row(
        "[bold]mean",
        f"{results['baselines']['local']['mean_test_accuracy']:.3f}",
        f"{results['baselines']['local']['mean_on_all_test_sets']:.3f}",
        f"[bold]{results['final']['mean_test_accuracy']:.3f}",
        f"{results['baselines']['pooled']['mean_test_accuracy']:.3f}",
    )
    return table


def start_heart_federation(
    state_dir: Path,
    data_dir: Path,
    *,
    aggregators: int = 2,
    policies: Mapping[str, SitePolicy] | None = None,
    **plane_options: Any,
) -> LocalControlPlane:
    """The control plane plus one client per hospital, each reading only its own file and
    holding its own policy."""
    shutil.rmtree(state_dir, ignore_errors=True)
    plane = start_control_plane(state_dir, aggregators=aggregators, **plane_options)
    try:
        sites_dir = state_dir / "sites"
        sites_dir.mkdir(parents=True, exist_ok=True)
        for site in heart_disease.HOSPITALS:
            config_path = sites_dir / f"{site}.yaml"
            config = heart_disease.site_config(site, data_dir)
            if policies and site in policies:
                config = config.model_copy(update={"policy": policies[site]})
            config.write(config_path)
            plane.start_client(site, config_path)
        plane.wait_ready()
        wait_for_sites(plane.api(), len(heart_disease.HOSPITALS))
    except BaseException:
        plane.stop()
        raise
    return plane


def wait_for_sites(api: OperatorApi, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(site["alive"] for site in api.sites()) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{count} sites did not enroll within {timeout_s:.0f}s")


def run_federation(
    data_dir: Path, spec: JobSpec, out: Path, *, aggregators: int = 2, quiet: bool = False
) -> dict[str, Any]:
    """Start everything, run the job, stop everything; returns the job status and processes."""
    started = time.perf_counter()
    plane = start_heart_federation(out / "state", data_dir, aggregators=aggregators)
    try:
        if not quiet:
            console.print(
                f"started {len(plane.processes)} processes; operator API {plane.api_url}/docs"
            )
        api = plane.api()
        submitted = api.submit_job(json.loads(spec.to_json()))
        status = watch_job(api, submitted["job_id"], quiet=quiet)
        processes: list[dict[str, Any]] = [
            {"service": p.name, "pid": p.pid} for p in plane.processes
        ]
    finally:
        codes = plane.stop()
    for process in processes:
        process["exit_code"] = codes.get(process["service"])
    return {
        "status": status,
        "processes": processes,
        "wall_s": time.perf_counter() - started,
        "state_dir": str(plane.state_dir),
    }


def collect_results(
    spec: JobSpec, run: dict[str, Any], baselines: dict[str, Any]
) -> dict[str, Any]:
    status = run["status"]
    history = {h["round"]: h for h in status["history"]}
    rounds = [
        {
            "round": r,
            "epsilon": h["epsilon"],
            "mean_test_accuracy": h["mean_test_accuracy"],
            "weighted_test_accuracy": h["weighted_test_accuracy"],
            "duration_s": h["duration_s"],
            "participants": h["participants"],
            "dropped": h["dropped"],
            "per_site": {site: m["accuracy"] for site, m in h["per_site"].items()},
            "metrics": h["test_metrics"],
            "per_site_metrics": h["per_site"],
        }
        for r, h in sorted(history.items())
        if r > 0
    ]
    last = rounds[-1] if rounds else {"mean_test_accuracy": None, "per_site": {}, "metrics": {}}
    return {
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
        "initial": {"mean_test_accuracy": history.get(0, {}).get("mean_test_accuracy")},
        "rounds": rounds,
        "final": {
            "mean_test_accuracy": last["mean_test_accuracy"],
            "per_site": last["per_site"],
            # Each metric's example-weighted mean over the sites that defined it; per site,
            # every metric and those undefined there, with why.
            "metrics": last["metrics"],
            "per_site_metrics": last.get("per_site_metrics", {}),
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
    data_dir = find_data_dir(args.data_dir)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec = job_spec(
        args.algorithm, args.rounds, args.seed, args.dp_epsilon, args.dp_mode, args.protection
    )

    def say(*renderables: Any) -> None:
        if not args.json:  # with --json, stdout carries only results.json
            console.print(*renderables)

    say(
        f"[bold]fedsilo demo[/]: {spec.algorithm.name}, {spec.rounds} rounds of "
        f"{spec.local_steps} local steps, data from {data_dir}"
    )
    baselines = compute_baselines(data_dir, spec)
    run = run_federation(
        data_dir, spec, out, aggregators=args.aggregators, quiet=args.quiet or args.json
    )
    results = collect_results(spec, run, baselines)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if results["rounds"]:
        plot_convergence(results, out / "convergence.png")
    if args.json:
        print_json(results)
    say(_final_table(results))
    say(
        f"federated test AUC {fmt(results['final']['metrics'].get('auc'))} (example-weighted over "
        "the hospitals), accuracy as above"
    )
    say(
        f"job {results['job_id']} {results['state']} in {results['wall_s']:.1f}s; "
        f"wrote {out / 'results.json'} and {out / 'convergence.png'}"
    )
    failed = [p["service"] for p in results["processes"] if p["exit_code"] != 0]
    if failed:
        console.print(f"[red]processes that did not stop cleanly: {', '.join(failed)}")
    return 0 if results["state"] == "completed" and not failed else 1
