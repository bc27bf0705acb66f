"""The ServerApp: Flower's own strategy (FedYogi, or FedAvg) with fedsilo's job settings,
recording when each round starts and ends. The record goes to the run config's report-file.

FedYogi: eta, beta_1, beta_2 and tau are the job's server_lr, beta1, beta2 and tau; Flower
starts the second moment v at 0 where fedsilo (as Reddi et al.'s Algorithm 2) starts it at
tau², so v is set to tau² before the first round. The update rule itself is Flower's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedYogi

from fedsilo.algorithms.registry import AlgorithmParams, FedAvgParams, FedYogiParams
from fedsilo.learning import build_model

from .job import SITES, job_spec

app = ServerApp()


def number(metrics: MetricRecord, key: str) -> float:
    value = metrics[key]
    if not isinstance(value, int | float):
        raise TypeError(f"metric {key!r} should be a number, got {value!r}")
    return float(value)


def site_metrics(replies: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Accuracy per hospital, their plain mean (each hospital counts once, as fedsilo's
    mean_test_accuracy) and the example-weighted mean."""
    metrics = [reply.metric_records["metrics"] for reply in replies]
    accuracies = {SITES[int(number(m, "partition-id"))]: number(m, "accuracy") for m in metrics}
    counts = [number(m, weighted_by_key) for m in metrics]
    weighted = sum(number(m, "accuracy") * n for m, n in zip(metrics, counts, strict=True))
    return MetricRecord(
        {
            "mean-test-accuracy": sum(accuracies.values()) / len(accuracies),
            "weighted-test-accuracy": weighted / sum(counts),
            **{f"accuracy-{site}": value for site, value in accuracies.items()},
        }
    )


class TimedFedAvg(FedAvg):
    """Flower's FedAvg on every hospital, noting each round's wall time (from sampling the
    trainers to the last evaluation: what a fedsilo round's started_at..ended_at spans)."""

    flower_strategy: ClassVar[str] = "FedAvg"

    def __init__(self, **settings: Any) -> None:
        sites = len(SITES)
        super().__init__(
            min_train_nodes=sites,
            min_evaluate_nodes=sites,
            min_available_nodes=sites,
            evaluate_metrics_aggr_fn=site_metrics,
            **settings,
        )
        self.rounds: list[dict[str, Any]] = []
        self._round_started = 0.0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._round_started = time.perf_counter()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        metrics = super().aggregate_evaluate(server_round, replies)
        self.rounds.append(
            {
                "round": server_round,
                "duration_s": time.perf_counter() - self._round_started,
                **(dict(metrics) if metrics is not None else {}),
            }
        )
        return metrics


class TimedFedYogi(TimedFedAvg, FedYogi):
    """Flower's FedYogi with the clock above, its second moment starting at tau²."""

    flower_strategy: ClassVar[str] = "FedYogi"

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.v_t is None:
            self.v_t = {
                name: np.full_like(array.numpy(), self.tau**2) for name, array in arrays.items()
            }
        return super().configure_train(server_round, arrays, config, grid)


def make_strategy(params: AlgorithmParams) -> TimedFedAvg:
    match params:
        case FedAvgParams(server_lr=1.0):
            return TimedFedAvg()
        case FedYogiParams():
            return TimedFedYogi(
                eta=params.server_lr, beta_1=params.beta1, beta_2=params.beta2, tau=params.tau
            )
    raise ValueError(
        f"no Flower strategy matches {params!r}: the benchmark runs fedavg (server_lr 1) or fedyogi"
    )


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.perf_counter()
    spec = job_spec(context.run_config)
    strategy = make_strategy(spec.algorithm)
    model = build_model(spec.model, int(context.run_config["num-features"]), seed=spec.seed)
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=spec.rounds,
        timeout=spec.round_timeout_s,
    )
    report = {
        "strategy": strategy.flower_strategy,
        "rounds": strategy.rounds,
        "serverapp_s": time.perf_counter() - started,
    }
    Path(str(context.run_config["report-file"])).write_text(json.dumps(report, indent=2))
