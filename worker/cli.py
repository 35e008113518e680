"""The `inferq` command: worker, submit, usage, schema, demo and the embedded server."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from worker import embedded
from worker.config import Settings


def redis_url_for(settings: Settings, *, announce: bool = True) -> str:
    """The configured Redis URL, or the embedded server's (started or reused)."""
    if settings.redis_url:
        return settings.redis_url
    server = embedded.start(settings.state_dir)
    if announce:
        how = "started" if server.started_here else "reusing"
        print(f"inferq: {how} embedded Valkey at {server.url} (state in {settings.state_dir})", file=sys.stderr)
    return server.url


def _cmd_worker(args: argparse.Namespace) -> int:
    from worker.app import run_worker

    overrides: dict[str, Any] = {}
    if args.kinds:
        overrides["kinds"] = args.kinds
    if args.lanes:
        overrides["lanes"] = args.lanes
    settings = Settings(**overrides)
    settings = settings.model_copy(update={"redis_url": redis_url_for(settings)})
    return run_worker(settings, name=args.name, loglevel=args.loglevel) or 0


def _triage_request_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    if not args.note:
        raise SystemExit("inferq submit triage: give --note or --file")
    request: dict[str, Any] = {"tenant": args.tenant, "note": args.note}
    if args.age is not None:
        request["age"] = args.age
    if args.sex:
        request["sex"] = args.sex
    if args.arrival_mode:
        request["arrival_mode"] = args.arrival_mode
    return request


def _cmd_submit(args: argparse.Namespace) -> int:
    from contracts import ContractError
    from worker.client import InferqClient
    from worker.errors import Overloaded

    if args.file:
        request = json.loads(Path(args.file).read_text())
    elif args.kind == "triage":
        request = _triage_request_from_flags(args)
    else:
        raise SystemExit("inferq submit fraud: give --file with a fraud request (see contracts/examples/)")
    settings = Settings()
    client = InferqClient(redis_url=redis_url_for(settings), settings=settings)
    try:
        task_id = client.submit(args.kind, request, task_id=args.task_id, lane=args.lane)
        print(f"inferq: submitted {args.kind} task {task_id}; waiting up to {args.timeout:g}s", file=sys.stderr)
        result = client.result(task_id, timeout_s=args.timeout)
    except ContractError as exc:
        print(f"inferq: refused: {exc.code.value}: {exc.message}", file=sys.stderr)
        return 2
    except Overloaded as exc:
        print(f"inferq: overloaded: {exc}", file=sys.stderr)
        return 3
    except TimeoutError:
        print("inferq: no result yet (is a worker running? `inferq worker`)", file=sys.stderr)
        return 4
    finally:
        client.close()
    print(result.model_dump_json(indent=2))
    return 0


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def _cmd_usage(args: argparse.Namespace) -> int:
    from worker.connection import redis_client
    from worker.usage import format_table, read_usage

    if args.days < 1:
        raise SystemExit("inferq usage: --days must be 1 or more")
    settings = Settings()
    until = args.until or datetime.now(UTC).date()
    since = args.since or until - timedelta(days=args.days - 1)
    if since > until:
        raise SystemExit(f"inferq usage: --since {since} is after --until {until}")
    client = redis_client(redis_url_for(settings, announce=False), settings, decode=True)
    try:
        rows = read_usage(client, since, until, settings.price_per_device_hour, args.tenant)
    finally:
        client.close()
    if args.json:
        print(json.dumps({
            "since": since.isoformat(), "until": until.isoformat(), "tenant": args.tenant,
            "price_per_device_hour": settings.price_per_device_hour, "rows": [row.as_json() for row in rows],
        }, indent=2))
    else:
        print(format_table(rows, settings.price_per_device_hour))
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from contracts.schema import write_schemas

    for path in write_schemas(Path(args.directory)):
        print(path)
    return 0


def _cmd_server(args: argparse.Namespace) -> int:
    settings = Settings()
    if args.action == "start":
        server = embedded.start(settings.state_dir)
        print(server.url)
    elif args.action == "stop":
        print("stopped" if embedded.stop(settings.state_dir) else "not running")
    else:
        found = embedded.running(settings.state_dir)
        print(found.url if found else "not running")
        return 0 if found else 1
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from worker.demo import run_demo

    return run_demo(Settings(), duration_s=args.duration, fraud_rate=args.fraud_rate, triage_rate=args.triage_rate)


def _add_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="run a worker (Celery, Redis Streams ingress, batched engine)")
    p.add_argument("--kinds", nargs="+", choices=["triage", "fraud"], help="task kinds to serve (default: all)")
    p.add_argument("--lanes", nargs="+", choices=["realtime", "batch"], help="lanes to consume (default: all)")
    p.add_argument("--name", help="worker name (default: inferq@<host>-<pid>)")
    p.add_argument("--loglevel", default="INFO", help="log level (default INFO)")
    p.set_defaults(func=_cmd_worker)


def _add_submit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("submit", help="submit one task and print its result when it arrives")
    p.add_argument("kind", choices=["triage", "fraud"])
    p.add_argument("--file", help="JSON file holding the request")
    p.add_argument("--note", help="triage: the note text")
    p.add_argument("--age", type=float, help="triage: age in years")
    p.add_argument("--sex", choices=["F", "M", "X", "U"], help="triage: sex")
    p.add_argument("--arrival-mode", help="triage: walk_in, ems, transfer, police or other")
    p.add_argument("--tenant", default="cli", help="tenant name (default: cli)")
    p.add_argument("--lane", choices=["realtime", "batch"], help="lane (default: realtime for fraud, batch for triage)")
    p.add_argument("--task-id", help="task id, the idempotency key (default: a new UUID)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the result (default 30)")
    p.set_defaults(func=_cmd_submit)


def _add_usage(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "usage", help="inferences, compute seconds and cost per 1,000 inferences, per day, tenant and kind",
        description="Usage metered by the workers (UTC days). The cost per 1,000 inferences prices the compute "
        "seconds at INFERQ_PRICE_PER_DEVICE_HOUR.",
    )
    p.add_argument("--since", type=_day, help="first day, YYYY-MM-DD (default: --days before --until)")
    p.add_argument("--until", type=_day, help="last day, YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--days", type=int, default=30, help="days shown when --since is not given (default 30)")
    p.add_argument("--tenant", help="this tenant only")
    p.add_argument("--json", action="store_true", help="JSON for machines instead of a table")
    p.set_defaults(func=_cmd_usage)


def _add_misc(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("schema", help="write the v1 JSON Schema files")
    p.add_argument("directory", nargs="?", default="schemas", help="output directory (default: ./schemas)")
    p.set_defaults(func=_cmd_schema)
    p = sub.add_parser("server", help="start, stop or show the embedded Valkey")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(func=_cmd_server)
    p = sub.add_parser("demo", help="run workers and producers on the embedded default, showing tasks and results")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic (default 60)")
    p.add_argument("--fraud-rate", type=float, default=40.0, help="fraud tasks per second (default 40)")
    p.add_argument("--triage-rate", type=float, default=8.0, help="triage tasks per second (default 8)")
    p.set_defaults(func=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `inferq` command."""
    parser = argparse.ArgumentParser(
        prog="inferq",
        description="Asynchronous inference over Redis: triage and fraud tasks, batched workers, typed results.",
        epilog="Settings come from INFERQ_* environment variables (see README). Without INFERQ_REDIS_URL, "
        "an embedded Valkey is started or reused.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_worker(sub)
    _add_submit(sub)
    _add_usage(sub)
    _add_misc(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `inferq` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
