"""Prometheus metrics of a worker process (default registry, served by `worker.health`)."""

from __future__ import annotations

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
