"""Stock Celery producers: their kombu Redis list queues, moved into the lane streams.

A Celery app with `broker="redis://..."` that knows nothing of inferq sends with kombu's own Redis
transport: `send_task("inferq.triage", kwargs={"request": {...}}, queue="batch")` LPUSHes the JSON
message onto a list named after the queue (`batch`), and a message with a priority onto that name
followed by kombu's separator and the priority step (`batch\\x06\\x163`, `...6`, `...9`; step 0 is the
plain name and is served first). No worker reads lists, so a thread beside the fetch loop
(`worker.fetching.Fetcher`) calls `CeleryLists.bridge` every `celery_list_poll_ms`: one script
(`worker.keys.BRIDGE_LISTS`) pops the oldest messages and XADDs each to its lane stream in the same
atomic step, where they are read like any other entry (the envelope form, `worker.entries`). A worker
killed at any moment loses or doubles no message.

Which lists: `Settings.celery_lists`, queue name -> lane. By default the queues named after the lanes
(everything on them is inferq's; a task name inferq does not run is answered `unknown_task`) and
Celery's default queue `celery` by kind: only inferq tasks move, each to its kind's default lane,
and a message of another app at the head of one of its lists is left for its own worker (moving
from that list pauses until it is taken). A lane at its length limit (the worker's `*_QUEUE_LIMIT`) leaves the
messages in their list: the list is the backlog, and they move as the lane drains.

A message pushed onto a list waits at most `celery_list_poll_ms` (plus one round trip) before it is
in its lane; the XADD wakes a worker's blocked read at once. An idle worker costs Redis one short
script call per poll.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from contracts.wire import LANES, queue_stream
from worker.config import Settings
from worker.keys import BRIDGE_LISTS
from worker.logging import get_logger

log = get_logger("celery_lists")

# kombu's Redis transport defaults: the separator between a queue's name and its priority step, and
# the steps (a message's priority 0-9 goes to the step at or below it; step 0 is the plain name).
KOMBU_SEP: Final = "\x06\x16"
KOMBU_PRIORITY_STEPS: Final = (0, 3, 6, 9)
BY_KIND: Final = "by_kind"
# Why a queue stopped moving, as the script reports it.
STOPPED: Final = {0: None, 1: "lane_full", 2: "not_an_inferq_task", 3: "not_a_list"}
# A queue refused for the same reason is logged again at most this often.
WARN_EVERY_S: Final = 30.0


def priority_lists(queue: str) -> list[str]:
    """The Redis lists kombu keeps for one queue, in the order its consumers serve them."""
    return [queue if step == 0 else f"{queue}{KOMBU_SEP}{step}" for step in KOMBU_PRIORITY_STEPS]


@dataclass(frozen=True)
class Moved:
    """What one bridge call did for one queue."""

    queue: str
    moved: int
    stopped: str | None  # None: the queue was emptied or the call's budget spent
    left: int  # messages still in the queue's lists


def bridged_queues(settings: Settings) -> dict[str, str]:
    """Queue name -> lane (or `by_kind`) of the queues this worker moves: those into its own lanes, and
    those bridged by kind (an inferq task goes to its kind's lane whichever worker moves it)."""
    return {queue: lane for queue, lane in settings.celery_lists.items()
            if queue and (lane == BY_KIND or lane in settings.lanes)}


def own_client(client: redis.Redis) -> redis.Redis:
    """A client of the bridge's own: same server, credentials and TLS as `client`, its own connection,
    and no retries inside a call. A Redis that is gone fails the call at once (the bridge thread's
    back-off takes over), and a worker closing its client at a stop never waits on the bridge."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


class CeleryLists:
    """Moves stock Celery producers' messages from kombu's lists into lane streams, bounded per call."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._settings = settings
        self.queues = bridged_queues(settings)
        self._client = own_client(client) if self.queues else client
        self._script: Any = self._client.register_script(BRIDGE_LISTS) if self.queues else None
        self._keys = [queue_stream(lane) for lane in LANES]
        self._args: list[int] = [settings.lane(lane).queue_limit for lane in LANES]
        self._args += [settings.celery_list_batch, len(self.queues)]
        for queue, lane in self.queues.items():
            lists = priority_lists(queue)
            self._keys += lists
            self._args += [0 if lane == BY_KIND else LANES.index(lane) + 1, len(lists)]
        self._warned: dict[tuple[str, str], float] = {}

    @property
    def enabled(self) -> bool:
        return self._script is not None

    def bridge(self) -> int:
        """Move up to `celery_list_batch` messages into their lanes; returns how many moved.

        A Redis out of memory, or an ACL user that may not touch the lists, refuses the script whole
        (nothing popped): logged, at most every WARN_EVERY_S, and the messages wait in their lists.
        Other Redis errors reach the caller's back-off.
        """
        if self._script is None:
            return 0
        try:
            reply = self._script(keys=self._keys, args=self._args, client=self._client)
        except redis.OutOfMemoryError:
            self._warn("redis_out_of_memory", "*", queue=None, left=None)
            return 0
        except redis.exceptions.NoPermissionError:
            self._warn("no_permission", "*", queue=None, left=None)
            return 0
        moves = self.read(reply)
        total = sum(move.moved for move in moves)
        if total:
            log.debug("celery_list.bridged", moved={m.queue: m.moved for m in moves if m.moved}, count=total)
        for move in moves:
            if move.stopped is not None:
                self._warn(move.stopped, move.queue, queue=move.queue, left=move.left)
        return total

    def read(self, reply: Sequence[Any]) -> list[Moved]:
        """The script's flat reply, per queue."""
        values = [int(value) for value in reply]
        return [Moved(queue, values[3 * i], STOPPED.get(values[3 * i + 1], "unknown"), values[3 * i + 2])
                for i, queue in enumerate(self.queues)]

    def _warn(self, reason: str, key: str, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._warned.get((reason, key), -WARN_EVERY_S) < WARN_EVERY_S:
            return
        self._warned[(reason, key)] = now
        lane = self.queues.get(key)
        log.warning("celery_list.refused", reason=reason, lane=lane, **fields)
