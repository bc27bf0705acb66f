"""Client-level DP per round at 10M parameters, on this machine: clip an update to L2 norm C,
then add Gaussian noise of standard deviation z·C, with fedsilo.privacy's own functions as
the client agent and the aggregator call them (clip_update, noise_std_per_client,
add_gaussian_noise).

Reference, measured in the same run: numpy's own np.linalg.norm of the update plus
rng.standard_normal(size, dtype=float32), the least any implementation must do (find the
norm, draw the noise). Medians of --runs (wall clock; process CPU time next to it, since a
busy machine inflates the wall clock). Writes bench/results/dp.json.

    .venv/bin/python bench/dp.py [--params 10000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from machine import machine
from timing import timed

from fedsilo.privacy import add_gaussian_noise, clip_update, noise_std_per_client

RESULTS = Path(__file__).parent / "results"
CLIP_NORM = 1.0
NOISE_MULTIPLIER = 1.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    # A trained delta is typically far outside the bound, so the clip really scales.
    update = rng.standard_normal(args.params, dtype=np.float32) * np.float32(0.01)
    std = noise_std_per_client(CLIP_NORM, NOISE_MULTIPLIER, 1, distributed=False)

    def privatize() -> np.ndarray:
        clipped, _ = clip_update(update, CLIP_NORM)
        return add_gaussian_noise(clipped, std, rng)

    def reference() -> None:
        np.linalg.norm(update)
        rng.standard_normal(args.params, dtype=np.float32)

    clipped, norm = clip_update(update, CLIP_NORM)
    clip_s = timed(lambda: clip_update(update, CLIP_NORM), args.runs)
    noise_s = timed(lambda: add_gaussian_noise(clipped, std, rng), args.runs)
    both_s = timed(privatize, args.runs)
    reference_s = timed(reference, args.runs)
    noisy = privatize()
    measured_std = float(np.std(noisy.astype(np.float64) - clipped))

    print(
        f"\n{args.params:,} float32 parameters, C = {CLIP_NORM}, z = {NOISE_MULTIPLIER}, "
        f"noise std z·C = {std}; update norm {norm:.1f} -> {CLIP_NORM}; "
        f"measured noise std {measured_std:.4f}; medians of {args.runs} runs"
    )
    rows = {
        "clip_update": clip_s,
        "add_gaussian_noise": noise_s,
        "clip + noise (one round)": both_s,
        "reference: np.linalg.norm + standard_normal": reference_s,
    }
    for name, timing in rows.items():
        print(
            f"  {name:<44} {timing.wall_s:7.3f} s wall  {timing.cpu_s:7.3f} s CPU   "
            f"x{timing.wall_s / reference_s.wall_s:.2f} of the reference "
            f"(x{timing.cpu_s / reference_s.cpu_s:.2f} CPU)"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dp.json").write_text(
        json.dumps(
            {
                "machine": info,
                "load_average_at_start": os.getloadavg()[0],
                "params": args.params,
                "runs": args.runs,
                "clip_norm": CLIP_NORM,
                "noise_multiplier": NOISE_MULTIPLIER,
                "seconds": {name: timing.__dict__ for name, timing in rows.items()},
                "ratio_to_reference_wall": {
                    name: timing.wall_s / reference_s.wall_s for name, timing in rows.items()
                },
                "ratio_to_reference_cpu": {
                    name: timing.cpu_s / reference_s.cpu_s for name, timing in rows.items()
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
