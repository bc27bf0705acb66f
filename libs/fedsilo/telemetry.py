"""Platform metrics, `fedsilo_` prefix. Labelled metrics appear once a service uses them.

A federated-learning job is labelled `job_id`, never `job`: Prometheus gives every scraped
series a `job` label of its own (the scrape job) and would rename ours to `exported_job`.
Labels take values from small, platform-controlled sets (site, job_id, worker, phase, outcome,
kind); nothing a client sends becomes a label value.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.context_managers import Timer

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ROUND_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)

# Every service
RPC_REQUESTS = Counter(
    "fedsilo_rpc_requests", "gRPC requests handled", ["service", "method", "code"]
)
RPC_LATENCY = Histogram(
    "fedsilo_rpc_latency_seconds",
    "gRPC handler latency",
    ["service", "method"],
    buckets=_LATENCY_BUCKETS,
)

# Registry
CLIENTS_ENROLLED = Gauge("fedsilo_clients_enrolled", "client agents known to the registry")
CLIENTS_ALIVE = Gauge("fedsilo_clients_alive", "client agents whose heartbeat is recent")
HEARTBEATS = Counter("fedsilo_heartbeats", "heartbeats received")

# Scheduler
ROUNDS = Counter("fedsilo_rounds", "rounds finished, by outcome", ["job_id", "outcome"])
ROUND_PHASE_SECONDS = Histogram(
    "fedsilo_round_phase_seconds",
    "time spent in each phase of a round",
    ["job_id", "phase"],
    buckets=_ROUND_BUCKETS,
)
ROUND_SECONDS = Histogram(
    "fedsilo_round_duration_seconds",
    "round duration, open to done",
    ["job_id"],
    buckets=_ROUND_BUCKETS,
)
CLIENTS_SELECTED = Counter("fedsilo_clients_selected", "clients selected", ["job_id"])
CLIENTS_COMPLETED = Counter("fedsilo_clients_completed", "accepted client updates", ["job_id"])
CLIENTS_DROPPED = Counter("fedsilo_clients_dropped", "selected clients without update", ["job_id"])
UPDATES_REJECTED = Counter("fedsilo_updates_rejected", "rejected client requests", ["reason"])
JOBS = Gauge("fedsilo_jobs", "jobs by state", ["state"])
CURRENT_ROUND = Gauge(
    "fedsilo_job_round", "current round of each job (its last once finished)", ["job_id"]
)
JOB_RUNNING = Gauge("fedsilo_job_running", "1 while a job runs, 0 once it has finished", ["job_id"])
MODEL_ACCURACY = Gauge(
    "fedsilo_global_model_accuracy", "mean test accuracy of the global model over sites", ["job_id"]
)
MODEL_METRIC = Gauge(
    "fedsilo_global_model_metric",
    "the job's primary metric for the global model: its example-weighted mean over the sites "
    "that defined it (auc, macro_f1, r2, c_index, ...)",
    ["job_id", "metric"],
)
SITE_ANOMALY = Gauge(
    "fedsilo_site_anomaly_score",
    "how far a site's last update was from the round's coordinate-wise median update: (1 - "
    "cosine similarity) + max(0, log2(its norm / the median norm)); about 0.3 for honest sites, "
    "plaintext rounds only",
    ["job_id", "site"],
)
SITE_ANOMALOUS_ROUNDS = Gauge(
    "fedsilo_site_anomalous_rounds",
    "consecutive rounds, up to the last, in which the site's anomaly score exceeded "
    "the scheduler's threshold (FEDSILO_ANOMALY_THRESHOLD)",
    ["job_id", "site"],
)
MODEL_LOSS = Gauge("fedsilo_global_model_loss", "mean test loss of the global model", ["job_id"])
PRIVACY_EPSILON = Gauge(
    "fedsilo_privacy_epsilon", "differential-privacy epsilon spent by a job so far", ["job_id"]
)
SHARDS_PENDING = Gauge("fedsilo_aggregation_shards_pending", "shards waiting for a worker")

# Aggregator
SHARD_SECONDS = Histogram(
    "fedsilo_aggregation_shard_seconds",
    "time to combine one shard, by protection (none, secagg unmasking, paillier product)",
    ["worker", "protection"],
    buckets=_LATENCY_BUCKETS,
)
SHARDS_COMPLETED = Counter("fedsilo_aggregation_shards", "shards combined", ["worker"])
AGGREGATED_BYTES = Counter("fedsilo_aggregation_input_bytes", "update bytes read", ["worker"])

# Model store
BLOB_BYTES = Counter("fedsilo_blob_bytes", "blob bytes moved", ["direction"])
MODELS_STORED = Counter("fedsilo_models_stored", "global model versions registered")

# Client
UPDATE_BYTES = Counter("fedsilo_update_bytes", "update bytes uploaded", ["site"])
LOCAL_TRAIN_SECONDS = Histogram(
    "fedsilo_local_training_seconds",
    "local training time per task",
    ["site"],
    buckets=_ROUND_BUCKETS,
)
TASKS = Counter("fedsilo_client_tasks", "tasks handled by a client", ["site", "kind", "outcome"])
PROTECTION_SECONDS = Histogram(
    "fedsilo_client_protection_seconds",
    "time a site spends protecting its update: secure-aggregation keys, shares and masking, "
    "Paillier encryption, differential-privacy noise",
    ["site", "kind"],
    buckets=_LATENCY_BUCKETS,
)
SITE_EPSILON = Gauge(
    "fedsilo_site_privacy_epsilon",
    "differential-privacy epsilon a site's data has spent on a job, from the site's own ledger",
    ["site", "job_id"],
)
SITE_MAX_EPSILON = Gauge(
    "fedsilo_site_privacy_max_epsilon",
    "the most epsilon a site's policy lets one job spend (max_epsilon)",
    ["site"],
)

ProtectionKind = Literal[
    "secagg-keys", "secagg-share", "secagg-mask", "secagg-unmask", "paillier-encrypt", "dp-noise"
]


def time_protection(site: str, kind: ProtectionKind) -> Timer:
    """Times one protection step of a site's update: `with time_protection(site, kind): ...`."""
    return PROTECTION_SECONDS.labels(site, kind).time()
