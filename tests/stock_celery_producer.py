"""A stock Celery producer: imports celery and the standard library only, nothing of inferq.

    python tests/stock_celery_producer.py redis://127.0.0.1:6379/7 < tasks.json

stdin holds a JSON list of tasks, each {"task": name, "request": {...}} with optional "queue"
(left out: Celery's default queue, `celery`) and "priority". Each is sent with the usual
`send_task(name, kwargs={"request": ...}, queue=..., priority=...)` through kombu's own Redis
transport (the broker URL's scheme is plain `redis://`). Prints one JSON line per task sent:
{"id": task id, "sent_ms": epoch ms just before the send}.
"""

from __future__ import annotations

import json
import sys
import time

from celery import Celery


def main() -> int:
    broker = sys.argv[1]
    tasks = json.load(sys.stdin)
    app = Celery("stock-producer", broker=broker, set_as_current=False)
    try:
        for task in tasks:
            options = {key: task[key] for key in ("queue", "priority") if key in task}
            sent_ms = time.time() * 1000.0
            result = app.send_task(task["task"], kwargs={"request": task["request"]}, **options)
            print(json.dumps({"id": result.id, "sent_ms": sent_ms}), flush=True)
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
