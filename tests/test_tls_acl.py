"""TLS and ACL: a worker and every kind of producer through a TLS-only server with an inferq-only ACL user.

One server per module (`tls_fixtures`): TLS only, client certificates required, `default` disabled, the
user `inferq` limited to `~inferq:*` and `WORKER_ACL_COMMANDS`, and `inferq-admin` for the tests' own
look at the server (INFO commandstats, ACL LOG, ACL SETUSER). One worker process (`python -m worker.app`)
serves the module. Each wrong way in (a wrong password, a plain `redis://` URL, a certificate of another
CA, a user lacking a command) fails with an error that says what is wrong: at once for a client or a
producer; a worker logs it, retries with back-off, and loses no task.

Where no server binary here has TLS the server tests skip, saying so (`INFERQ_TEST_REQUIRE_TLS=1` makes
that a failure instead).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import kombu.pools
import pytest
import redis
from kombu.exceptions import OperationalError
from redis.exceptions import NoPermissionError
from tls_fixtures import ACL_USER, Pki, SecuredRedis, acl_commands_for, make_pki, start_tls_server

from contracts import TaskResultMessage, TaskStatus
from contracts.wire import RESULT_MESSAGE, TASK_FRAUD, TASK_TRIAGE, queue_stream, results_stream
from worker import embedded
from worker.client import AsyncInferqClient, InferqClient, raw_fields
from worker.config import Settings
from worker.connection import (
    CELERY_LIST_ACL_COMMANDS,
    CERT_HINT,
    TLS_HINT,
    WORKER_ACL_COMMANDS,
    WORKER_ACL_RULES,
    AsyncPlainConnection,
    AsyncTlsConnection,
    PlainConnection,
    TlsConnection,
    acl_rules,
    async_redis_client,
    connection_kwargs,
    redacted_url,
    redis_client,
    refused_for_good,
)
from worker.errors import ConfigurationError, EmbeddedServerError, RedisUnavailable
from worker.ingress import Ingress
from worker.keys import CONSUMER_GROUP
from worker.outcomes import Publisher
from worker.processes import WorkerProcess, spawn_worker
from worker.transport import producer_app

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
# A stream under inferq: that no worker reads (the module's worker reads the real lanes).
STREAM = "inferq:test:stream"
READY_TIMEOUT_S = 60.0  # model loading and warm-up on a small, shared machine
ANSWER_TIMEOUT_S = 30.0
# A refusal must come back at once; an outage is retried for seconds (INFERQ_CLIENT_RETRY_S).
PROMPT_S = 2.0
# Commands every user may run whatever its rules (Redis and Valkey check no ACL for them).
ALWAYS_ALLOWED = {"hello", "auth"}


# ---------------------------------------------------------------------------------------------
# The module's server and worker


@pytest.fixture(scope="module")
def tls_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates for one test module."""
    if shutil.which("openssl") is None:
        _unavailable("openssl is not installed, so no test certificates can be made")
    return make_pki(tmp_path_factory.mktemp("pki"))


def _unavailable(reason: str) -> None:
    if os.environ.get("INFERQ_TEST_REQUIRE_TLS"):
        pytest.fail(f"INFERQ_TEST_REQUIRE_TLS is set, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def secured_redis(tls_pki: Pki) -> Iterator[SecuredRedis]:
    """A TLS-only server with the inferq and inferq-admin users, for one test module; stopped afterwards."""
    # A short state directory: the server's probe socket lives in it (a unix socket path holds ~100 bytes).
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"inferq-tls-{uuid.uuid4().hex[:8]}"
    secured, why_not = start_tls_server(scratch, tls_pki)
    if secured is None:
        shutil.rmtree(scratch, ignore_errors=True)
        _unavailable(f"no server binary here has TLS ({why_not}); set INFERQ_TEST_TLS_SERVER to one that has")
    assert secured is not None
    try:
        yield secured
    finally:
        embedded.stop(secured.state_dir)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(secured_redis: SecuredRedis) -> Iterator[redis.Redis]:
    built = secured_redis.admin()
    yield built
    built.close()


@pytest.fixture
def client(secured_redis: SecuredRedis) -> Iterator[redis.Redis]:
    """A client as the worker builds it, as `inferq`; deletes the keys it made."""
    built = redis_client(secured_redis.url, secured_redis.settings(), decode=True)
    try:
        yield built
    finally:
        built.delete(STREAM, "inferq:test:marker", "inferq:test:hash", SCALED)
        built.close()


@pytest.fixture(scope="module")
def worker(secured_redis: SecuredRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """`python -m worker.app` configured by INFERQ_* variables alone: rediss:// URL, CA, client certificate, user."""
    # Remote control and events use Celery's own keys and channels, and stock Celery producers' kombu
    # lists are keys of their own, all of which this user may not touch.
    env = {**secured_redis.environ(), "INFERQ_DEVICE": "cpu", "INFERQ_LOG_LEVEL": "WARNING",
           "INFERQ_REMOTE_CONTROL": "false", "INFERQ_CELERY_LISTS": "{}"}
    process = spawn_worker(secured_redis.url, "tls-worker", tmp_path_factory.mktemp("workers"), env)
    try:
        process.wait_ready(READY_TIMEOUT_S)
        yield process
    finally:
        process.stop(timeout_s=30.0)


@pytest.fixture
def restricted_user(secured_redis: SecuredRedis, admin: redis.Redis) -> Iterator[Callable[[str], Settings]]:
    """Makes users with WORKER_ACL_COMMANDS less one command; returns settings that log in as each."""
    made: list[str] = []

    def make(missing: str) -> Settings:
        name = f"inferq-no-{missing.replace('|', '-')}"
        commands = [command for command in acl_commands_for(secured_redis.binary) if command != missing]
        admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{secured_redis.password}",
                              *acl_rules(commands).split())
        made.append(name)
        return secured_redis.settings(redis_username=name)

    yield make
    for name in made:
        admin.execute_command("ACL", "DELUSER", name)


# ---------------------------------------------------------------------------------------------
# Requests, and the producers that send them


def _rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fraud_request(i: int) -> dict[str, Any]:
    def event(amount: float, ago_s: float) -> dict[str, Any]:
        return {"amount": amount, "currency": "EUR", "mcc": "5411", "channel": "card_present",
                "country": "DE", "timestamp": _rfc3339(time.time() - ago_s), "device_id": "pos-1"}

    return {"tenant": "bank", "transaction": event(15.0 + 40 * i, 60),
            "history": [event(20.0 + k, 86_400 * (10 - k)) for k in range(6)]}


def _triage_request(i: int) -> dict[str, Any]:
    notes = ["c/o crushing chest pain radiating to left arm x30 min, diaphoretic",
             "pt states sore throat x3 days, no fever, eating and drinking"]
    return {"tenant": "ed", "note": notes[i % len(notes)], "age": 30 + i}


def _through_the_client(settings: Settings) -> dict[str, TaskResultMessage]:
    with InferqClient(settings.redis_url, settings) as producer:
        ids = producer.submit_many("triage", [_triage_request(i) for i in range(3)])
        ids += producer.submit_many("fraud", [_fraud_request(i) for i in range(3)])
        found = producer.wait(ids, timeout_s=ANSWER_TIMEOUT_S)
    assert set(found) == set(ids), "every task is answered"
    return found


def _through_the_async_client(settings: Settings) -> TaskResultMessage:
    async def one() -> TaskResultMessage:
        async with AsyncInferqClient(settings.redis_url, settings) as producer:
            task_id = await producer.submit("fraud", _fraud_request(7))
            return await producer.result(task_id, timeout_s=ANSWER_TIMEOUT_S)

    return asyncio.run(one())


def _through_celery(settings: Settings, reader: redis.Redis) -> dict[str, TaskResultMessage]:
    ids = {"triage": f"celery-t-{uuid.uuid4().hex[:8]}", "fraud": f"celery-f-{uuid.uuid4().hex[:8]}"}
    producer = producer_app(settings.redis_url, settings)
    try:
        producer.send_task(TASK_TRIAGE, kwargs={"request": _triage_request(1)}, task_id=ids["triage"], queue="batch")
        producer.send_task(TASK_FRAUD, kwargs={"request": _fraud_request(1)}, task_id=ids["fraud"], queue="realtime")
    finally:
        producer.close()
    return {kind: _result_on(reader, results_stream(kind), task_id) for kind, task_id in ids.items()}


# The lane-limit script of docs/wire-format.md, as a producer in another language sends it.
_WIRE_EVAL = """if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))"""


def _through_raw_producers(reader: redis.Redis) -> dict[str, TaskResultMessage]:
    """XADD and EVAL as docs/wire-format.md shows them; results read as an integration does (a group)."""
    stream, group = f"inferq:results:tls-{uuid.uuid4().hex[:8]}", "tls-integration"
    reader.xgroup_create(stream, group, id="0", mkstream=True)
    request = {**_triage_request(0), "reply_to": stream}
    by_xadd, by_eval = f"raw-x-{uuid.uuid4().hex[:8]}", f"raw-e-{uuid.uuid4().hex[:8]}"
    reader.xadd(queue_stream("batch"), raw_fields(TASK_TRIAGE, by_xadd, _json(request)))
    fields = raw_fields(TASK_TRIAGE, by_eval, _json(request))
    assert reader.eval(_WIRE_EVAL, 1, queue_stream("batch"), 200_000, *(p for pair in fields.items() for p in pair))
    found: dict[str, TaskResultMessage] = {}
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while len(found) < 2 and time.monotonic() < deadline:
        reply = cast(list[Any], reader.xreadgroup(group, "replica-1", {stream: ">"}, count=10, block=500))
        for _, entries in reply or []:
            for entry_id, entry in entries:
                message = TaskResultMessage.model_validate_json(entry[RESULT_MESSAGE])
                found[message.task_id] = message
                reader.xack(stream, group, entry_id)
    reader.xautoclaim(stream, group, "replica-1", 30_000, "0-0", count=100)  # what a replica does at start-up
    reader.delete(stream)
    assert set(found) == {by_xadd, by_eval}
    return found


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body)


def _result_on(reader: redis.Redis, stream: str, task_id: str) -> TaskResultMessage:
    """The result of `task_id` on a shared result stream, read with XREAD (what the inferq user may)."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while time.monotonic() < deadline:
        reply = cast(list[Any], reader.xread({stream: "0"}, count=10_000))
        for _, entries in reply or []:
            for _, entry in entries:
                message = TaskResultMessage.model_validate_json(entry[RESULT_MESSAGE])
                if message.task_id == task_id:
                    return message
        time.sleep(0.05)
    raise AssertionError(f"no result for {task_id} on {stream}")


def _all_ok(messages: dict[str, TaskResultMessage]) -> None:
    for task_id, message in messages.items():
        assert message.status is TaskStatus.OK, (task_id, message)


# ---------------------------------------------------------------------------------------------
# A worker and the producers, through TLS and the ACL user


def test_a_worker_answers_the_python_clients(worker: WorkerProcess, secured_redis: SecuredRedis) -> None:
    found = _through_the_client(secured_redis.settings())
    _all_ok(found)
    assert {message.kind for message in found.values()} == {"triage", "fraud"}
    assert _through_the_async_client(secured_redis.settings()).status is TaskStatus.OK


def test_a_worker_answers_a_celery_producer(
    worker: WorkerProcess, secured_redis: SecuredRedis, client: redis.Redis
) -> None:
    found = _through_celery(secured_redis.settings(), client)
    _all_ok(found)
    assert {kind: message.kind for kind, message in found.items()} == {"triage": "triage", "fraud": "fraud"}


def test_a_worker_answers_raw_producers_and_an_integration_reads_its_results(
    worker: WorkerProcess, client: redis.Redis
) -> None:
    _all_ok(_through_raw_producers(client))


def _exercise_rare_worker_paths(secured: SecuredRedis) -> None:
    """What a worker does only now and then, each path once, in database 1 (no worker there competes).

    Take-over and its delivery counts (XAUTOCLAIM, XPENDING), keeping held tasks (TOUCH: XPENDING,
    XCLAIM), dropping departed consumers (XINFO CONSUMERS, EXISTS, XGROUP DELCONSUMER), putting back
    unstarted tasks (REQUEUE), heartbeat and leaving; and the Celery transport's queue management
    (EXISTS, XLEN, XTRIM).
    """
    settings = secured.settings(redis_url=secured.url_of_db(1), claim_idle_ms=100)
    db1 = redis_client(secured.url_of_db(1), settings)  # SELECT 1
    try:
        assert db1.ping()
        departed, probe = Ingress(db1, "acl-departed", settings), Ingress(db1, "acl-probe", settings)
        probe.ensure_groups(["batch"])
        for i in range(2):
            db1.xadd(queue_stream("batch"), raw_fields(TASK_TRIAGE, f"rare-{i}", _json(_triage_request(i))))
        assert len(departed.fetch(["batch"], count=10, block_ms=None)) == 2
        time.sleep(0.15)  # idle longer than claim_idle_ms
        taken = probe.claim_stale(10, ["batch"])
        assert len(taken) == 2 and probe.touch(taken) == 2
        assert probe.remove_departed(["batch"]) == ["acl-departed"]
        publisher = Publisher(db1, settings)
        assert publisher.already_answered([d.task_id or "" for d in taken]) == set()
        assert len(publisher.requeue(taken)) == 2
        probe.beat(["triage"], True, time.time() * 1000.0)
        probe.leave()
    finally:
        db1.close()
    transport = producer_app(secured.url_of_db(1), settings)
    try:
        with transport.connection_for_write() as connection:
            channel = connection.default_channel
            assert channel.queue_declare(queue="batch", passive=True).message_count == 2  # EXISTS, XLEN
            assert channel.queue_purge("batch") == 2  # XTRIM (its DEL is the clients' own)
    finally:
        transport.close()


def test_the_acl_list_is_exactly_what_a_worker_and_its_producers_send(
    worker: WorkerProcess, secured_redis: SecuredRedis, admin: redis.Redis, client: redis.Redis
) -> None:
    # The server counts every command it executed, those inside scripts included; ACL LOG keeps refusals.
    admin.config_resetstat()
    admin.acl_log_reset()
    settings = secured_redis.settings()
    _through_the_client(settings)
    _through_the_async_client(settings)
    _through_celery(settings, client)
    _through_raw_producers(client)
    _exercise_rare_worker_paths(secured_redis)
    time.sleep(1.0)  # the worker's background loops (take-over, heartbeat) within the counted window

    refusals = [entry for entry in admin.acl_log(count=100) if entry["username"] != "inferq-admin"]
    stats = cast(dict[str, dict[str, Any]], admin.info("commandstats"))
    executed = {name.removeprefix("cmdstat_") for name, stat in stats.items() if int(stat["calls"]) > 0}
    sent = executed - {"config|resetstat", "acl|log"} - ALWAYS_ALLOWED  # the administrator's and anyone's
    assert not refusals, [(entry["context"], entry["object"], entry["username"]) for entry in refusals]
    expected = set(acl_commands_for(secured_redis.binary))
    assert sent == expected, f"sent but not allowed: {sorted(sent - expected)}; allowed, never sent: " \
                             f"{sorted(expected - sent)}"


# ---------------------------------------------------------------------------------------------
# Each wrong way in fails at once and says why


def _refusal(settings: Settings, url: str) -> redis.ConnectionError:
    candidate = redis_client(url, settings, socket_timeout=5.0)
    started = time.monotonic()
    try:
        with pytest.raises(redis.ConnectionError) as raised:
            candidate.ping()
    finally:
        candidate.close()
    assert time.monotonic() - started < PROMPT_S
    return raised.value


def _celery_refusal(settings: Settings, url: str) -> OperationalError:
    kombu.pools.reset()  # kombu pools connections by a key that leaves the password out: see the xfail below
    producer = producer_app(url, settings)
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError) as raised:
            producer.send_task(TASK_FRAUD, kwargs={"request": _fraud_request(0)}, queue="realtime")
    finally:
        producer.close()
    assert time.monotonic() - started < PROMPT_S
    return raised.value


def test_a_wrong_password_or_none_is_refused(secured_redis: SecuredRedis) -> None:
    wrong = secured_redis.settings(redis_password="wrong")
    refused = _refusal(wrong, secured_redis.url)
    assert isinstance(refused, redis.AuthenticationError) and refused_for_good(refused)
    assert "invalid username-password pair" in str(refused)
    assert "invalid username-password pair" in str(_celery_refusal(wrong, secured_redis.url))
    # `default` is disabled: a connection without a user, or as default, may do nothing at all.
    for settings in (secured_redis.settings(redis_username=None, redis_password=None),
                     secured_redis.settings(redis_username="default", redis_password="")):
        assert isinstance(_refusal(settings, secured_redis.url), redis.AuthenticationError)


def test_the_default_user_is_disabled(admin: redis.Redis) -> None:
    default = admin.acl_getuser("default")
    assert "off" in default["flags"] and not default["enabled"]


def test_a_plain_url_to_the_tls_port_is_refused(secured_redis: SecuredRedis) -> None:
    plain_url = secured_redis.url.replace("rediss://", "redis://")
    # With the TLS files still set, nothing is sent: the password would go out in clear text.
    with pytest.raises(ConfigurationError, match="not a rediss:// URL"):
        redis_client(plain_url, secured_redis.settings())
    plain = secured_redis.settings(tls_ca_file=None, tls_cert_file=None, tls_key_file=None)
    assert TLS_HINT in str(_refusal(plain, plain_url))
    assert TLS_HINT in str(_celery_refusal(plain, plain_url))


def test_a_server_certificate_of_another_ca_is_refused(secured_redis: SecuredRedis) -> None:
    trusting_another = secured_redis.settings(tls_ca_file=secured_redis.pki.other_ca_cert)
    refused = _refusal(trusting_another, secured_redis.url)
    assert "certificate verify failed" in str(refused) and refused_for_good(refused)
    assert "certificate verify failed" in str(_celery_refusal(trusting_another, secured_redis.url))


def test_a_client_certificate_of_another_ca_or_none_is_refused(secured_redis: SecuredRedis) -> None:
    pki = secured_redis.pki
    foreign = secured_redis.settings(tls_cert_file=pki.foreign_client_cert, tls_key_file=pki.foreign_client_key)
    # TLS 1.3: the server checks the client certificate after the client's side of the handshake, so the
    # refusal arrives as an alert or a closed connection at the first command; either way the error says so.
    assert CERT_HINT in str(_refusal(foreign, secured_redis.url))
    assert CERT_HINT in str(_refusal(secured_redis.settings(tls_cert_file=None, tls_key_file=None), secured_redis.url))


def test_the_host_name_is_checked(secured_redis: SecuredRedis) -> None:
    # The certificate names 127.0.0.1 only; localhost reaches the same server.
    by_name = secured_redis.url.replace("127.0.0.1", "localhost")
    assert "Hostname mismatch" in str(_refusal(secured_redis.settings(), by_name))
    unchecked = redis_client(by_name, secured_redis.settings(tls_check_hostname=False))
    try:
        assert unchecked.ping()
    finally:
        unchecked.close()


def test_the_credentials_in_the_url_win(secured_redis: SecuredRedis) -> None:
    url = secured_redis.url.replace("rediss://", f"rediss://{secured_redis.username}:{secured_redis.password}@")
    settings = secured_redis.settings(redis_username="nobody", redis_password="wrong")
    built = redis_client(url, settings)
    try:
        assert built.ping()
    finally:
        built.close()


@pytest.mark.parametrize("missing", ["evalsha", "xread"])
def test_a_producer_whose_user_lacks_a_command_is_told_which(
    worker: WorkerProcess, secured_redis: SecuredRedis, restricted_user: Callable[[str], Settings], missing: str
) -> None:
    settings = restricted_user(missing)
    started = time.monotonic()
    with pytest.raises(NoPermissionError, match=f"'{missing}' command"), InferqClient(settings.redis_url,
                                                                                       settings) as producer:
        task_id = producer.submit("fraud", _fraud_request(0))
        producer.wait([task_id], timeout_s=ANSWER_TIMEOUT_S)
    assert time.monotonic() - started < PROMPT_S


def _log_shows(process: WorkerProcess, pattern: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if re.search(pattern, process.log_tail(20_000)):
            return True
        time.sleep(0.1)
    return False


def test_a_worker_whose_user_lacks_a_script_command_says_so_and_loses_nothing(
    worker: WorkerProcess, secured_redis: SecuredRedis, admin: redis.Redis
) -> None:
    # TYPE runs only inside the FINISH script; Redis names the script in its refusal, ACL LOG the command.
    admin.acl_log_reset()
    admin.execute_command("ACL", "SETUSER", ACL_USER, "-type")
    try:
        with InferqClient(secured_redis.url, secured_redis.settings()) as producer:
            task_id = producer.submit("fraud", _fraud_request(3))
            assert _log_shows(worker, r"can't run this command.*publish\.redis_error", ANSWER_TIMEOUT_S), \
                worker.log_tail()
            logged = [(e["context"], e["object"]) for e in admin.acl_log(count=100) if e["username"] == ACL_USER]
            assert ("lua", "type") in logged
            assert producer.wait([task_id], timeout_s=0) == {}
            admin.execute_command("ACL", "SETUSER", ACL_USER, "+type")
            assert producer.result(task_id, timeout_s=ANSWER_TIMEOUT_S).status is TaskStatus.OK
    finally:
        admin.execute_command("ACL", "SETUSER", ACL_USER, "+type")


def test_a_worker_with_a_wrong_password_says_so_and_never_reports_ready(
    secured_redis: SecuredRedis, tmp_path: Path
) -> None:
    env = {**secured_redis.environ(), "INFERQ_REDIS_PASSWORD": "wrong", "INFERQ_KINDS": '["fraud"]',
           "INFERQ_DEVICE": "cpu", "INFERQ_LOG_LEVEL": "WARNING"}
    refused = spawn_worker(secured_redis.url, "tls-refused", tmp_path, env)
    try:
        assert _log_shows(refused, r"invalid username-password pair.*fetch\.redis_error", READY_TIMEOUT_S), \
            refused.log_tail()
        assert not refused.ready()
        assert "wrong" not in refused.log_tail(20_000)  # the password never reaches the log
    finally:
        refused.stop(timeout_s=15.0)


# ---------------------------------------------------------------------------------------------
# Refusals: a producer is told at once, never retried


def test_the_python_client_does_not_retry_a_refusal(secured_redis: SecuredRedis) -> None:
    wrong = secured_redis.settings(redis_password="wrong", client_retry_s=1.0)
    started = time.monotonic()
    with pytest.raises(redis.AuthenticationError), InferqClient(wrong.redis_url, wrong) as producer:
        producer.submit("fraud", _fraud_request(0))
    assert time.monotonic() - started < 0.5


def test_producer_apps_with_other_credentials_do_not_share_a_connection(
    worker: WorkerProcess, secured_redis: SecuredRedis
) -> None:
    kombu.pools.reset()
    good = producer_app(secured_redis.url, secured_redis.settings())
    try:
        good.send_task(TASK_FRAUD, kwargs={"request": _fraud_request(0)}, queue="realtime")
    finally:
        good.close()
    wrong = producer_app(secured_redis.url, secured_redis.settings(redis_password="wrong"))
    try:
        with pytest.raises(OperationalError):
            wrong.send_task(TASK_FRAUD, kwargs={"request": _fraud_request(0)}, queue="realtime")
    finally:
        wrong.close()
        kombu.pools.reset()


# ---------------------------------------------------------------------------------------------
# What the inferq user may and may not do


def test_ping_and_xadd_over_tls(client: redis.Redis) -> None:
    assert client.ping()
    entry_id = client.xadd(STREAM, {"task": "inferq.triage", "id": "t-1", "request": "{}"})
    assert re.fullmatch(r"\d+-\d+", entry_id)
    assert client.xlen(STREAM) == 1


def test_keys_outside_inferq_are_refused(client: redis.Redis) -> None:
    with pytest.raises(NoPermissionError):
        client.set("other-app:key", "x")
    with pytest.raises(NoPermissionError):
        client.xadd("celery", {"payload": "{}"})
    with pytest.raises(redis.ResponseError, match="no permissions to access one of the keys"):
        client.eval("return redis.call('SET', KEYS[1], 'x')", 1, "other-app:key")


@pytest.mark.parametrize(
    "command",
    [("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("ACL", "LIST"), ("INFO",), ("CLIENT", "LIST"),
     ("XRANGE", STREAM, "-", "+"), ("XGROUP", "DESTROY", STREAM, CONSUMER_GROUP), ("XINFO", "STREAM", STREAM)],
)
def test_commands_outside_the_list_are_refused(client: redis.Redis, command: tuple[str, ...]) -> None:
    with pytest.raises(NoPermissionError):
        client.execute_command(*command)


def test_worker_and_producer_commands_are_allowed(client: redis.Redis) -> None:
    client.xgroup_create(STREAM, "inferq-workers", id="0", mkstream=True)
    entry_id = client.xadd(STREAM, {"task": "inferq.fraud", "id": "t-2", "request": "{}"})
    [[_, [(read_id, _)]]] = client.xreadgroup("inferq-workers", "w-1", {STREAM: ">"}, count=10)
    assert read_id == entry_id
    assert client.xpending(STREAM, "inferq-workers")["pending"] == 1
    assert client.xclaim(STREAM, "inferq-workers", "w-2", 0, [entry_id], justid=True) == [entry_id]
    assert client.xautoclaim(STREAM, "inferq-workers", "w-1", 0, justid=True) == [entry_id]
    assert {c["name"] for c in client.xinfo_consumers(STREAM, "inferq-workers")} == {"w-1", "w-2"}
    assert client.xgroup_delconsumer(STREAM, "inferq-workers", "w-2") == 0
    assert client.xread({STREAM: "0"})
    sha = client.script_load(
        "redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', 60) "
        "return redis.call('XACK', KEYS[2], 'inferq-workers', ARGV[2])"
    )
    assert client.script_exists(sha) == [True]
    assert client.evalsha(sha, 2, "inferq:test:marker", STREAM, "1", entry_id) == 1
    assert client.mget("inferq:test:marker", "inferq:test:none") == ["1", None]
    assert client.type("inferq:test:marker") == "string"
    assert client.xdel(STREAM, entry_id) == 1 and client.xtrim(STREAM, maxlen=0) == 0
    client.hset("inferq:test:hash", mapping={"seen": "1"})
    assert client.expire("inferq:test:hash", 60) and client.exists("inferq:test:hash") == 1


def test_async_client(secured_redis: SecuredRedis) -> None:
    async def round_trip() -> int:
        built = async_redis_client(secured_redis.url, secured_redis.settings(), decode=True)
        try:
            assert await built.ping()
            await built.xadd("inferq:queue:realtime", {"task": "inferq.fraud", "id": "a-1", "request": "{}"})
            length: int = await built.xlen("inferq:queue:realtime")
            await built.delete("inferq:queue:realtime")
            return length
        finally:
            await built.aclose()

    assert asyncio.run(round_trip()) == 1


def test_reusing_the_server_keeps_its_security(secured_redis: SecuredRedis) -> None:
    pki = secured_redis.pki
    tls = embedded.TlsFiles(cert_file=pki.server_cert, key_file=pki.server_key, ca_file=pki.ca_cert)
    started = time.monotonic()
    again = embedded.start(secured_redis.state_dir, tls=tls)
    assert (again.url, again.started_here) == (secured_redis.url, False)
    with pytest.raises(EmbeddedServerError, match="TLS"):
        embedded.start(secured_redis.state_dir)
    assert time.monotonic() - started < PROMPT_S  # probing a secured server takes no login retries


SCALER_RULES = "%R~inferq:queue:* resetchannels -@all +xpending +xinfo|groups +xlen"
SCALED = "inferq:queue:test-scaler"  # matches the scaler's key pattern; not a lane, so no worker reads it


def test_the_documented_scaler_user_may_read_the_lanes_only(
    secured_redis: SecuredRedis, admin: redis.Redis, client: redis.Redis
) -> None:
    assert SCALER_RULES in (ROOT / "docs" / "operations.md").read_text()
    client.xgroup_create(SCALED, CONSUMER_GROUP, id="0", mkstream=True)
    admin.execute_command("ACL", "SETUSER", "inferq-scaler", "reset", "on", f">{secured_redis.password}",
                          *SCALER_RULES.split())
    scaler = redis_client(secured_redis.url, secured_redis.settings(redis_username="inferq-scaler"), decode=True)
    try:
        assert scaler.xpending(SCALED, CONSUMER_GROUP)["pending"] == 0  # pendingEntriesCount
        assert scaler.xinfo_groups(SCALED)[0]["name"] == CONSUMER_GROUP  # lagCount
        assert scaler.xlen(SCALED) == 0  # streamLength
        with pytest.raises(NoPermissionError):
            scaler.xadd(SCALED, {"task": "inferq.triage"})
        with pytest.raises(NoPermissionError):
            scaler.xlen("inferq:results:triage")
    finally:
        scaler.close()
        admin.execute_command("ACL", "DELUSER", "inferq-scaler")


# ---------------------------------------------------------------------------------------------
# Without a server


def test_connection_kwargs_for_tls_and_acl() -> None:
    settings = Settings(
        tls_ca_file=Path("/ca.pem"), tls_cert_file=Path("/c.pem"), tls_key_file=Path("/k.pem"),
        redis_username="inferq", redis_password="s3cret",
    )  # fmt: skip
    kwargs = connection_kwargs(settings, "rediss://redis.internal:6380/0")
    assert kwargs == {
        "health_check_interval": 30,
        "username": "inferq",
        "password": "s3cret",
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": "/ca.pem",
        "ssl_certfile": "/c.pem",
        "ssl_keyfile": "/k.pem",
    }
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


def test_connection_kwargs_for_a_plain_url() -> None:
    assert connection_kwargs(Settings(), "redis://127.0.0.1:6379/0") == {"health_check_interval": 30}
    assert connection_kwargs(Settings(redis_url="redis://h:1/0")) == {"health_check_interval": 30}


@pytest.mark.parametrize(
    "overrides",
    [{"tls_ca_file": Path("/ca.pem")}, {"tls_cert_file": Path("/c.pem"), "tls_key_file": Path("/k.pem")}],
)
def test_tls_settings_with_a_plain_url_are_refused(overrides: dict[str, Path]) -> None:
    with pytest.raises(ConfigurationError, match="rediss://") as raised:
        connection_kwargs(Settings.model_validate(overrides), "redis://user:pw@host:6379/0")
    assert "pw" not in str(raised.value)


def test_client_certificate_needs_its_key() -> None:
    with pytest.raises(ConfigurationError):
        connection_kwargs(Settings(tls_cert_file=Path("/c.pem")), "rediss://host:6380/0")


def test_clients_use_the_hinting_connections() -> None:
    def pool_class(built: Any) -> type:
        return cast(type, built.connection_pool.connection_class)

    assert pool_class(redis_client("redis://h:1/0", Settings())) is PlainConnection
    assert pool_class(redis_client("rediss://h:1/0", Settings())) is TlsConnection
    assert pool_class(async_redis_client("redis://h:1/0", Settings())) is AsyncPlainConnection
    assert pool_class(async_redis_client("rediss://h:1/0", Settings())) is AsyncTlsConnection
    assert pool_class(redis_client("unix:///tmp/r.sock", Settings())) is redis.UnixDomainSocketConnection


def test_refused_for_good_tells_refusals_from_outages() -> None:
    import ssl

    def caused_by(cause: BaseException) -> redis.ConnectionError:
        try:
            try:
                raise cause
            except Exception as inner:
                raise redis.ConnectionError("Error 1 connecting") from inner
        except redis.ConnectionError as outer:
            return outer

    assert refused_for_good(redis.AuthenticationError("invalid username-password pair"))
    assert refused_for_good(NoPermissionError("no permissions to run the 'xadd' command"))
    assert refused_for_good(redis.ResponseError("The user executing the script can't run this command"))
    assert refused_for_good(caused_by(ssl.SSLCertVerificationError("certificate verify failed")))
    assert not refused_for_good(RedisUnavailable("gave up", ()))
    assert not refused_for_good(redis.ConnectionError("Connection refused"))
    assert not refused_for_good(redis.TimeoutError("Timeout reading from socket"))
    assert not refused_for_good(caused_by(ConnectionResetError(104, "Connection reset by peer")))
    assert not refused_for_good(redis.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"))


def test_redacted_url() -> None:
    assert redacted_url("rediss://inferq:s3cret@redis:6380/0") == "rediss://inferq:***@redis:6380/0"
    assert redacted_url("redis://:s3cret@redis/0") == "redis://:***@redis/0"
    assert redacted_url("redis://redis:6379/0") == "redis://redis:6379/0"


# ---------------------------------------------------------------------------------------------
# The ACL command list: complete for the scripts, and documented as it is


def test_every_script_command_is_in_the_acl_list() -> None:
    used = set()
    for path in (ROOT / "worker").glob("*.py"):
        used |= {name.lower() for name in re.findall(r"redis\.p?call\(\s*['\"](\w+)['\"]", path.read_text())}
    allowed = set(WORKER_ACL_COMMANDS) | set(CELERY_LIST_ACL_COMMANDS)  # the latter granted separately
    assert used and used <= allowed, sorted(used - allowed)


def test_operations_doc_shows_the_rules() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    assert WORKER_ACL_RULES in text
    assert acl_rules([c for c in WORKER_ACL_COMMANDS if c != "client|setinfo"]) in text


# ---------------------------------------------------------------------------------------------
# The embedded (bundled) Valkey: ACL users yes, TLS only if its build has it


def test_embedded_valkey_with_an_acl_user(tmp_path: Path) -> None:
    user = embedded.AclUser("inferq", "correct-horse-battery", WORKER_ACL_RULES)
    server = embedded.start(tmp_path, acl_users=[user])
    try:
        assert server.url.startswith("redis://") and embedded.running(tmp_path) is not None
        assert "correct-horse" not in (tmp_path / "valkey" / "users.acl").read_text()
        built = redis_client(server.url, Settings(redis_username="inferq", redis_password="correct-horse-battery"))
        assert built.ping() and built.xadd(STREAM, {"task": "inferq.triage"})
        with pytest.raises(NoPermissionError):
            built.set("elsewhere", "x")
        built.close()
        anonymous = redis.Redis.from_url(server.url)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        assert embedded.start(tmp_path, acl_users=[user]).pid == server.pid  # reused
    finally:
        assert embedded.stop(tmp_path)


def test_embedded_valkey_tls_starts_or_says_it_has_none(tls_pki: Pki, tmp_path: Path) -> None:
    tls = embedded.TlsFiles(cert_file=tls_pki.server_cert, key_file=tls_pki.server_key, ca_file=tls_pki.ca_cert)
    try:
        server = embedded.start(tmp_path, tls=tls)
    except EmbeddedServerError as refused:
        assert "without TLS support" in str(refused)
        return
    try:
        assert server.url.startswith("rediss://")
    finally:
        embedded.stop(tmp_path)


def test_acl_user_refuses_bad_names_and_multiline_rules() -> None:
    for user in (
        embedded.AclUser("default", "pw", "~inferq:*"),
        embedded.AclUser("has space", "pw", "~inferq:*"),
        embedded.AclUser("inferq", "pw", "~inferq:*\nuser evil on nopass ~* +@all"),
        embedded.AclUser("inferq", "", "~inferq:*"),
    ):
        with pytest.raises(EmbeddedServerError):
            user.acl_line()
    assert "pw" not in repr(embedded.AclUser("inferq", "pw", "~inferq:*"))
