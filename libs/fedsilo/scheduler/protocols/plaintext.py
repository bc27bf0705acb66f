"""protection: none — sites upload float32 deltas; the aggregators combine them as they are.

A rule that weighs the sites by their updates' geometry (multi-Krum, centered clipping,
norm-bounded FedAvg) aggregates in two passes: the replicas first return each range's Gram
matrix, the scheduler sums them and computes one coefficient per site, and the second pass
is the weighted sum with those coefficients."""

from __future__ import annotations

import json

import numpy as np

from fedsilo.aggregator.geometry import COEFFICIENTS
from fedsilo.aggregator.rules import aggregation_rule
from fedsilo.algorithms.aggregate import normalized_weights
from fedsilo.jobs import JobSpec
from fedsilo.scheduler.interfaces import Job, RoundRuntime
from fedsilo.scheduler.jobrows import job_spec
from fedsilo.scheduler.protocols.base import RoundProtocol
from fedsilo.v1 import aggregator_pb2


class PlaintextProtocol(RoundProtocol):
    """Every hook's default: train, upload, aggregate (see RoundProtocol); Gram rules add
    their first pass."""

    name = "none"

    def _coefficients(self, job: Job, runtime: RoundRuntime) -> dict[str, float] | None:
        if runtime.coefficients and runtime.coefficients[0] == (job["round"], job["attempt"]):
            return runtime.coefficients[1]
        return None

    def pass_layout(
        self, job: Job, runtime: RoundRuntime, num_parameters: int, shard_parameters: int
    ) -> tuple[int, int, str]:
        rule = aggregation_rule(job_spec(job).aggregation.rule)
        if rule.needs_gram and self._coefficients(job, runtime) is None:
            return num_parameters, shard_parameters, "gram"
        return num_parameters, shard_parameters, "plaintext"

    def shard(
        self, message: aggregator_pb2.Shard, job: Job, spec: JobSpec, runtime: RoundRuntime
    ) -> None:
        super().shard(message, job, spec, runtime)
        if runtime.pass_kind == "gram":
            message.stage = "gram"
            return
        coefficients = self._coefficients(job, runtime)
        if coefficients is not None:
            message.aggregation_json = json.dumps(
                {**json.loads(message.aggregation_json), "coefficients": coefficients}
            )

    def aggregation_done(self, job: Job, spec: JobSpec, runtime: RoundRuntime) -> bool:
        """After a Gram pass: the sites' coefficients, then the combining pass."""
        if runtime.pass_kind != "gram":
            return True
        updates = self.control.store.updates(job["job_id"], job["round"], job["attempt"])
        clients = sorted(u.client_id for u in updates)
        count = len(clients)
        gram = np.zeros((count, count))
        for shard in runtime.shards:
            assert shard.gram is not None
            gram += np.asarray(shard.gram, dtype=np.float64).reshape(count, count)
        examples = {u.client_id: u.num_examples for u in updates}
        weights = np.asarray(normalized_weights([examples[c] for c in clients]), dtype=np.float64)
        params = spec.aggregation.model_dump(exclude={"rule"})
        try:
            values = COEFFICIENTS[spec.aggregation.rule](gram, weights, params)
        except ValueError as error:
            runtime.shards = []
            self.control.retry_round(job, spec, runtime, str(error))
            return False
        runtime.coefficients = (
            (job["round"], job["attempt"]),
            {client: float(value) for client, value in zip(clients, values, strict=True)},
        )
        self.control.plan_aggregation(job, runtime)
        return False
