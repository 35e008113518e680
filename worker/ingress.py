"""Task ingress over Redis Streams: fetch, take over, decode.

Lane streams (`inferq:queue:{lane}`) are read through one consumer group: XREADGROUP records an
entry as pending for its consumer in the same step that hands it out, so a task is never in
nobody's hands. An entry stays pending until `worker.outcomes` has written its outcome, and is then
acked and deleted in the same script, so XLEN of a lane counts waiting plus in-flight tasks. A dead
worker's pending entries are taken over with XAUTOCLAIM once idle for `claim_idle_ms`.

Entries are read as bytes and decoded field by field (`worker.entries`): no content of any entry can
raise out of here. An entry delivered more than `max_deliveries` times is flagged `poisoned` before
its request is decoded for work again, whatever stopped its earlier readers, and goes to the
dead-letter stream with only its identity and where to answer it read (`entries.identity_only`).

Stock Celery producers' kombu list queues are moved into the lanes by `worker.celery_lists`, which a
thread of the fetcher runs every `celery_list_poll_ms` (`Ingress.bridge_lists`).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Sequence
from typing import Any, Final

import redis
from redis.typing import KeyT, StreamIdT

from contracts.wire import LANES, Lane, queue_stream
from worker.celery_lists import CeleryLists
from worker.config import Settings
from worker.entries import Delivery, RawFields, decode_entry, identity_only, prior_deliveries
from worker.keys import CONSUMER_GROUP, Scripts, worker_key
from worker.logging import get_logger

log = get_logger("ingress")

# Longest heartbeat lifetime: a worker missing three beats (every 5 s at most) has gone.
HEARTBEAT_TTL_S: Final = 15


def heartbeat_ttl_s(settings: Settings) -> int:
    """Heartbeat lifetime: `claim_idle_ms` (whole seconds, 2 to HEARTBEAT_TTL_S).

    So a killed worker's heartbeat has expired by about when its tasks are taken over, and the
    consumer it leaves behind is removed from the group soon after (`remove_departed`).
    """
    return max(2, min(HEARTBEAT_TTL_S, math.ceil(settings.claim_idle_ms / 1000.0)))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def ensure_group(client: redis.Redis, lane: str) -> None:
    """Create the workers' consumer group on a lane stream (and the stream) unless it exists."""
    try:
        client.xgroup_create(queue_stream(lane), CONSUMER_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class Ingress:
    """Fetches and takes over lane entries for one consumer; every Delivery comes back decoded."""

    def __init__(self, client: redis.Redis, consumer_name: str, settings: Settings) -> None:
        self._client = client
        self.consumer_name = consumer_name
        self._settings = settings
        self._claim_cursor: dict[str, str] = {}
        self._scripts = Scripts(client)
        self.lists = CeleryLists(client, settings)

    def ensure_groups(self, lanes: Sequence[str] | None = None) -> None:
        for lane in lanes if lanes is not None else self._settings.lanes:
            ensure_group(self._client, lane)

    def fetch(self, lanes: Sequence[str], count: int, block_ms: int | None) -> list[Delivery]:
        """Up to `count` new entries from `lanes` (realtime first) in one XREADGROUP.

        Blocks up to `block_ms` when none is waiting. The entries are pending for this consumer
        from the moment they return.
        """
        ordered = [lane for lane in LANES if lane in lanes]
        if not ordered:
            return []
        streams: dict[KeyT, StreamIdT] = {queue_stream(lane): ">" for lane in ordered}
        try:
            reply = self._read(streams, count, block_ms)
        except redis.ResponseError as exc:
            if not any(sign in str(exc) for sign in ("NOGROUP", "UNBLOCKED")):
                raise
            # A lane stream was deleted (purged, or the database flushed), before the read or while
            # it was blocked on it (UNBLOCKED): recreate the groups and read again.
            self.ensure_groups(ordered)
            reply = self._read(streams, count, block_ms)
        by_stream = {_text(stream): entries for stream, entries in (reply or [])}
        return [
            self._delivery(lane, _text(entry_id), fields or {}, 1)
            for lane in ordered
            for entry_id, fields in by_stream.get(queue_stream(lane), [])
        ]

    def bridge_lists(self) -> int:
        """Move waiting stock Celery messages from their kombu lists into the lanes (bounded); how many."""
        return self.lists.bridge()

    def _read(self, streams: dict[KeyT, StreamIdT], count: int, block_ms: int | None) -> Any:
        return self._client.xreadgroup(CONSUMER_GROUP, self.consumer_name, streams, count=count, block=block_ms)

    def _delivery(self, lane: Lane, entry_id: str, fields: RawFields, times_delivered: int) -> Delivery:
        deliveries = times_delivered + prior_deliveries(fields)
        if deliveries > self._settings.max_deliveries:
            return identity_only(lane, entry_id, fields, deliveries)
        return decode_entry(lane, entry_id, fields, deliveries)

    def touch(self, deliveries: Sequence[Delivery]) -> int:
        """Restart the idle clock of tasks this worker still holds (one round trip).

        A worker whose tasks wait in its own batches for a long time calls this well within
        `claim_idle_ms`, so that live work is not taken over. Returns how many it still held.
        """
        by_lane: dict[str, list[str]] = {}
        for delivery in deliveries:
            by_lane.setdefault(delivery.lane, []).append(delivery.entry_id)
        if not by_lane:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for lane, entry_ids in by_lane.items():
            self._scripts.touch(pipe, lane=lane, consumer=self.consumer_name, entry_ids=entry_ids)
        return sum(int(kept) for kept in pipe.execute())

    def claim_stale(self, count: int, lanes: Sequence[str] | None = None) -> list[Delivery]:
        """Take over entries idle for `claim_idle_ms` in other consumers' hands (XAUTOCLAIM).

        Up to `count` per lane, realtime first. Delivery counts come from XPENDING after the claim,
        so they are Redis' own counters (the claim itself counted as one delivery).
        """
        wanted = lanes if lanes is not None else self._settings.lanes
        ordered = [lane for lane in LANES if lane in wanted]
        pipe = self._client.pipeline(transaction=False)
        for lane in ordered:
            pipe.xautoclaim(
                queue_stream(lane), CONSUMER_GROUP, self.consumer_name, self._settings.claim_idle_ms,
                start_id=self._claim_cursor.get(lane, "0-0"), count=count,
            )
        claimed = self._claimed(ordered, pipe.execute(raise_on_error=False))
        if claimed:
            log.warning("task.takeover", count=len(claimed), lanes=sorted({lane for lane, _, _ in claimed}))
        return self._with_counts(claimed)

    def _claimed(self, lanes: Sequence[Lane], replies: Sequence[Any]) -> list[tuple[Lane, str, RawFields]]:
        claimed: list[tuple[Lane, str, RawFields]] = []
        for lane, reply in zip(lanes, replies, strict=True):
            if isinstance(reply, Exception):
                if "NOGROUP" in str(reply):
                    continue  # the stream is gone, so are its pending entries
                raise reply
            self._claim_cursor[lane] = _text(reply[0])
            # Entries deleted meanwhile come back without fields; Redis dropped them from the pending list.
            claimed += [(lane, _text(entry_id), fields) for entry_id, fields in reply[1] if fields is not None]
        return claimed

    def _with_counts(self, claimed: Sequence[tuple[Lane, str, RawFields]]) -> list[Delivery]:
        if not claimed:
            return []
        pipe = self._client.pipeline(transaction=False)
        for lane, entry_id, _ in claimed:
            pipe.xpending_range(queue_stream(lane), CONSUMER_GROUP, entry_id, entry_id, 1)
        found: list[Delivery] = []
        for (lane, entry_id, fields), rows in zip(claimed, pipe.execute(), strict=True):
            # An entry acked by its first worker between the claim and this read needs no work.
            if rows:
                found.append(self._delivery(lane, entry_id, fields, int(rows[0]["times_delivered"])))
        return found

    def remove_departed(self, lanes: Sequence[str] | None = None) -> list[str]:
        """Drop consumers that hold nothing, went quiet past `claim_idle_ms` and have no heartbeat.

        A killed worker's consumer otherwise stays in the group for ever. Only consumers with no
        pending entries are removed (XGROUP DELCONSUMER would drop pending ones from the group); a
        worker that was only slow recreates its consumer with its next read.
        """
        removed: list[str] = []
        for lane in lanes if lanes is not None else self._settings.lanes:
            for consumer in self._consumers(lane):
                name = _text(consumer["name"])
                if name == self.consumer_name or int(consumer["pending"]) or not self._quiet(consumer):
                    continue
                if self._client.exists(worker_key(name)):
                    continue
                self._client.xgroup_delconsumer(queue_stream(lane), CONSUMER_GROUP, name)
                removed.append(name)
        if removed:
            log.info("consumers.removed", consumers=sorted(set(removed)))
        return removed

    def _consumers(self, lane: str) -> list[dict[str, Any]]:
        try:
            found: list[dict[str, Any]] = self._client.xinfo_consumers(queue_stream(lane), CONSUMER_GROUP)
        except redis.ResponseError:
            return []  # no stream or no group yet
        return found

    def _quiet(self, consumer: dict[str, Any]) -> bool:
        # `inactive` (Redis 7.2+) is the time since the last successful read, -1 for a consumer that
        # never read anything from this lane (a worker reads every lane at once, so most lanes of a
        # quiet one); `idle`, since its last attempt, exists everywhere.
        inactive = int(consumer.get("inactive", -1))
        quiet_ms = inactive if inactive >= 0 else int(consumer.get("idle", 0))
        return quiet_ms > self._settings.claim_idle_ms

    def beat(self, kinds: Sequence[str], ready: bool, started_ms: float) -> dict[str, int]:
        """Refresh this worker's heartbeat hash (a worker missing three beats has gone); lane depths."""
        key = worker_key(self.consumer_name)
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(key, mapping={
            "pid": str(os.getpid()), "host": socket.gethostname(), "kinds": ",".join(kinds),
            "lanes": ",".join(self._settings.lanes), "ready": "1" if ready else "0",
            "started_ms": str(int(started_ms)), "beat_ms": str(int(time.time() * 1000)),
        })
        pipe.expire(key, heartbeat_ttl_s(self._settings))
        for lane in LANES:
            pipe.xlen(queue_stream(lane))
        replies = pipe.execute()
        return {lane: int(depth) for lane, depth in zip(LANES, replies[2:], strict=True)}

    def leave(self) -> None:
        """Delete this worker's heartbeat at a graceful stop."""
        self._client.delete(worker_key(self.consumer_name))
