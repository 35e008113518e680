"""A kombu transport that publishes Celery tasks onto inferq's Redis Streams lanes.

A standard Celery producer keeps its usual call,
`app.send_task("inferq.fraud", kwargs={"request": {...}}, task_id=..., queue="realtime")`, and
the message kombu builds lands as one entry (field `payload`, JSON) on `inferq:queue:realtime`,
under the same all-or-nothing lane limit as every other producer: a full lane raises
`worker.errors.Overloaded` at once, before anything is queued.

Choose it in either of two ways:

* by broker URL, once this module is imported (it registers the scheme with kombu):
  `inferq+redis://host:6379/0` (or `inferq+rediss://...`, or the short `inferq://host:6379/0`);
* by name, with no import needed: `broker_url="redis://host:6379/0"` and
  `broker_transport="worker.transport:Transport"`.

`producer_app()` returns a Celery app configured this way. With `INFERQ_SIGNING_KEYS` set (in the
channel's settings or the environment), each entry is signed (`worker.signing`) over exactly the
fields written, when it is published. Workers do not consume the lanes through kombu: the inferq
worker reads them with `worker.ingress.Ingress` (consumer groups, batch fetch, claim of stale tasks).

Every queue and exchange that is not a lane is kombu's stock Redis transport, unchanged: Celery's
remote control (`celery inspect`, `celery control`) and its events reach inferq workers through it, and
interoperate with stock clients (`broker_url="redis://..."`, Flower) on the same database. An inferq
task sent to a queue that is not a lane is refused (`UnknownLane`): no worker would ever read it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import redis
from celery import Celery
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.utils.objects import cached_property

from contracts import ContractError, ErrorCode
from contracts.wire import (
    DEFAULT_LANE,
    FIELD_ID,
    FIELD_PAYLOAD,
    FIELD_TASK,
    KIND_BY_TASK,
    LANES,
    RESULTS_PREFIX,
    TASK_NAMES,
    queue_stream,
    valid_reply_to,
)
from worker.config import Settings
from worker.connection import PlainConnection, TlsConnection, connection_kwargs, redis_client
from worker.entries import JSON_CONTENT_TYPE
from worker.errors import ConfigurationError, Overloaded, ServerFull, UnknownLane
from worker.ingress import ensure_group
from worker.keys import EnqueueCall, enqueue_script
from worker.signing import KeyRing, signed

SCHEME: Final = "inferq"
TRANSPORT_PATH: Final = f"{__name__}:Transport"
REPR_HEADERS: Final = ("argsrepr", "kwargsrepr")
# Transport option holding the `Settings` a channel connects with (TLS, ACL user, lane limits);
# `producer_app` sets it, and a channel without it reads the `INFERQ_*` environment.
SETTINGS_OPTION: Final = "inferq_settings"
# kombu pools connections by repr(transport_options), and Settings hides secrets in its repr: this
# non-secret digest of the credentials and TLS files keeps two apps with other credentials apart.
CREDENTIALS_OPTION: Final = "inferq_credentials"


def credentials_fingerprint(settings: Settings) -> str:
    password = settings.redis_password.get_secret_value() if settings.redis_password is not None else ""
    parts = [settings.redis_username or "", password, str(settings.tls_ca_file), str(settings.tls_cert_file),
             str(settings.tls_key_file), str(settings.tls_check_hostname)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
OMITTED: Final = "<omitted>"


class ConsumeNotSupported(NotImplementedError):
    """Tasks are consumed by the inferq worker's stream ingress, never through kombu."""


def redis_url(hostname: str | None) -> str:
    """The Redis URL behind a broker URL this transport was given."""
    url = hostname or "redis://localhost:6379/0"
    if url.startswith(SCHEME + "://"):
        return "redis://" + url.removeprefix(SCHEME + "://")
    if "://" not in url:
        return f"redis://{url}:6379/0"
    return url


def _lane(queue: str) -> str:
    if queue not in LANES:
        raise UnknownLane(
            f"queue {queue!r} is not an inferq lane; send with queue= one of {', '.join(LANES)}"
        )
    return queue


def _body_request(body: str) -> Mapping[str, Any]:
    try:
        decoded = json.loads(body)
    except ValueError:
        raise ContractError.single(ErrorCode.INVALID_JSON, "request", "message body is not JSON") from None
    if isinstance(decoded, list) and len(decoded) == 3 and isinstance(decoded[1], dict):
        request = decoded[1].get("request")
        if isinstance(request, dict):
            return request
    return {}


def check_reply_to(request: Mapping[str, Any]) -> None:
    """Refuse a request whose `reply_to` lies outside `inferq:results:` (ContractError bad_reply_to)."""
    reply_to = request.get("reply_to")
    if reply_to is not None and not valid_reply_to(reply_to):
        raise ContractError.single(ErrorCode.BAD_REPLY_TO, "reply_to", f"must be a stream key under {RESULTS_PREFIX}")


def enqueue(client: redis.Redis, lane: str, fields: Mapping[str, str], limit: int) -> str:
    """XADD one entry to `lane` unless it already holds `limit` tasks (Overloaded) or Redis is full."""
    call = EnqueueCall([(lane, fields)], {lane: limit})
    try:
        reply = enqueue_script(client)(keys=call.keys, args=call.args)
    except redis.ResponseError as exc:
        # redis-py strips the "OOM" prefix off the message when it raises OutOfMemoryError.
        if isinstance(exc, redis.OutOfMemoryError) or "OOM" in str(exc):
            raise ServerFull() from None
        raise
    if call.full_lane(reply) is not None:
        raise Overloaded(lane, limit)
    return call.entry_ids(reply)[0]


def check_message(message: Mapping[str, Any]) -> None:
    """Refuse what a worker could never run: non-JSON, compressed, scheduled, unknown or misdirected."""
    headers = message.get("headers") or {}
    if message.get("content-type") != JSON_CONTENT_TYPE or "compression" in headers:
        raise ContractError.single(
            ErrorCode.MALFORMED, "request", "inferq accepts uncompressed JSON only (serializer='json')"
        )
    if headers.get("eta") is not None:
        raise ContractError.single(
            ErrorCode.MALFORMED, "request", "countdown/eta are not supported; give the request a deadline"
        )
    if headers.get("task") not in KIND_BY_TASK:
        raise ContractError.single(
            ErrorCode.UNKNOWN_TASK, "task", f"must be one of {', '.join(sorted(KIND_BY_TASK))}"
        )
    check_reply_to(_body_request(message["body"]))


def _without_reprs(message: dict[str, Any]) -> dict[str, Any]:
    # Celery copies the arguments into these headers for its logs and monitors; here they would
    # be the request a second time: patient notes, card histories.
    headers = {**message.get("headers", {}), **dict.fromkeys(REPR_HEADERS, OMITTED)}
    return {**message, "headers": headers}


def _is_lane(queue: str) -> bool:
    return queue in LANES


def _connection_class(scheme: str, asynchronous: bool, channel: Any) -> type[redis.connection.Connection]:
    """inferq's connection class for `scheme`; for the poller's clients, one that tells the channel it dropped."""
    base: type[redis.connection.Connection] = TlsConnection if scheme == "rediss" else PlainConnection
    if not asynchronous:
        return base

    class Polled(base):  # type: ignore[valid-type,misc]
        def disconnect(self, *args: Any, **kwargs: Any) -> None:
            super().disconnect(*args, **kwargs)
            if channel._registered:
                channel._on_connection_disconnect(self)

    return Polled


_parse_redis_url: Any = redis.connection.parse_url
# kombu's Redis transport is untyped: its classes are used as such.
_StockChannel: Any = kombu_redis.Channel
_StockTransport: Any = kombu_redis.Transport


class Channel(_StockChannel):  # type: ignore[misc]
    """kombu's Redis channel, except that the inferq lanes are Redis Streams written by `enqueue`.

    A lane (`realtime`, `batch`) is declared by creating its consumer group, published to as one
    stream entry under the lane limit, counted, purged and deleted as a stream, never consumed here and
    never bound in Redis. Every other queue and exchange (Celery's remote control, its events, a
    producer's own queues) is kombu's stock Redis transport, keys, channels and all, so stock Celery
    clients and Flower on the same database talk to inferq workers.
    """

    _publishing_to_lane = False

    @cached_property
    def settings(self) -> Settings:
        given = self._options.get(SETTINGS_OPTION)
        return given if isinstance(given, Settings) else Settings()

    @cached_property
    def signing(self) -> KeyRing | None:
        """The key ring entries are signed with; None when signing is off."""
        return KeyRing.from_settings(self.settings)

    @property
    def _options(self) -> dict[str, Any]:
        return dict(self.connection.client.transport_options or {})

    @property
    def redis_url(self) -> str:
        return redis_url(self.connection.client.hostname)

    @cached_property
    def lane_client(self) -> redis.Redis:
        """The client of lane operations (scripts, XLEN, XTRIM), with the settings' TLS files and ACL user."""
        return redis_client(self.redis_url, self.settings)

    @cached_property
    def queue_limits(self) -> dict[str, int]:
        given = self._options.get("queue_limits") or {}
        return {lane: int(given.get(lane, self.settings.lane(lane).queue_limit)) for lane in LANES}

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        # kombu's own clients (pub/sub, lists, bindings) reach the same server, database, TLS files and user.
        url = self.redis_url
        params: dict[str, Any] = {**connection_kwargs(self.settings, url), **_parse_redis_url(url)}
        params.setdefault("db", 0)
        params.update(
            max_connections=self.max_connections, socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_connect_timeout, socket_keepalive=self.socket_keepalive,
            socket_keepalive_options=self.socket_keepalive_options, retry_on_timeout=self.retry_on_timeout,
            client_name=self.client_name,
            connection_class=_connection_class(urlsplit(url).scheme, asynchronous, self),
        )
        return params

    def _lane_target(self, exchange: str, routing_key: str) -> str | None:
        """The lane a publish goes to, if it goes to one: a lane's own exchange, or none, with its name."""
        if _is_lane(routing_key) and exchange in ("", routing_key):
            return routing_key
        return None

    def basic_publish(self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any) -> Any:
        if self._lane_target(exchange, routing_key) is None:
            return super().basic_publish(message, exchange, routing_key, **kwargs)
        self._publishing_to_lane = True
        try:
            return super().basic_publish(message, exchange, routing_key, **kwargs)
        finally:
            self._publishing_to_lane = False

    def encode_body(self, body: Any, encoding: str | None = None) -> tuple[Any, str | None]:
        if not self._publishing_to_lane:
            return super().encode_body(body, encoding)  # type: ignore[no-any-return]
        # Bodies stay JSON text inside a lane entry (no base64), readable by any integration.
        # Bytes that are not UTF-8 (pickle, compression) stay bytes; `_put` refuses them.
        if isinstance(body, bytes):
            try:
                return body.decode("utf-8"), None
            except UnicodeDecodeError:
                return body, None
        return body, None

    def _lookup(self, exchange: str, routing_key: str, default: str | None = None) -> list[str]:
        lane = self._lane_target(exchange, routing_key)
        if lane is not None:
            return [lane]
        return list(super()._lookup(exchange, routing_key, default))

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        # A lane needs no binding (its name is its route), and its producers may touch inferq's keys only.
        if not _is_lane(queue):
            super()._queue_bind(exchange, routing_key, pattern, queue)

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        if not _is_lane(queue):
            if (message.get("headers") or {}).get("task") in KIND_BY_TASK:
                _lane(queue)  # an inferq task anywhere but a lane would wait for ever: UnknownLane
            super()._put(queue, message, **kwargs)
            return
        check_message(message)
        payload = json.dumps(_without_reprs(message), separators=(",", ":"))
        headers = message["headers"]
        # The task and its id also as plain fields: a worker names (and answers) a task it cannot read.
        fields = {FIELD_TASK: headers["task"], FIELD_PAYLOAD: payload}
        task_id = headers.get("id")
        if isinstance(task_id, str) and task_id:
            fields[FIELD_ID] = task_id
        enqueue(self.lane_client, queue, signed(fields, self.signing), self.queue_limits[queue])

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        if _is_lane(queue):
            raise ConsumeNotSupported("inferq lanes are consumed by `inferq worker`, not through kombu")
        return super().basic_consume(queue, *args, **kwargs)

    def _get(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        if _is_lane(queue):
            raise ConsumeNotSupported("inferq lanes are consumed by `inferq worker`, not through kombu")
        return super()._get(queue, *args, **kwargs)

    def _size(self, queue: str) -> int:
        if not _is_lane(queue):
            return int(super()._size(queue))
        return int(self.lane_client.xlen(queue_stream(queue)))

    def _purge(self, queue: str) -> int:
        if not _is_lane(queue):
            return int(super()._purge(queue))
        # Trimming keeps the stream and its consumer group; pending ids of trimmed entries are
        # dropped by the next claim.
        return int(self.lane_client.xtrim(queue_stream(queue), maxlen=0, approximate=False))

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        if not _is_lane(queue):
            super()._new_queue(queue, **kwargs)
            return
        try:
            ensure_group(self.lane_client, queue)
        except redis.OutOfMemoryError:
            # Declaring comes before the first publish: a full Redis is reported as `enqueue` reports it.
            raise ServerFull() from None

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        if not _is_lane(queue):
            return bool(super()._has_queue(queue, **kwargs))
        return bool(self.lane_client.exists(queue_stream(queue)))

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        if not _is_lane(queue):
            super()._delete(queue, *args, **kwargs)
            return
        self.lane_client.delete(queue_stream(queue))

    def close(self) -> None:
        super().close()
        if "lane_client" in self.__dict__:
            self.lane_client.close()


class Transport(_StockTransport):  # type: ignore[misc]
    """kombu's Redis transport with the inferq lanes as Redis Streams (see `Channel`)."""

    Channel = Channel

    # The whole URL reaches the channel, which turns it into a redis:// URL.
    can_parse_url = True
    # The inferq worker runs no kombu event loop (its runtime owns its threads), and a lane publish is
    # one script call that cannot wait in a batch.
    implements = _StockTransport.implements.extend(asynchronous=False, batch_publish=False)


TRANSPORT_ALIASES.setdefault(SCHEME, TRANSPORT_PATH)


def producer_app(redis_url: str | None = None, settings: Settings | None = None) -> Celery:
    """A Celery app that sends inferq tasks through this transport (JSON only, no result backend).

    `redis_url` None takes `INFERQ_REDIS_URL`; nothing is started (`inferq server start` runs an
    embedded Valkey). Results arrive on result streams, not through Celery: see `worker.client` and
    docs/wire-format.md.
    """
    settings = settings or Settings()
    url = redis_url or settings.redis_url
    if not url:
        raise ConfigurationError("no Redis URL: pass redis_url or set INFERQ_REDIS_URL")
    app = Celery("inferq-producer", set_as_current=False)
    app.conf.update(
        broker_url=url,
        broker_transport=TRANSPORT_PATH,
        task_serializer="json",
        accept_content=["json"],
        task_protocol=2,
        result_backend=None,
        task_ignore_result=True,
        task_create_missing_queues=True,
        task_routes={name: {"queue": DEFAULT_LANE[kind]} for kind, name in TASK_NAMES.items()},
        # The channel connects with these settings (TLS files, ACL user, lane limits), not the environment's.
        broker_transport_options={SETTINGS_OPTION: settings, CREDENTIALS_OPTION: credentials_fingerprint(settings)},
    )
    return app
