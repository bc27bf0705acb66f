"""Membership inference against the heart-disease model, with and without differential privacy.

The attack is Yeom et al. 2018 ("Privacy Risk in Machine Learning: Analyzing the Connection to
Overfitting", CSF): whoever holds the final global model (an operator pulls it from the REST
API) and a patient's record guesses that the record was in some hospital's training split
when the model's loss on it is low. No shadow models, no side information: the signal is
exactly the gap between how well the model fits the records it was trained on and records it
was not. The members are the train rows of all four hospitals, the non-members their test rows
(the same hospitals, stratified 66/34, so the two sets differ only in membership). The score is
the negative per-example binary cross-entropy; the benchmark reports its AUC (Mann-Whitney U,
0.5: the model tells nothing) and the attack's advantage, max over thresholds of TPR - FPR
(Yeom's membership advantage, 0: nothing).

To give the attack something to find, the model can overfit: an MLP (13-64-64-1), SGD with lr
0.05, batch 4, 15 rounds of `--local-steps` steps at each hospital. The server runs FedAvg: its
new model is the plain mean of the hospitals' models, so whatever they memorised reaches the
global model undamped, and DP-FedAvg (McMahan et al. 2018) is the algorithm client-level DP was
analysed for; an adaptive server optimizer (FedYogi, the demo's default) rescales every
coordinate of the step and would mix its own effect into the comparison. The settings:

- no DP;
- sample-level DP-SGD at every hospital (each patient record protected), ε 8 and 1 at δ 1e-5,
  per-example gradients clipped to 1.0;
- client-level DP (each hospital protected as a whole), ε 8: every update clipped to C, Gaussian
  noise on the sum. C defaults to the median update norm measured in a calibration job (the
  same training, clipping at an unreachable bound with no noise), read from the scheduler's
  `updates.metrics`: the fixed counterpart of clipping at the median norm (Andrew et al. 2021);
- a control, the initial model of each no-DP job, which has seen no data: the attack's AUC
  where there is nothing to find.

One federation (control plane and four hospital clients as processes) runs every job. Prints
the machine, the settings and a table (test accuracy, train accuracy, attack AUC and advantage,
mean ± sd over seeds) and writes bench/results/membership_inference.json.

    .venv/bin/python bench/membership_inference.py               # 3 seeds, about 6 minutes
    .venv/bin/python bench/membership_inference.py --seeds 5 --local-steps 100
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from machine import machine
from numpy.typing import NDArray
from torch.nn import functional

from fedsilo.cli.api import OperatorApi
from fedsilo.cli.demo import find_data_dir, start_heart_federation
from fedsilo.data import TabularData, load_tabular
from fedsilo.federations import heart_disease
from fedsilo.jobs import JobSpec, ModelSpec
from fedsilo.learning import build_model, manifest_from_json, state_dict_from_flat
from fedsilo.policy import site_privacy
from fedsilo.privacy import DifferentialPrivacy

RESULTS = Path(__file__).parent / "results"
MODEL = ModelSpec(name="mlp", hidden=[64, 64])
ALGORITHM = "fedavg"
LEARNING_RATE = 0.05
SAMPLE_CLIP = 1.0
# A clip no update reaches and no noise: the calibration job records update norms unchanged.
UNREACHABLE_CLIP = 1e6
# A DP-SGD job takes about a minute here; ten is a stall, not a slow machine.
JOB_DEADLINE_S = 600.0

Scores = NDArray[np.float64]


@dataclass(frozen=True)
class Setting:
    """One row of the table: no DP, or a DP mode with its target ε."""

    label: str
    mode: Literal["sample", "client"] | None = None
    target_epsilon: float | None = None

    @property
    def key(self) -> str:
        if self.target_epsilon is None:
            return self.label
        return f"{self.label} ε={self.target_epsilon:g}"

    def privacy(self, client_clip: float) -> DifferentialPrivacy | None:
        if self.mode is None:
            return None
        clip = SAMPLE_CLIP if self.mode == "sample" else client_clip
        return DifferentialPrivacy(
            mode=self.mode, clip_norm=clip, target_epsilon=self.target_epsilon
        )


# The control: the initial model of each no-DP job, which has seen no data. Its AUC is what
# the attack finds where there is nothing to find.
UNTRAINED = Setting("untrained")
SETTINGS = (
    Setting("no DP"),
    Setting("sample DP-SGD", "sample", 8.0),
    Setting("sample DP-SGD", "sample", 1.0),
    Setting("client DP", "client", 8.0),
)


def mann_whitney_auc(members: Scores, non_members: Scores) -> float:
    """P(score of a random member > score of a random non-member), ties counting one half:
    the Mann-Whitney U statistic of the members over n_members · n_non_members."""
    scores = np.concatenate([members, non_members])
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Midranks (1-based): a group of tied scores shares the mean of the ranks it spans.
    midranks = np.cumsum(counts) - (counts - 1) / 2.0
    member_rank_sum = float(midranks[inverse[: members.size]].sum())
    u = member_rank_sum - members.size * (members.size + 1) / 2.0
    return u / (members.size * non_members.size)


def membership_advantage(members: Scores, non_members: Scores) -> float:
    """max over thresholds t of TPR - FPR for the guess "member when score >= t"."""
    thresholds = np.unique(np.concatenate([members, non_members]))
    sorted_members, sorted_non_members = np.sort(members), np.sort(non_members)
    tpr = 1.0 - np.searchsorted(sorted_members, thresholds, side="left") / members.size
    fpr = 1.0 - np.searchsorted(sorted_non_members, thresholds, side="left") / non_members.size
    return float(np.max(tpr - fpr))


def chance_auc_sd(num_members: int, num_non_members: int) -> float:
    """Standard deviation of the AUC when scores carry no membership signal."""
    n1, n0 = num_members, num_non_members
    return math.sqrt((n1 + n0 + 1) / (12.0 * n1 * n0))


def per_example_loss(
    model: torch.nn.Module, x: NDArray[np.float32], y: NDArray[np.float32]
) -> Scores:
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).squeeze(-1)
        loss = functional.binary_cross_entropy_with_logits(
            logits, torch.from_numpy(y), reduction="none"
        )
    return loss.double().numpy()


def accuracy(model: torch.nn.Module, x: NDArray[np.float32], y: NDArray[np.float32]) -> float:
    with torch.no_grad():
        predicted = (model(torch.from_numpy(x)).squeeze(-1) >= 0).numpy()
    return float(np.mean(predicted == (y > 0.5)))


def pull_global_model(
    api: OperatorApi, job_id: str, num_features: int, round_: int = -1
) -> torch.nn.Module:
    """A global model of the job (the final one by default), as `fedsilo model pull` writes it,
    loaded into the MLP."""
    record = api.model(job_id, round_)
    weights = np.frombuffer(api.model_weights(job_id, round_), dtype="<f4")
    state = state_dict_from_flat(manifest_from_json(record["manifest"]["tensors"]), weights)
    model = build_model(MODEL, num_features)
    model.load_state_dict(state)
    model.eval()
    return model


def attack(model: torch.nn.Module, sites: dict[str, TabularData]) -> dict[str, Any]:
    """Loss-threshold membership inference over the four hospitals' train and test rows."""
    member_loss = np.concatenate(
        [per_example_loss(model, d.x_train, d.y_train) for d in sites.values()]
    )
    non_member_loss = np.concatenate(
        [per_example_loss(model, d.x_test, d.y_test) for d in sites.values()]
    )
    return {
        "auc": mann_whitney_auc(-member_loss, -non_member_loss),
        "advantage": membership_advantage(-member_loss, -non_member_loss),
        "member_loss": float(member_loss.mean()),
        "non_member_loss": float(non_member_loss.mean()),
        # Means over the hospitals, as the scheduler reports test accuracy.
        "test_accuracy": statistics.mean(
            accuracy(model, d.x_test, d.y_test) for d in sites.values()
        ),
        "train_accuracy": statistics.mean(
            accuracy(model, d.x_train, d.y_train) for d in sites.values()
        ),
    }


def make_spec(
    seed: int, rounds: int, local_steps: int, privacy: DifferentialPrivacy | None
) -> JobSpec:
    return heart_disease.flamby_job(
        heart_disease.algorithm_params(ALGORITHM), seed=seed
    ).model_copy(
        update={
            "name": "membership-inference",
            "model": MODEL,
            "rounds": rounds,
            "local_steps": local_steps,
            "learning_rate": LEARNING_RATE,
            "privacy": privacy,
        }
    )


def run_job(api: OperatorApi, spec: JobSpec, logs: Path) -> dict[str, Any]:
    """Submit the job and wait for it; a job still running after JOB_DEADLINE_S is cancelled
    (a site that keeps failing would otherwise stall the benchmark round after round)."""
    job_id = api.submit_job(json.loads(spec.to_json()))["job_id"]
    deadline = time.monotonic() + JOB_DEADLINE_S
    while (status := api.job(job_id))["state"] == "running":
        if time.monotonic() > deadline:
            api.cancel(job_id)
            raise RuntimeError(
                f"job {job_id} still running after {JOB_DEADLINE_S:.0f}s, cancelled; "
                f"the service logs are in {logs} (kept with --state-dir)"
            )
        time.sleep(0.2)
    if status["state"] != "completed":
        raise RuntimeError(f"job {job_id} ({spec.privacy}): {status['state']} {status['error']}")
    return status


def median_update_norm(scheduler_db: Path, job_id: str) -> float:
    """The median L2 norm of the hospitals' updates in a job, from what the clients reported."""
    with closing(sqlite3.connect(f"file:{scheduler_db}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT metrics FROM updates WHERE job_id = ?", (job_id,)).fetchall()
    norms = [json.loads(metrics)["update_norm"] for (metrics,) in rows]
    if not norms:
        raise RuntimeError(f"job {job_id} recorded no update norms in {scheduler_db}")
    return float(statistics.median(norms))


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def noise_multipliers(spec: JobSpec, sites: dict[str, TabularData]) -> dict[str, float]:
    """The noise multiplier each hospital trains with: DP-SGD resolves ε per site, from its
    number of examples; client-level DP has one for the whole job."""
    multipliers = {}
    for site, data in sites.items():
        privacy = site_privacy(spec, data.num_train)
        assert privacy is not None
        multipliers[site] = privacy.require_noise_multiplier()
    return multipliers


def measure(
    api: OperatorApi,
    status: dict[str, Any],
    round_: int,
    num_features: int,
    sites: dict[str, TabularData],
) -> dict[str, Any]:
    """Attack the job's model of `round_` and check that it is the model the hospitals
    evaluated: its mean test accuracy must be the one they reported."""
    history = {entry["round"]: entry for entry in status["history"]}
    reported = history[max(history) if round_ < 0 else round_]
    result = attack(pull_global_model(api, status["job_id"], num_features, round_), sites)
    if abs(reported["mean_test_accuracy"] - result["test_accuracy"]) > 1e-6:
        raise RuntimeError(
            f"job {status['job_id']} round {reported['round']}: the pulled model scores "
            f"{result['test_accuracy']:.4f}, the hospitals reported "
            f"{reported['mean_test_accuracy']:.4f}"
        )
    # No ε is recorded without DP, nor for round 0, whose model has seen no data.
    epsilon = reported["epsilon"]
    if epsilon is None:
        epsilon = 0.0 if reported["round"] == 0 else math.inf
    return {
        "job_id": status["job_id"],
        "round": reported["round"],
        "epsilon": epsilon,
        **result,
    }


def format_epsilon(epsilon: float) -> str:
    return "∞" if math.isinf(epsilon) else f"{epsilon:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--local-steps", type=int, default=200)
    parser.add_argument(
        "--client-clip",
        type=float,
        default=None,
        help="client-level DP clip norm (default: the median update norm of a calibration job)",
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--state-dir",
        default=None,
        help="keep the services' state and logs here (emptied first; default: a temporary "
        "folder, removed at the end)",
    )
    args = parser.parse_args()
    # The RDP accountant warns, through absl, about orders it cannot evaluate and skips them.
    logging.getLogger("absl").setLevel(logging.ERROR)
    started = time.perf_counter()
    data_dir = find_data_dir(args.data_dir)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    print(
        f"settings: {ALGORITHM}, mlp {MODEL.hidden}, {args.rounds} rounds of {args.local_steps} "
        f"local SGD steps, batch 4, lr {LEARNING_RATE}, seeds 0..{args.seeds - 1}; "
        f"DP-SGD clip {SAMPLE_CLIP}, δ 1e-5"
    )
    sites = {
        site: load_tabular(heart_disease.site_config(site, data_dir).dataset(heart_disease.DATASET))
        for site in heart_disease.HOSPITALS
    }
    num_features = next(iter(sites.values())).num_features
    num_members = sum(d.num_train for d in sites.values())
    num_non_members = sum(d.x_test.shape[0] for d in sites.values())
    chance_sd = chance_auc_sd(num_members, num_non_members)
    always_positive = statistics.mean(float(d.y_test.mean()) for d in sites.values())
    print(
        f"attack: {num_members} members (train rows), {num_non_members} non-members (test rows); "
        f"with no membership signal the AUC is 0.5 ± {chance_sd:.3f} (sd)"
    )

    runs: dict[str, list[dict[str, Any]]] = {setting.key: [] for setting in (UNTRAINED, *SETTINGS)}
    multipliers: dict[str, dict[str, float]] = {}
    client_clip: float | None = args.client_clip
    calibration: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as scratch:
        state = Path(args.state_dir) if args.state_dir else Path(scratch)
        plane = start_heart_federation(state, data_dir)
        api = plane.api()
        logs = plane.state_dir / "run"
        try:
            if client_clip is None:
                probe = DifferentialPrivacy(
                    mode="client", clip_norm=UNREACHABLE_CLIP, noise_multiplier=0.0
                )
                status = run_job(api, make_spec(0, args.rounds, args.local_steps, probe), logs)
                median = median_update_norm(plane.state_dir / "scheduler.db", status["job_id"])
                client_clip = float(f"{median:.2g}")
                calibration = {"job_id": status["job_id"], "median_update_norm": median}
                print(
                    f"calibration: median hospital update norm {median:.3f} "
                    f"→ client-level clip C = {client_clip}"
                )
            else:
                print(f"client-level clip C = {client_clip} (given)")
            for setting in SETTINGS:
                privacy = setting.privacy(client_clip)
                if privacy is not None:
                    spec = make_spec(0, args.rounds, args.local_steps, privacy)
                    multipliers[setting.key] = noise_multipliers(spec, sites)
                    print(
                        f"  {setting.key}: clip {privacy.clip_norm}, noise multiplier "
                        + ", ".join(f"{s} {z:.2f}" for s, z in multipliers[setting.key].items())
                    )
            for seed in range(args.seeds):
                for setting in SETTINGS:
                    spec = make_spec(
                        seed, args.rounds, args.local_steps, setting.privacy(client_clip)
                    )
                    job_started = time.perf_counter()
                    status = run_job(api, spec, logs)
                    seconds = time.perf_counter() - job_started
                    measured = [(setting, -1)]
                    if setting.mode is None:
                        measured.append((UNTRAINED, 0))
                    for row, round_ in measured:
                        result = measure(api, status, round_, num_features, sites)
                        runs[row.key].append({"seed": seed, "seconds": seconds, **result})
                        job = "" if row is UNTRAINED else f"  ({seconds:.0f}s job)"
                        print(
                            f"  seed {seed} {row.key:<20} test acc {result['test_accuracy']:.3f}  "
                            f"train acc {result['train_accuracy']:.3f}  AUC {result['auc']:.3f}  "
                            f"adv {result['advantage']:.3f}  ε {format_epsilon(result['epsilon'])}"
                            + job,
                            flush=True,
                        )
        finally:
            plane.stop()

    total_s = time.perf_counter() - started
    print(f"\nloss-threshold membership inference, {args.seeds} seeds (mean ± sd)")
    header = (
        f"{'setting':<16} {'ε':>5}   {'test accuracy':>13}   {'train accuracy':>14}   "
        f"{'attack AUC':>13}   {'advantage':>13}   {'job s':>5}"
    )
    print(header)
    print("-" * len(header))
    summary: dict[str, Any] = {}
    for setting in (UNTRAINED, *SETTINGS):
        rows = runs[setting.key]

        def column(name: str, rows: list[dict[str, Any]] = rows) -> list[float]:
            return [float(row[name]) for row in rows]

        epsilon = max(column("epsilon"))
        seconds = statistics.median(column("seconds"))
        print(
            f"{setting.label:<16} {format_epsilon(epsilon):>5}   "
            f"{mean_sd(column('test_accuracy')):>13}   {mean_sd(column('train_accuracy')):>14}   "
            f"{mean_sd(column('auc')):>13}   {mean_sd(column('advantage')):>13}   "
            f"{'' if setting is UNTRAINED else f'{seconds:.0f}':>5}"
        )
        privacy = setting.privacy(client_clip)
        summary[setting.key] = {
            "mode": setting.mode,
            "target_epsilon": setting.target_epsilon,
            "clip_norm": None if privacy is None else privacy.clip_norm,
            "noise_multipliers": multipliers.get(setting.key),
            "epsilon": epsilon if math.isfinite(epsilon) else None,
            **{
                name: {
                    "mean": statistics.mean(column(name)),
                    "sd": statistics.stdev(column(name)) if len(rows) > 1 else 0.0,
                }
                for name in ("test_accuracy", "train_accuracy", "auc", "advantage")
            },
            "median_job_s": None if setting is UNTRAINED else seconds,
            "runs": [
                {**row, "epsilon": row["epsilon"] if math.isfinite(row["epsilon"]) else None}
                for row in rows
            ],
        }
    print(
        f"ε: the largest reached over seeds (δ 1e-5); untrained: each no-DP job's initial model. "
        f"An AUC within 0.5 ± {2 * chance_sd:.3f} (2 sd) is what a model that leaks nothing "
        f"gives; predicting disease for everyone scores {always_positive:.3f} test accuracy."
    )
    print(f"total {total_s:.0f}s")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "membership_inference.json"
    out.write_text(
        json.dumps(
            {
                "machine": info,
                "seeds": args.seeds,
                "settings": {
                    "algorithm": ALGORITHM,
                    "model": MODEL.model_dump(),
                    "rounds": args.rounds,
                    "local_steps": args.local_steps,
                    "batch_size": 4,
                    "learning_rate": LEARNING_RATE,
                    "delta": 1e-5,
                    "sample_clip": SAMPLE_CLIP,
                    "client_clip": client_clip,
                    "client_clip_calibration": calibration,
                },
                "attack": {
                    "members": num_members,
                    "non_members": num_non_members,
                    "chance_auc_sd": chance_sd,
                    "always_positive_test_accuracy": always_positive,
                },
                "results": summary,
                "total_s": total_s,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
