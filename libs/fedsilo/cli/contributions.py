"""`fedsilo job contributions JOB --validation SITE.yaml`: how much each site contributed to
a completed plaintext job, scored with the job's primary metric on a validation set the
operator holds (declared like a site's dataset; both of its splits are used).

For every trained round, a coalition's utility is the metric of the round's starting model
moved by the FedAvg of the coalition's accepted updates (fedsilo.contributions); the empty
coalition keeps the starting model. Shapley values are computed per round (exactly over every
coalition up to EXACT_SITES sites, else by GTG-style guided, truncated permutation sampling)
and summed over the rounds, as GTG-Shapley does; leave-one-out is on the final round. The
result is kept with the job (its status, `contributions`), audited by the scheduler.

The operator reads the sites' individual updates for this (audited); jobs under secure
aggregation or Paillier never had them, and the scheduler says so.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.cli.api import OperatorApi
from fedsilo.cli.console import console, print_contributions, print_json
from fedsilo.contributions import exact_shapley, leave_one_out, permutation_shapley
from fedsilo.data import SiteConfig, TabularData
from fedsilo.jobs import JobSpec, parse_job_spec

# Up to this many sites a round's Shapley values are exact (2^n coalitions, each one model
# evaluation on the validation set); beyond, permutation sampling.
EXACT_SITES = 8


class ContributionError(RuntimeError):
    pass


def validation_data(path: Path, spec: JobSpec, dataset: str | None) -> TabularData:
    """The operator's validation set: the job's dataset (or `dataset`) from a site-style
    declaration, loaded for the job's task as a site loads it; both splits are scored."""
    from fedsilo.client.site import SiteDatasets
    from fedsilo.client.tasks import TaskDeclined

    try:
        config = SiteConfig.load(path)
        data = SiteDatasets(config).for_job(
            spec.model_copy(update={"dataset": dataset or spec.dataset})
        )
    except (TaskDeclined, ValueError, OSError) as error:
        raise ContributionError(f"validation set {path}: {error}") from None
    return dataclasses.replace(
        data,
        x_test=np.concatenate([data.x_train, data.x_test]),
        y_test=np.concatenate([data.y_train, data.y_test]),
    )


def compute_contributions(
    api: OperatorApi,
    job_id: str,
    data: TabularData,
    validation: str,
    permutations: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    from fedsilo.learning import build_model, load_flat, predict
    from fedsilo.learning.metrics import task_metrics

    inputs = api.contribution_inputs(job_id)
    spec = parse_job_spec(inputs["spec"])
    metric = api.job(job_id)["metric"]
    if not inputs["rounds"]:
        raise ContributionError(f"job {job_id} has no trained round with accepted updates")
    model = build_model(
        spec.model, data.num_features, num_outputs=data.task.num_outputs, seed=spec.seed
    )
    targets = data.y_test.astype(np.float64)
    blobs: dict[str, np.ndarray] = {}

    def vector(digest: str) -> np.ndarray:
        if digest not in blobs:
            blobs[digest] = np.frombuffer(api.job_blob(job_id, digest), "<f4").astype(np.float64)
        return blobs[digest]

    def score(weights: np.ndarray) -> float:
        try:
            load_flat(model, weights.astype(np.float32))
        except ValueError as error:
            raise ContributionError(
                f"the validation set does not fit job {job_id}'s model: {error}"
            ) from None
        result = task_metrics(data.task, targets, predict(model, data.x_test, data.task))
        value = result.values.get(metric)
        if value is None:
            reason = result.undefined.get(metric, "not computed")
            raise ContributionError(f"{metric} is undefined on the validation set: {reason}")
        return float(value)

    shapley: dict[str, float] = {}
    per_round: list[dict[str, float]] = []
    last: dict[str, Any] = {}
    for row in inputs["rounds"]:
        base = vector(row["base_version"])
        updates = {u["site"]: (vector(u["digest"]), u["num_examples"]) for u in row["updates"]}
        sites = sorted(updates)

        def utility(coalition: frozenset[str], base: Any = base, updates: Any = updates) -> float:
            if not coalition:
                return score(base)
            total = sum(updates[s][1] for s in coalition)
            delta = sum(updates[s][0] * (updates[s][1] / total) for s in coalition)
            return score(base + delta)

        values = (
            exact_shapley(sites, utility)
            if len(sites) <= EXACT_SITES
            else permutation_shapley(sites, utility, permutations, seed=seed + row["round"])
        )
        per_round.append({"round": float(row["round"]), **values})
        for site, value in values.items():
            shapley[site] = shapley.get(site, 0.0) + value
        last = {"sites": sites, "utility": utility}
    first_base = vector(inputs["rounds"][0]["base_version"])
    final = inputs["rounds"][-1]
    return {
        "metric": metric,
        "validation": validation,
        "method": (
            "per-round Shapley values summed over rounds (GTG-Shapley): exact over every "
            f"coalition up to {EXACT_SITES} sites, else {permutations} guided permutations; "
            "leave-one-out on the final round"
        ),
        "shapley": shapley,
        "leave_one_out": leave_one_out(last["sites"], last["utility"]),
        "rounds": len(inputs["rounds"]),
        "grand_coalition": score(vector(final["new_version"])),
        "empty_coalition": score(first_base),
        "per_round": per_round,
    }


def cmd_job_contributions(args: argparse.Namespace, api: OperatorApi) -> int:
    try:
        spec = parse_job_spec(api.job(args.job_id)["spec"])
        data = validation_data(Path(args.validation), spec, args.dataset)
        result = compute_contributions(
            api, args.job_id, data, Path(args.validation).name, args.permutations
        )
    except ContributionError as error:
        console.print(f"[red]{error}")
        return 2
    status = api.record_contributions(args.job_id, result)
    if args.json:
        print_json(status["contributions"])
    else:
        print_contributions(status["contributions"])
    return 0
