"""The v1 wire vocabulary: task names, lanes, the stream keys producers and consumers name, entry fields.

Everything a producer or an integration in any language needs to address inferq over Redis, in one
place; `docs/wire-format.md` documents the same names. The worker builds its own keys (markers,
heartbeats, the consumer group) from these in `worker.keys`.
"""

from __future__ import annotations

import re
from typing import Final, Literal

Kind = Literal["triage", "fraud"]
KINDS: Final[tuple[Kind, ...]] = ("triage", "fraud")
Lane = Literal["realtime", "batch"]
LANES: Final[tuple[Lane, ...]] = ("realtime", "batch")
DEFAULT_LANE: Final[dict[Kind, Lane]] = {"fraud": "realtime", "triage": "batch"}

TASK_TRIAGE: Final = "inferq.triage"
TASK_FRAUD: Final = "inferq.fraud"
TASK_NAMES: Final[dict[Kind, str]] = {"triage": TASK_TRIAGE, "fraud": TASK_FRAUD}
KIND_BY_TASK: Final[dict[str, Kind]] = {name: kind for kind, name in TASK_NAMES.items()}

KEY_PREFIX: Final = "inferq:"
QUEUE_PREFIX: Final = KEY_PREFIX + "queue:"
RESULTS_PREFIX: Final = KEY_PREFIX + "results:"
DEADLETTER_STREAM: Final = KEY_PREFIX + "deadletter"
# Reply streams of inferq's own producer clients; each expires with the results it holds.
CLIENT_RESULTS_PREFIX: Final = RESULTS_PREFIX + "client:"

# Where a result may be sent: a stream key under the result prefix whose name part is short and free
# of spaces and braces.
REPLY_TO_PATTERN: Final = "^" + re.escape(RESULTS_PREFIX) + "[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_REPLY_TO: Final = re.compile(REPLY_TO_PATTERN)

# A task id becomes part of a key (`inferq:done:{id}`); a UUID has 36 characters, so 200 leaves
# room for any producer's own scheme while refusing ids that are really payloads.
MAX_TASK_ID_CHARS: Final = 200

# Fields of a lane stream entry: the Celery envelope form, or the raw form any language can XADD.
FIELD_PAYLOAD: Final = "payload"  # Celery envelope, JSON
FIELD_TASK: Final = "task"  # raw form: task name
FIELD_ID: Final = "id"  # raw form: task id (idempotency key)
FIELD_REQUEST: Final = "request"  # raw form: request JSON
FIELD_REPLY_TO: Final = "reply_to"  # either form, optional: where to answer even an unreadable request

# Fields of a result stream entry.
RESULT_TASK_ID: Final = "task_id"
RESULT_STATUS: Final = "status"
RESULT_MESSAGE: Final = "message"  # the whole result, JSON


def queue_stream(lane: str) -> str:
    """Stream that holds the tasks of one lane."""
    return QUEUE_PREFIX + lane


def results_stream(kind: str) -> str:
    """Default result stream of one task kind."""
    return RESULTS_PREFIX + kind


def valid_reply_to(stream: object) -> bool:
    """Whether `stream` is a result stream a task may name as its `reply_to`."""
    return isinstance(stream, str) and _REPLY_TO.fullmatch(stream) is not None  # "$" would allow a final "\n"
