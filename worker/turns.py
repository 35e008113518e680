"""Turns between preparing and the forward pass, and the inference thread's wait for a batch.

Why turns: preparing is Python work that holds the GIL, and the forward pass of a small model is
many short torch calls that each need it back. Run side by side in one process they convoyed: a
16 x 128-event fraud forward took 24 ms alone and 54 ms next to the preparer, and the worker's
throughput fell below running the two one after the other. Preparing a whole fetched group before
the next batch also gives the batch former the group to bucket by length. Where a GPU computes,
preparing overlaps the forward pass instead (`prepare_overlap`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from engine.batching import Formed, LaneScheduler
from worker.config import Settings
from worker.preparing import now_ms

T = TypeVar("T")


def prepare_overlaps(settings: Settings) -> bool:
    """Whether preparing runs during the forward pass: `auto` overlaps only where a GPU computes."""
    if settings.prepare_overlap != "auto":
        return settings.prepare_overlap == "always"
    from engine.device import pick_device

    return pick_device(settings.device).type == "cuda"


class Turns:
    """Guards the batch former and hands the CPU to preparing or computing, one at a time."""

    def __init__(self, settings: Settings) -> None:
        self.lock = threading.Condition()
        self._overlap = prepare_overlaps(settings)
        self._prepare_waiting = False
        self._preparing = False
        self._computing = False
        self._stopping = False

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Wait for the forward pass in progress to end; the next batch then waits for this group."""
        if not self._overlap:
            with self.lock:
                self._prepare_waiting = True
                while self._computing:
                    self.lock.wait(0.1)
                self._prepare_waiting = False
                self._preparing = True
        try:
            yield
        finally:
            with self.lock:
                self._preparing = False
                self.lock.notify_all()

    def next_batch(self, scheduler: LaneScheduler[T], expire: Callable[[T], None],
                   turned: Callable[[], None]) -> Formed[T] | None:
        """Wait for the batch former to release a lane batch; None once stopping.

        Tasks whose deadline passed while queued go to `expire`, never to a batch.
        """
        with self.lock:
            while not self._stopping:
                turned()
                if self._prepare_waiting or self._preparing:
                    self.lock.wait(0.1)
                    continue
                now = now_ms()
                for item in scheduler.pop_expired(now):
                    expire(item)
                formed = scheduler.next_batch(now)
                if formed is not None and formed.batch:
                    self._computing = True
                    return formed
                due = scheduler.next_due_ms()
                self.lock.wait(0.1 if due is None else min(0.1, max(0.0, (due - now) / 1000.0)))
        return None

    def end_compute(self) -> None:
        with self.lock:
            self._computing = False
            self.lock.notify_all()

    def stop(self) -> None:
        with self.lock:
            self._stopping = True
            self.lock.notify_all()
