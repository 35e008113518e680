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
# Set on a copy put back at a graceful stop, so that its queue time and delivery count carry over.
FIELD_ORIGIN: Final = "origin"  # entry id of the first copy
FIELD_PRIOR_DELIVERIES: Final = "prior_deliveries"  # deliveries before the copy was made

# Fields of a result stream entry.
RESULT_TASK_ID: Final = "task_id"
RESULT_STATUS: Final = "status"
RESULT_MESSAGE: Final = "message"  # the whole result, JSON

# A task id becomes part of a key (`inferq:done:{id}`); a UUID has 36 characters, so 200 leaves
# room for any producer's own scheme while refusing ids that are really payloads.
MAX_TASK_ID_CHARS: Final = 200

# Where a result may be sent: the rule contracts' `reply_to` field enforces, kept here for the
# worker's own checks on entries it could not decode.
REPLY_TO_PATTERN: Final = r"^inferq:results:[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"

# Reply streams of producer clients; each expires with the results it holds.
CLIENT_RESULTS_PREFIX: Final = RESULTS_PREFIX + "client:"


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
