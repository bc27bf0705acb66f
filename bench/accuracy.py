"""Accuracy on the heart-disease federation with FLamby's settings (15 rounds, 100 local SGD
steps, batch 4, lr 0.001), several seeds, through the real services.

One federation (control plane and four hospital clients as processes) runs every job; the
local-only and pooled baselines are computed the same way the demo does. Prints mean ± sd per
algorithm and writes bench/results/accuracy.json.

    make bench-accuracy ARGS='--seeds 5 --algorithms fedavg fedadam'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import machine

from fedsilo.cli.baselines import compute_baselines
from fedsilo.cli.demo import find_data_dir, job_spec, start_heart_federation
from fedsilo.federations import heart_disease

RESULTS = Path(__file__).parent / "results"


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--algorithms", nargs="+", default=["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad"]
    )
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    data_dir = find_data_dir(args.data_dir)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    print(f"default algorithm of the demo: {heart_disease.DEFAULT_ALGORITHM}")

    results: dict[str, list[dict[str, float]]] = {name: [] for name in args.algorithms}
    baselines = {"pooled": [], "local": []}
    with tempfile.TemporaryDirectory() as state:
        plane = start_heart_federation(Path(state), data_dir)
        api = plane.api()
        try:
            for seed in range(args.seeds):
                base = compute_baselines(
                    heart_disease.FEDERATION, data_dir, job_spec("fedavg", 15, seed)
                )
                for kind in baselines:
                    baselines[kind].append(base[kind]["mean_test_accuracy"])
                for name in args.algorithms:
                    spec = job_spec(name, 15, seed, protection="none")
                    started = time.perf_counter()
                    job_id = api.submit_job(json.loads(spec.to_json()))["job_id"]
                    while (status := api.job(job_id))["state"] == "running":
                        time.sleep(0.2)
                    if status["state"] != "completed":
                        print(f"{name} seed {seed}: {status['state']} {status['error']}")
                        return 1
                    last = status["history"][-1]
                    results[name].append(
                        {
                            "accuracy": last["mean_test_accuracy"],
                            "seconds": time.perf_counter() - started,
                        }
                    )
                    print(
                        f"  seed {seed} {name:<10} mean test accuracy "
                        f"{last['mean_test_accuracy']:.3f}  ({results[name][-1]['seconds']:.1f}s)",
                        flush=True,
                    )
        finally:
            plane.stop()

    print(
        f"\nmean test accuracy over the four hospitals, 15 rounds, {args.seeds} seeds (mean ± sd)"
    )
    print(f"{'method':<12} {'accuracy':>15}   {'median job s':>12}   FLamby")
    flamby = {
        "fedavg": 0.685,
        "fedprox": 0.685,
        "fedadam": 0.726,
        "fedyogi": 0.731,
        "fedadagrad": 0.731,
        "pooled": 0.735,
    }
    summary = {}
    for name, runs in results.items():
        accuracies = [run["accuracy"] for run in runs]
        seconds = statistics.median(run["seconds"] for run in runs)
        summary[name] = {
            "mean": statistics.mean(accuracies),
            "sd": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "runs": accuracies,
            "median_job_s": seconds,
            "params": heart_disease.algorithm_params(name).model_dump(),
        }
        print(f"{name:<12} {mean_sd(accuracies):>15}   {seconds:>12.1f}   {flamby.get(name, '')}")
    for kind, values in baselines.items():
        summary[f"baseline_{kind}"] = {"mean": statistics.mean(values), "runs": values}
        label = "local only¹" if kind == "local" else kind
        print(f"{label:<12} {mean_sd(values):>15}   {'':>12}   {flamby.get(kind, '')}")
    print("¹ each hospital's own model on its own test set (Switzerland's is almost all positive)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "accuracy.json").write_text(
        json.dumps({"machine": info, "seeds": args.seeds, "results": summary}, indent=2)
    )
    print(f"wrote {RESULTS / 'accuracy.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
