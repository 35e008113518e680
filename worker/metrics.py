"""Prometheus metrics of a worker process (default registry, served by `worker.health`)."""

from __future__ import annotations

import threading
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

# Batch sizes are powers of two up to the largest `max_batch_size` an operator may set.
_BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
# Seconds from 1 ms (a realtime fraud batch) to a minute (a backlog's tail).
_TIME_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

TASKS: Final = Counter("inferq_tasks_total", "Tasks answered, by kind and result status", ["kind", "status"])
DUPLICATES: Final = Counter("inferq_duplicates_total", "Deliveries of task ids already answered (acked only)")
DEADLETTERED: Final = Counter("inferq_deadlettered_total", "Tasks moved to the dead-letter stream", ["reason"])
CLAIMED: Final = Counter("inferq_claimed_total", "Tasks taken over from workers idle past claim_idle_ms")
REQUEUED: Final = Counter("inferq_requeued_total", "Prefetched tasks given back on a graceful stop")
BATCH_SPLITS: Final = Counter("inferq_batch_splits_total", "Batches split in halves after the model raised", ["kind"])
BATCH_SIZE: Final = Histogram("inferq_batch_size", "Tasks per model batch", ["kind", "lane"], buckets=_BATCH_BUCKETS)
BATCH_TOKENS: Final = Histogram(
    "inferq_batch_padded_tokens",
    "Padded tokens (longest x count) per batch",
    ["kind", "lane"],
    buckets=(64, 256, 1024, 4096, 16384, 65536, 262144),
)
QUEUE_WAIT: Final = Histogram(
    "inferq_queue_wait_seconds", "Enqueue to batch start", ["kind", "lane"], buckets=_TIME_BUCKETS
)
COMPUTE: Final = Histogram("inferq_compute_seconds", "Model time per batch", ["kind", "lane"], buckets=_TIME_BUCKETS)
TOTAL: Final = Histogram("inferq_task_seconds", "Enqueue to result posted", ["kind", "status"], buckets=_TIME_BUCKETS)
LANE_DEPTH: Final = Gauge("inferq_lane_depth", "Entries in a lane stream (waiting and in flight)", ["lane"])
HELD: Final = Gauge("inferq_worker_held_tasks", "Tasks this worker fetched and has not answered yet", ["lane"])
READY: Final = Gauge(
    "inferq_worker_ready", "1 once models are warm and Redis answers; 0 while Redis is unreachable or stopping"
)

# Usage per tenant and kind (worker/usage.py meters the same in Redis, per day). The tenant label is
# capped: the first `INFERQ_METRICS_MAX_TENANTS` tenants a process meters get their own label, the
# rest count under OTHER_TENANT, so a producer inventing tenants cannot blow up the series count
# (at most (cap + 1) x 2 kinds per counter and process).
USAGE_INFERENCES: Final = Counter(
    "inferq_usage_inferences_total", "Inferences (results with status ok) by tenant and kind", ["tenant", "kind"]
)
USAGE_COMPUTE: Final = Counter(
    "inferq_usage_compute_seconds_total", "Model time apportioned to tasks, by tenant and kind", ["tenant", "kind"]
)
# Starts with '_', which no tenant name may (contracts/requests.py), so it never meets a real tenant.
OTHER_TENANT: Final = "_other"


class TenantLabels:
    """The label a tenant gets on the usage metrics: its own among the first `cap` seen, else OTHER_TENANT."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def set_cap(self, cap: int) -> None:
        with self._lock:
            self._cap = cap

    def label(self, tenant: str) -> str:
        with self._lock:
            if tenant in self._seen:
                return tenant
            if len(self._seen) < self._cap:
                self._seen.add(tenant)
                return tenant
            return OTHER_TENANT


TENANTS: Final = TenantLabels(50)


def count_usage(tenant: str, kind: str, inference: bool, compute_s: float) -> None:
    """Count one metered task on the usage counters (after its result was posted)."""
    label = TENANTS.label(tenant)
    if inference:
        USAGE_INFERENCES.labels(label, kind).inc()
    USAGE_COMPUTE.labels(label, kind).inc(compute_s)
