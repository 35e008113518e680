"""Every Redis key, prefix, task name and lane inferq uses, in one place."""

from typing import Final, Literal

PREFIX: Final = "inferq:"

TASK_TRIAGE: Final = "inferq.triage"
TASK_FRAUD: Final = "inferq.fraud"
TASK_NAMES: Final = {"triage": TASK_TRIAGE, "fraud": TASK_FRAUD}
KIND_BY_TASK: Final = {name: kind for kind, name in TASK_NAMES.items()}

Lane = Literal["realtime", "batch"]
LANES: Final[tuple[Lane, ...]] = ("realtime", "batch")
DEFAULT_LANE: Final[dict[str, Lane]] = {"fraud": "realtime", "triage": "batch"}

QUEUE_PREFIX: Final = PREFIX + "queue:"
CONSUMER_GROUP: Final = "inferq-workers"
RESULTS_PREFIX: Final = PREFIX + "results:"
DONE_PREFIX: Final = PREFIX + "done:"
DEADLETTER_STREAM: Final = PREFIX + "deadletter"
WORKER_PREFIX: Final = PREFIX + "worker:"

# Fields of a lane stream entry.
FIELD_PAYLOAD: Final = "payload"  # Celery envelope, JSON
FIELD_TASK: Final = "task"  # raw form: task name
FIELD_ID: Final = "id"  # raw form: task id (idempotency key)
FIELD_REQUEST: Final = "request"  # raw form: request JSON


def queue_stream(lane: str) -> str:
    """Stream that holds the tasks of one lane."""
    return QUEUE_PREFIX + lane


def results_stream(kind: str) -> str:
    """Default result stream of one task kind."""
    return RESULTS_PREFIX + kind


def done_key(task_id: str) -> str:
    """Exactly-once marker of one task id."""
    return DONE_PREFIX + task_id


def worker_key(name: str) -> str:
    """Heartbeat hash of one worker."""
    return WORKER_PREFIX + name
