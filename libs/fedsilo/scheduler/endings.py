"""How a round ends, for every protocol: the initial model stored (round 0); training
closed (dropouts recorded, quorum checked, then the protocol's next step); the shard
results composed into the new global model with its lineage and privacy spent; the sites'
evaluations; the next round or the job's end."""

from __future__ import annotations

import json
import logging

from google.protobuf import json_format

from fedsilo.aggregator.anomaly import ShardStatistics, anomaly_scores
from fedsilo.algorithms.registry import server_optimizer
from fedsilo.jobs import JobSpec
from fedsilo.modelstore.client import BlobsUnavailable
from fedsilo.scheduler.accounting import account_privacy
from fedsilo.scheduler.interfaces import Job, RoundControl, RoundRuntime, TaskInfo
from fedsilo.scheduler.jobrows import job_manifest, job_spec
from fedsilo.scheduler.protocols.base import RoundProtocol
from fedsilo.scheduler.shards import ShardState
from fedsilo.scheduler.status import primary_metric, summarize_evaluations
from fedsilo.scheduler.store import JobState, Phase
from fedsilo.telemetry import (
    CLIENTS_DROPPED,
    MODEL_ACCURACY,
    MODEL_LOSS,
    MODEL_METRIC,
    ROUND_SECONDS,
    ROUNDS,
    SITE_ANOMALOUS_ROUNDS,
    SITE_ANOMALY,
)
from fedsilo.v1 import modelstore_pb2, scheduler_pb2

log = logging.getLogger("fedsilo.scheduler")

# Aggregations of one round whose shard results could not be composed before the round fails.
MAX_LOST_AGGREGATIONS = 2


def accept_initial_model(
    control: RoundControl, job: Job, request: scheduler_pb2.SubmitUpdateRequest, task: TaskInfo
) -> None:
    record = control.artifacts.put_model(
        modelstore_pb2.ModelRecord(
            job_id=job["job_id"],
            round=0,
            participants=[task.site],
            manifest=request.manifest,
            blob=request.update,
            algorithm=job_spec(job).algorithm.name,
        )
    )
    control.store.update_job(
        job["job_id"],
        model_version=record.version,
        manifest_json=json_format.MessageToJson(request.manifest),
    )
    control.store.update_round(
        job["job_id"], 0, new_version=record.version, participants=[task.site]
    )
    job["model_version"] = record.version


def close_training(
    control: RoundControl, job: Job, spec: JobSpec, runtime: RoundRuntime, protocol: RoundProtocol
) -> None:
    updates = control.store.updates(job["job_id"], job["round"], job["attempt"])
    received = {u.client_id for u in updates}
    dropped = sorted(runtime.selected[c] for c in set(runtime.selected) - received)
    for client_id in set(runtime.selected) - received:
        control.store.add_event(
            job["job_id"],
            job["round"],
            "dropped",
            client_id,
            "no accepted update before the round closed",
        )
    CLIENTS_DROPPED.labels(job["job_id"]).inc(len(dropped))
    control.drop_tasks(job["job_id"])
    if len(updates) < spec.min_clients:
        control.retry_round(
            job,
            spec,
            runtime,
            f"{len(updates)} updates, fewer than min_clients={spec.min_clients}",
        )
        return
    control.store.update_round(
        job["job_id"],
        job["round"],
        participants=sorted(u.site for u in updates),
        dropped=dropped,
    )
    protocol.training_closed(job, spec, runtime, updates)


def finish_aggregation(
    control: RoundControl, job: Job, spec: JobSpec, runtime: RoundRuntime
) -> None:
    shards = runtime.shards
    try:
        weights = control.artifacts.compose([s.weights for s in shards])
        state = {
            name: control.artifacts.compose([s.server_state[name] for s in shards]).digest
            for name in server_optimizer(spec.algorithm).state_names
        }
    except BlobsUnavailable as error:
        # Shard results are not written durably (they can be computed again): one lost
        # or torn by a crash sends the round through aggregation again; results that keep
        # failing (a broken store) fail the round instead.
        runtime.lost_aggregations += 1
        if runtime.lost_aggregations > MAX_LOST_AGGREGATIONS:
            runtime.lost_aggregations = 0
            control.retry_round(job, spec, runtime, f"shard results unavailable: {error}")
            return
        log.warning(
            "job %s round %d: shard results unavailable (%s); aggregating again",
            job["job_id"],
            job["round"],
            error,
        )
        control.plan_aggregation(job, runtime)
        return
    runtime.lost_aggregations = 0
    updates = control.store.updates(job["job_id"], job["round"], job["attempt"])
    privacy = account_privacy(control.store, job, spec, updates)
    anomaly = score_sites(control, job, spec, shards, {u.client_id: u.site for u in updates})
    record = control.artifacts.put_model(
        modelstore_pb2.ModelRecord(
            job_id=job["job_id"],
            round=job["round"],
            parent_version=job["model_version"],
            participants=sorted(u.site for u in updates),
            manifest=job_manifest(job),
            blob=weights,
            algorithm=spec.algorithm.name,
            server_state=state,
            metrics={
                **privacy,
                **{f"anomaly_score:{site}": s["score"] for site, s in anomaly.items()},
            },
        )
    )
    runtime.shards, runtime.sum_digest, runtime.input_scale = [], "", 1.0
    runtime.secagg = None
    control.store.update_job(
        job["job_id"], model_version=record.version, server_state=json.dumps(state)
    )
    control.store.update_round(
        job["job_id"],
        job["round"],
        new_version=record.version,
        epsilon=privacy.get("epsilon"),
        anomaly=anomaly,
    )
    job["model_version"] = record.version
    log.info(
        "job %s round %d: new global model %s", job["job_id"], job["round"], record.version[:12]
    )
    control.to_phase(job, Phase.EVALUATING, runtime)
    dispatch_evaluation(control, job, runtime)


def score_sites(
    control: RoundControl,
    job: Job,
    spec: JobSpec,
    shards: list[ShardState],
    sites: dict[str, str],
) -> dict[str, dict[str, float]]:
    """Each site's anomaly score for the round (plaintext rounds: the aggregators see the
    updates); recorded with the round, in the model's lineage and as a gauge."""
    if spec.protection != "none" or len(sites) < 2:
        return {}
    parts = [s.stats for s in shards]
    if not parts or any(part is None for part in parts):
        return {}
    stats = ShardStatistics.merge(part for part in parts if part is not None)
    if stats is None:
        return {}
    previous = control.store.round(job["job_id"], job["round"] - 1)
    scores = anomaly_scores(
        stats, sites, previous["anomaly"] if previous else None, control.config.anomaly_threshold
    )
    for site, score in scores.items():
        SITE_ANOMALY.labels(job["job_id"], site).set(score["score"])
        SITE_ANOMALOUS_ROUNDS.labels(job["job_id"], site).set(score["streak"])
    if control.audit is not None:
        control.audit.append(
            "anomaly_scores",
            actor="scheduler",
            job_id=job["job_id"],
            round=job["round"],
            threshold=control.config.anomaly_threshold,
            scores={site: round(score["score"], 4) for site, score in scores.items()},
            anomalous=sorted(
                s for s, v in scores.items() if v["score"] > control.config.anomaly_threshold
            ),
        )
    return scores


def dispatch_evaluation(control: RoundControl, job: Job, runtime: RoundRuntime) -> None:
    spec = job_spec(job)
    alive = control.clients.alive_clients(spec.dataset)
    runtime.eval_expected = {c: s for c, s in alive.items() if s not in runtime.evaluated}
    runtime.deadline = control.clock() + spec.evaluation_timeout_s
    for client_id, site in runtime.eval_expected.items():
        control.new_task(job, scheduler_pb2.TASK_KIND_EVALUATE, client_id, site, runtime.deadline)


def finish_round(control: RoundControl, job: Job, spec: JobSpec, runtime: RoundRuntime) -> None:
    control.drop_tasks(job["job_id"])
    control.to_phase(job, Phase.DONE, runtime)
    now = control.clock()
    control.store.update_round(job["job_id"], job["round"], ended_at=now)
    row = control.store.round(job["job_id"], job["round"])
    if row is not None:
        ROUND_SECONDS.labels(job["job_id"]).observe(now - row["started_at"])
    per_site = control.store.evaluations(job["job_id"], job["round"]).get(job["round"], {})
    metric = primary_metric(json.loads(job["spec_json"]), per_site)
    summary = summarize_evaluations(per_site, metric)
    if summary["mean_test_accuracy"] is not None:
        MODEL_ACCURACY.labels(job["job_id"]).set(summary["mean_test_accuracy"])
    if summary["mean_test_loss"] is not None:
        MODEL_LOSS.labels(job["job_id"]).set(summary["mean_test_loss"])
    if summary["test_metric"] is not None:
        MODEL_METRIC.labels(job["job_id"], metric).set(summary["test_metric"])
        log.info(
            "job %s round %d done: test %s %.3f",
            job["job_id"],
            job["round"],
            metric,
            summary["test_metric"],
        )
    ROUNDS.labels(job["job_id"], "completed").inc()
    runtime.evaluated, runtime.eval_expected = set(), {}
    runtime.declines.clear()
    if job["round"] >= spec.rounds:
        control.finish_job(job["job_id"], JobState.COMPLETED, "")
        return
    control.store.update_job(
        job["job_id"], round=job["round"] + 1, attempt=0, phase=Phase.SELECTING
    )
    runtime.selected, runtime.finished = {}, set()
