"""Signed entries: worker/signing.py, and the wiring through producers, the worker and the documented recipe.

The worker-level tests run the real pipeline in process (`WorkerRuntime`, the real `TriageAdapter` over a
runner that records every note it is handed) against the test Redis, and one runs a real worker process:
every refused entry must be answered with its own code (or dead-lettered) and never reach the model.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import time
import timeit
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import ErrorCode, TaskResultMessage, TaskStatus
from contracts.wire import DEADLETTER_STREAM, TASK_TRIAGE, queue_stream, results_stream
from engine.batching import BatchLimits, BatchPlan
from engine.triage_input import TriageInput, structured_features
from engine.triage_runner import PreparedTriage, TriagePrediction
from worker.adapters import TriageAdapter
from worker.client import AsyncInferqClient, InferqClient, raw_fields
from worker.config import Settings
from worker.connection import redis_client as worker_client
from worker.entries import decode_entry, entry_ms
from worker.errors import ConfigurationError
from worker.ingress import Ingress
from worker.keys import CONSUMER_GROUP
from worker.outcomes import Publisher
from worker.processes import spawn_worker
from worker.runtime import WorkerRuntime
from worker.signing import (
    MIN_KEY_BYTES,
    KeyRing,
    SignatureGate,
    SignatureStatus,
    canonical,
    epoch_ms,
    replay_key,
    sign,
    verify,
)
from worker.transport import producer_app

DOC = Path(__file__).resolve().parent.parent / "docs" / "wire-format.md"
# Binary keys with NUL and high bytes: what `openssl rand` makes, and what `-hmac TEXT` cannot carry.
KEY_1 = bytes(range(0, 256, 8))
KEY_2 = bytes(range(255, 0, -8))
WINDOW_MS = 300_000
SIGNED_AT = 1_795_894_179_000

RAW = {
    "task": "inferq.fraud",
    "id": "c6977029-7aba-470e-81d6-241049b07ace",
    "request": '{"tenant":"northwind-issuing","timeout_ms":2000}',
    "reply_to": "inferq:results:payments-switch",
}
ENVELOPE = {"payload": '{"headers":{"task":"inferq.triage","id":"t-9"},"body":"W1tdLHt9LHt9XQ=="}'}


def ring(*kids: str, signing_kid: str | None = None, window_ms: int = WINDOW_MS) -> KeyRing:
    keys = {"k1": KEY_1, "k2": KEY_2, "k3": KEY_1[::-1]}
    chosen = {kid: keys[kid] for kid in kids}
    return KeyRing(keys=chosen, signing_kid=signing_kid or kids[0], window_ms=window_ms)


def signed(fields: Mapping[str, str], key_ring: KeyRing | None = None, at: int = SIGNED_AT) -> dict[str, str]:
    return {**fields, **sign(fields, key_ring or ring("k1"), now_ms=at)}


def tampered(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


# ---------------------------------------------------------------------------------------------
# Round trips and what each kind of change yields


@pytest.mark.parametrize("fields", [RAW, ENVELOPE], ids=["raw", "envelope"])
def test_round_trip(fields: Mapping[str, str]) -> None:
    entry = signed(fields)
    assert set(entry) == {*fields, "sig_kid", "sig_ts", "sig"}
    assert re.fullmatch(r"[0-9a-f]{64}", entry["sig"])
    assert verify(entry, ring("k1"), entry_ms=SIGNED_AT) is SignatureStatus.OK


def test_str_and_bytes_forms_sign_alike() -> None:
    entry = signed(RAW)
    as_bytes = {name.encode(): value.encode() for name, value in entry.items()}
    assert verify(as_bytes, ring("k1"), SIGNED_AT) is SignatureStatus.OK
    assert canonical(as_bytes) == canonical(entry)


@pytest.mark.parametrize(
    ("fields", "name"),
    [(RAW, name) for name in ("task", "id", "request", "reply_to", "sig_ts")] + [(ENVELOPE, "payload")],
)
def test_every_tampered_field_is_a_bad_signature(fields: Mapping[str, str], name: str) -> None:
    entry = signed(fields)
    entry[name] = tampered(entry[name])
    assert verify(entry, ring("k1"), SIGNED_AT) is SignatureStatus.BAD_SIGNATURE


def test_tampered_key_id_is_a_bad_signature() -> None:
    # Pointing at another key the ring holds must not help: that key never made this MAC.
    entry = signed(RAW) | {"sig_kid": "k2"}
    assert verify(entry, ring("k1", "k2"), SIGNED_AT) is SignatureStatus.BAD_SIGNATURE


@pytest.mark.parametrize("change", ["flip", "upper"])
def test_tampered_mac_is_a_bad_signature(change: str) -> None:
    entry = signed(RAW)
    entry["sig"] = tampered(entry["sig"]) if change == "flip" else entry["sig"].upper()
    assert entry["sig"] != signed(RAW)["sig"]
    assert verify(entry, ring("k1"), SIGNED_AT) is SignatureStatus.BAD_SIGNATURE


def test_added_removed_or_renamed_field_is_a_bad_signature() -> None:
    entry = signed(RAW)
    added = entry | {"prior_deliveries": "0"}
    removed = {name: value for name, value in entry.items() if name != "reply_to"}
    renamed = {("ID" if name == "id" else name): value for name, value in entry.items()}
    for fields in (added, removed, renamed):
        assert verify(fields, ring("k1"), SIGNED_AT) is SignatureStatus.BAD_SIGNATURE


@pytest.mark.parametrize("ts", ["", "12a", "-1", "1" * 16, " 1795894179000"])
def test_malformed_timestamp_is_a_bad_signature(ts: str) -> None:
    assert verify(signed(RAW) | {"sig_ts": ts}, ring("k1"), SIGNED_AT) is SignatureStatus.BAD_SIGNATURE


def test_partial_signature_is_a_bad_signature() -> None:
    for missing in ("sig_kid", "sig_ts", "sig"):
        fields = {name: value for name, value in signed(RAW).items() if name != missing}
        assert verify(fields, ring("k1"), SIGNED_AT) is SignatureStatus.BAD_SIGNATURE


def test_unsigned_entry_is_refused_only_when_required() -> None:
    assert verify(RAW, ring("k1"), SIGNED_AT) is SignatureStatus.UNSIGNED
    assert ring("k1").refusal(SignatureStatus.UNSIGNED) is ErrorCode.UNSIGNED
    lenient = KeyRing(keys={"k1": KEY_1}, signing_kid="k1", window_ms=WINDOW_MS, required=False)
    assert lenient.refusal(SignatureStatus.UNSIGNED) is None
    assert lenient.refusal(SignatureStatus.BAD_SIGNATURE) is ErrorCode.BAD_SIGNATURE


def test_unknown_key_id() -> None:
    entry = signed(RAW, ring("k3"))
    assert verify(entry, ring("k1", "k2"), SIGNED_AT) is SignatureStatus.UNKNOWN_KEY
    assert verify(entry | {"sig_kid": "n\xe4me"}, ring("k1"), SIGNED_AT) is SignatureStatus.UNKNOWN_KEY


def test_rotation_accepts_entries_signed_with_either_active_key() -> None:
    old_producer, new_producer = ring("k1"), ring("k1", "k2", signing_kid="k2")
    worker = ring("k2", "k1")
    for producer in (old_producer, new_producer):
        entry = signed(RAW, producer)
        assert entry["sig_kid"] == producer.signing_kid
        assert verify(entry, worker, SIGNED_AT) is SignatureStatus.OK
    assert verify(signed(RAW, old_producer), ring("k2"), SIGNED_AT) is SignatureStatus.UNKNOWN_KEY


@pytest.mark.parametrize(
    ("entry_ms", "expected"),
    [
        (SIGNED_AT + WINDOW_MS, SignatureStatus.OK),  # queued a whole window after signing
        (SIGNED_AT - WINDOW_MS, SignatureStatus.OK),  # producer's clock a window ahead of Redis
        (SIGNED_AT + WINDOW_MS + 1, SignatureStatus.STALE),
        (SIGNED_AT - WINDOW_MS - 1, SignatureStatus.STALE),
    ],
)
def test_stale_in_both_directions(entry_ms: int, expected: SignatureStatus) -> None:
    assert verify(signed(RAW), ring("k1"), entry_ms) is expected


def test_stale_refusal_code() -> None:
    assert ring("k1").refusal(SignatureStatus.STALE) is ErrorCode.STALE_SIGNATURE
    assert ring("k1").refusal(SignatureStatus.OK) is None


def test_non_utf8_values_sign_and_verify() -> None:
    fields = {b"task": b"inferq.triage", b"id": b"t-\xff", b"request": b"\x00\x80\xfe{\xc3(", b"\xfa": b""}
    entry = {**fields, **{name.encode(): value.encode() for name, value in sign(fields, ring("k1"), 5).items()}}
    assert verify(entry, ring("k1"), 5) is SignatureStatus.OK
    assert verify(entry | {b"request": b"\x00\x80\xfe{\xc3)"}, ring("k1"), 5) is SignatureStatus.BAD_SIGNATURE


def test_a_name_given_as_str_and_as_bytes_is_refused() -> None:
    doubled: dict[str | bytes, str | bytes] = {**signed(RAW), b"id": b"other"}
    assert verify(doubled, ring("k1"), SIGNED_AT) is SignatureStatus.BAD_SIGNATURE
    with pytest.raises(ValueError):
        canonical(doubled)


def test_text_that_is_not_utf8_encodable_is_a_bad_signature() -> None:
    assert verify(signed(RAW) | {"request": "\udcff"}, ring("k1"), SIGNED_AT) is SignatureStatus.BAD_SIGNATURE


def test_resigning_replaces_the_old_signature() -> None:
    # A worker re-signs a copy it puts back, with its origin fields added.
    copy = signed(RAW) | {"origin": "1795894179000-0", "prior_deliveries": "1"}
    resigned = copy | sign(copy, ring("k2"), now_ms=SIGNED_AT + 10)
    assert verify(resigned, ring("k1", "k2"), SIGNED_AT + 10) is SignatureStatus.OK


def test_canonical_form_is_the_documented_one() -> None:
    fields = {"task": "inferq.triage", "id": "t-1", "request": "{}", "sig_kid": "k1", "sig_ts": "1795894179000"}
    expected = b"2:id3:t-17:request2:{}7:sig_kid2:k16:sig_ts13:17958941790004:task13:inferq.triage"
    assert canonical(fields) == canonical(fields | {"sig": "anything"}) == expected
    assert expected.decode() in DOC.read_text()


def test_lengths_count_utf8_bytes() -> None:
    assert canonical({"note": "Übel"}) == "4:note5:Übel".encode()


def test_replay_key() -> None:
    sig = signed(RAW)["sig"]
    assert replay_key(sig) == f"inferq:sig:{sig}"
    assert ring("k1").replay_ttl_ms == 2 * WINDOW_MS
    for bad in ("", sig.upper(), sig + "0", "x" * 64, "*"):
        with pytest.raises(ValueError):
            replay_key(bad)


# ---------------------------------------------------------------------------------------------
# Property: no single-byte change in any field survives


_names = st.binary(min_size=1, max_size=12).filter(lambda name: name not in (b"sig", b"sig_kid", b"sig_ts"))


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(_names, st.binary(max_size=40), min_size=1, max_size=6),
    pick=st.integers(min_value=0),
    offset=st.integers(min_value=0),
    replacement=st.integers(min_value=0, max_value=255),
)
def test_any_single_byte_change_breaks_verification(
    fields: dict[bytes, bytes], pick: int, offset: int, replacement: int
) -> None:
    key_ring = ring("k1", "k2")
    entry = fields | {name.encode(): value.encode() for name, value in sign(fields, key_ring, SIGNED_AT).items()}
    assert verify(entry, key_ring, SIGNED_AT) is SignatureStatus.OK
    changeable = sorted(name for name, value in entry.items() if value)
    name = changeable[pick % len(changeable)]
    value = bytearray(entry[name])
    at = offset % len(value)
    if value[at] == replacement:
        replacement = (replacement + 1) % 256
    value[at] = replacement
    assert verify(entry | {name: bytes(value)}, key_ring, SIGNED_AT) is not SignatureStatus.OK


# ---------------------------------------------------------------------------------------------
# Key rings from settings and the environment


def env_keys(**keys: bytes) -> str:
    return ",".join(f"{kid}:{base64.b64encode(key).decode()}" for kid, key in keys.items())


def test_key_ring_from_env() -> None:
    found = KeyRing.from_env(
        {"INFERQ_SIGNING_KEYS": f" {env_keys(k1=KEY_1, k2=KEY_2)}, ", "INFERQ_SIGNING_WINDOW_S": "2.5"}
    )
    assert found is not None
    assert dict(found.keys) == {"k1": KEY_1, "k2": KEY_2}
    assert (found.signing_kid, found.window_ms, found.required) == ("k1", 2500, True)
    chosen = KeyRing.from_env({"INFERQ_SIGNING_KEYS": env_keys(k1=KEY_1, k2=KEY_2), "INFERQ_SIGNING_KEY_ID": "k2"})
    assert chosen is not None and chosen.signing_kid == "k2"


def test_signing_is_off_without_keys() -> None:
    assert KeyRing.from_env({}) is None
    assert KeyRing.from_env({"INFERQ_SIGNING_REQUIRED": "false"}) is None
    assert KeyRing.from_settings(Settings(signing_keys=None)) is None


def test_from_env_reads_only_the_mapping_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERQ_SIGNING_KEYS", env_keys(k1=KEY_1))
    monkeypatch.setenv("INFERQ_LOG_LEVEL", "whatever")
    assert KeyRing.from_env({}) is None
    from_process = KeyRing.from_env()
    assert from_process is not None and from_process.signing_kid == "k1"


def test_not_required_from_env() -> None:
    found = KeyRing.from_env({"INFERQ_SIGNING_KEYS": env_keys(k1=KEY_1), "INFERQ_SIGNING_REQUIRED": "false"})
    assert found is not None and not found.required


@pytest.mark.parametrize(
    "environ",
    [
        {"INFERQ_SIGNING_REQUIRED": "true"},
        {"INFERQ_SIGNING_KEY_ID": "k1"},
        {"INFERQ_SIGNING_KEYS": env_keys(k1=KEY_1), "INFERQ_SIGNING_KEY_ID": "k9"},
        {"INFERQ_SIGNING_KEYS": env_keys(k1=KEY_1[: MIN_KEY_BYTES - 1])},
        {"INFERQ_SIGNING_KEYS": env_keys(k1=KEY_1) + "," + env_keys(k1=KEY_2)},
        {"INFERQ_SIGNING_KEYS": "k1:" + base64.b64encode(KEY_1).decode()[:-3] + "!!!"},
        {"INFERQ_SIGNING_KEYS": base64.b64encode(KEY_1).decode()},
        {"INFERQ_SIGNING_KEYS": "bad kid:" + base64.b64encode(KEY_1).decode()},
    ],
    ids=["required-no-keys", "kid-no-keys", "unknown-kid", "short", "duplicate", "not-base64", "no-kid", "bad-kid"],
)
def test_bad_configuration_is_refused_without_showing_keys(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError) as raised:
        KeyRing.from_env(environ)
    text = str(raised.value)
    for secret in (KEY_1, KEY_2, KEY_1[: MIN_KEY_BYTES - 1]):
        assert base64.b64encode(secret).decode()[:8] not in text
    # Chained errors show in tracebacks; the base64 decoder's must not drag the text along.
    assert raised.value.__context__ is None or raised.value.__suppress_context__


def test_keys_stay_out_of_reprs() -> None:
    encoded = env_keys(k1=KEY_1)
    found = KeyRing.from_env({"INFERQ_SIGNING_KEYS": encoded})
    assert found is not None
    assert repr(KEY_1) not in repr(found) and "keys" not in repr(found)
    assert encoded not in repr(Settings(signing_keys=encoded)) and encoded not in str(Settings(signing_keys=encoded))


def test_sign_needs_a_signing_key() -> None:
    verify_only = KeyRing(keys={"k1": KEY_1}, signing_kid=None, window_ms=WINDOW_MS)
    with pytest.raises(ConfigurationError):
        sign(RAW, verify_only)


# ---------------------------------------------------------------------------------------------
# The shell recipe of docs/wire-format.md

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def _doc_block(marker: str) -> str:
    found = re.search(rf"<!-- wire-example:{marker} -->\n```\w*\n(.*?)\n```", DOC.read_text(), re.S)
    assert found is not None, f"docs/wire-format.md lost its {marker} example"
    return found.group(1)


def _bash(script: str, **env: str) -> str:
    done = subprocess.run(["bash", "-c", script], env={**os.environ, **env}, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _shell_mac(fields: Mapping[str, str], mac_option: str) -> str:
    """The MAC the documented `field` function and openssl make for `fields`."""
    [field_function] = [line for line in _doc_block("signed").splitlines() if line.startswith("field()")]
    calls = "; ".join(f'field "${{N{i}}}" "${{V{i}}}"' for i in range(len(fields)))
    script = f"export LC_ALL=C\n{field_function}\n{{ {calls}; }} | openssl dgst -sha256 {mac_option} -r | cut -d' ' -f1"
    named = {f"N{i}": name for i, name in enumerate(sorted(fields))}
    values = {f"V{i}": fields[name] for i, name in enumerate(sorted(fields))}
    return _bash(script, **named, **values, HEXKEY=KEY_1.hex(), TEXTKEY="correct horse battery staple")


@needs_openssl
@pytest.mark.parametrize(
    ("mac_option", "key"),
    [('-mac HMAC -macopt "hexkey:$HEXKEY"', KEY_1), ('-hmac "$TEXTKEY"', b"correct horse battery staple")],
    ids=["hexkey", "hmac-text-key"],
)
def test_shell_built_signature_verifies(mac_option: str, key: bytes) -> None:
    key_ring = KeyRing(keys={"shell": key}, signing_kid="shell", window_ms=WINDOW_MS)
    fields = dict(RAW) | {"request": '{"note":"Übelkeit – Schmerz 7/10, 38,9 °C"}', "sig_kid": "shell"}
    fields["sig_ts"] = str(SIGNED_AT)
    entry = fields | {"sig": _shell_mac(fields, mac_option)}
    assert entry["sig"] == sign(fields, key_ring, SIGNED_AT)["sig"]
    assert verify(entry, key_ring, SIGNED_AT + 40) is SignatureStatus.OK


# ---------------------------------------------------------------------------------------------
# Through the worker: producers sign, the worker verifies before anything reaches the model


class RecordingTriageRunner:
    """A triage runner that records every note handed to it and scores each the same (ESI 3)."""

    name, version = "recording-triage", "1"
    pass_limits = BatchLimits(4096, 64)
    pass_cost = 1

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.computed = 0

    def prepare(self, item: TriageInput) -> PreparedTriage:
        self.notes.append(item.note)
        return PreparedTriage([[1] * (2 + min(30, len(item.note.split())))], structured_features(item))

    def run(self, batch: Sequence[PreparedTriage], plan: BatchPlan) -> list[TriagePrediction]:
        self.computed += len(batch)
        return [TriagePrediction([0.1, 0.2, 0.4, 0.2, 0.1], 2, 1) for _ in batch]

    def warmup(self) -> None:
        pass


WORKER_KEYS = env_keys(k1=KEY_1, k2=KEY_2)  # two keys active at once: a rotation in progress
BATCH = queue_stream("batch")


def _worker_settings(redis_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": redis_url, "metrics_port": 0, "batch_max_wait_ms": 20.0, "claim_idle_ms": 300,
        "drain_timeout_s": 5.0, "signing_keys": WORKER_KEYS,
    }
    return Settings(**{**base, **overrides})


@pytest.fixture
def start_worker(redis_url: str, redis_client: redis.Redis) -> Iterator[Callable[..., RecordingTriageRunner]]:
    """Starts in-process workers (triage, the recording runner); each is stopped at the end."""
    started: list[WorkerRuntime] = []

    def start(**overrides: Any) -> RecordingTriageRunner:
        runner = RecordingTriageRunner()
        adapters = {"triage": TriageAdapter(runner)}  # type: ignore[arg-type]
        runtime = WorkerRuntime(_worker_settings(redis_url, **overrides), name=f"sig-{len(started)}",
                                adapters=adapters)  # type: ignore[arg-type]
        started.append(runtime)
        runtime.start()
        return runner

    yield start
    for runtime in started:
        runtime.stop(timeout_s=5.0)


@pytest.fixture
def raw_client(redis_url: str, redis_client: redis.Redis) -> Iterator[redis.Redis]:
    """The test database with bytes replies, as the worker reads entries (flushed by `redis_client`)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def triage(task_id: str, note: str, **extra: Any) -> dict[str, str]:
    return raw_fields(TASK_TRIAGE, task_id, json.dumps({"tenant": "ed", "note": note, **extra}))


def _messages(client: redis.Redis, stream: str) -> dict[str, TaskResultMessage]:
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(stream))
    return {m.task_id: m for m in (TaskResultMessage.model_validate_json(f["message"]) for _, f in entries)}


def _results(client: redis.Redis, ids: set[str], stream: str = results_stream("triage"),
             timeout_s: float = 10.0) -> dict[str, TaskResultMessage]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = _messages(client, stream)
        if ids <= set(found) or time.monotonic() > deadline:
            assert ids <= set(found), f"missing results: {sorted(ids - set(found))}"
            return found
        time.sleep(0.02)


def _dead_letters(client: redis.Redis, count: int, timeout_s: float = 10.0) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout_s
    while True:
        letters = [fields for _, fields in cast(list[tuple[str, dict[str, str]]], client.xrange(DEADLETTER_STREAM))]
        if len(letters) >= count or time.monotonic() > deadline:
            assert len(letters) >= count, f"{len(letters)} of {count} dead letters"
            return letters
        time.sleep(0.02)


def _refused(message: TaskResultMessage) -> ErrorCode | None:
    assert message.status is TaskStatus.REJECTED and message.result is None and message.error is not None
    return message.error.code


def _drained(client: redis.Redis) -> bool:
    return client.xlen(BATCH) == 0 and client.xpending(BATCH, CONSUMER_GROUP)["pending"] == 0


@pytest.mark.integration
def test_bad_entries_are_refused_with_their_own_codes_and_never_reach_the_model(
    redis_client: redis.Redis, start_worker: Callable[..., RecordingTriageRunner]
) -> None:
    now = epoch_ms()
    good = signed(triage("good", "fall at home, hip pain"), ring("k1"), now)
    rotated = signed(triage("rotated", "sore throat three days"), ring("k2"), now)
    tampered = signed(triage("tampered", "NOTE-TAMPERED as signed"), ring("k1"), now)
    tampered["request"] = json.dumps({"tenant": "ed", "note": "NOTE-TAMPERED changed after signing"})
    entries = {
        "good": good,
        "rotated": rotated,
        "unsigned": triage("unsigned", "NOTE-UNSIGNED"),
        "tampered": tampered,
        "stale": signed(triage("stale", "NOTE-STALE"), ring("k1"), now - WINDOW_MS - 60_000),
        "unknown": signed(triage("unknown", "NOTE-UNKNOWN-KEY"), ring("k3"), now),
        "replay": good,  # the same signed fields again, under a new entry id
    }
    entry_ids = {name: redis_client.xadd(BATCH, fields) for name, fields in entries.items()}  # type: ignore[arg-type]
    runner = start_worker()
    results = _results(redis_client, {"good", "rotated", "unsigned", "tampered", "stale", "unknown"})
    assert results["good"].status is TaskStatus.OK and results["rotated"].status is TaskStatus.OK
    assert {name: _refused(results[name]) for name in ("unsigned", "tampered", "stale", "unknown")} == {
        "unsigned": ErrorCode.UNSIGNED,
        "tampered": ErrorCode.BAD_SIGNATURE,
        "stale": ErrorCode.STALE_SIGNATURE,
        "unknown": ErrorCode.UNKNOWN_SIGNING_KEY,
    }
    [letter] = _dead_letters(redis_client, 1)
    assert (letter["error_code"], letter["entry_id"], letter["task_id"]) == ("replayed", entry_ids["replay"], "good")
    assert redis_client.xlen(results_stream("triage")) == 6, "a replay gets no second result"
    assert not [note for note in runner.notes if note.startswith("NOTE-")], "a refused entry reached the model"
    assert sum(note in ("fall at home, hip pain", "sore throat three days") for note in runner.notes) == 2
    assert _wait(lambda: _drained(redis_client)), "every entry was acked and deleted"


@pytest.mark.integration
def test_signing_off_ignores_signature_fields(
    redis_client: redis.Redis, start_worker: Callable[..., RecordingTriageRunner]
) -> None:
    now = epoch_ms()
    entries = {
        "plain": triage("plain", "note one"),
        "signed": signed(triage("signed", "note two"), ring("k1"), now),
        "stale": signed(triage("stale", "note three"), ring("k3"), now - 10 * WINDOW_MS),
        "garbage": triage("garbage", "note four") | {"sig_kid": "who?", "sig_ts": "soon", "sig": "not hex"},
    }
    for fields in entries.values():
        redis_client.xadd(BATCH, fields)  # type: ignore[arg-type]
    runner = start_worker(signing_keys=None)
    results = _results(redis_client, set(entries))
    assert all(message.status is TaskStatus.OK for message in results.values())
    assert {"note one", "note two", "note three", "note four"} <= set(runner.notes)


@pytest.mark.integration
def test_unsigned_entries_pass_while_signatures_are_not_required(
    redis_client: redis.Redis, start_worker: Callable[..., RecordingTriageRunner]
) -> None:
    tampered = signed(triage("tampered", "NOTE-TAMPERED"), ring("k1"), epoch_ms()) | {"request": "{}"}
    redis_client.xadd(BATCH, triage("unsigned", "no signature yet"))  # type: ignore[arg-type]
    redis_client.xadd(BATCH, tampered)  # type: ignore[arg-type]
    runner = start_worker(signing_required=False)
    results = _results(redis_client, {"unsigned", "tampered"})
    assert results["unsigned"].status is TaskStatus.OK
    assert _refused(results["tampered"]) is ErrorCode.BAD_SIGNATURE
    assert "NOTE-TAMPERED" not in runner.notes


@pytest.mark.integration
def test_refusal_without_a_task_id_is_dead_lettered_with_its_code(
    redis_client: redis.Redis, start_worker: Callable[..., RecordingTriageRunner]
) -> None:
    redis_client.xadd(BATCH, {"task": TASK_TRIAGE, "request": json.dumps({"tenant": "ed", "note": "NOTE-NO-ID"})})
    runner = start_worker()
    [letter] = _dead_letters(redis_client, 1)
    assert letter["error_code"] == "unsigned" and letter["task_id"] == ""
    assert "NOTE-NO-ID" not in runner.notes


@pytest.mark.integration
def test_the_client_signs_every_entry_it_submits(
    redis_url: str, redis_client: redis.Redis, raw_client: redis.Redis,
    start_worker: Callable[..., RecordingTriageRunner], monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = Settings(redis_url=redis_url, signing_keys=env_keys(k2=KEY_2))  # a producer already moved to k2
    with InferqClient(redis_url, settings=producer) as client:
        ids = client.submit_many("triage", [{"tenant": "ed", "note": f"cough {i} days"} for i in range(3)])
        entries = raw_client.xrange(BATCH)
        assert len(entries) == 3
        for entry_id, fields in entries:
            assert set(fields) == {b"task", b"id", b"request", b"sig_kid", b"sig_ts", b"sig"}
            assert fields[b"sig_kid"] == b"k2"
            assert verify(fields, ring("k1", "k2"), entry_ms(entry_id.decode())) is SignatureStatus.OK
        start_worker()
        answered = client.wait(ids, timeout_s=10.0)
    assert [answered[task_id].status for task_id in ids] == [TaskStatus.OK] * 3

    monkeypatch.setenv("INFERQ_SIGNING_KEYS", env_keys(k1=KEY_1))  # the asyncio client, keys from the environment

    async def submit() -> TaskResultMessage:
        async with AsyncInferqClient(redis_url) as client:
            task_id = await client.submit("triage", {"tenant": "ed", "note": "rash on both arms"})
            return await client.result(task_id, timeout_s=10.0)

    assert asyncio.run(submit()).status is TaskStatus.OK


@pytest.mark.integration
def test_a_client_without_keys_is_answered_unsigned_on_its_reply_stream(
    redis_url: str, redis_client: redis.Redis, start_worker: Callable[..., RecordingTriageRunner]
) -> None:
    runner = start_worker()
    with InferqClient(redis_url, settings=Settings(redis_url=redis_url)) as client:
        message = client.result(client.submit("triage", {"tenant": "ed", "note": "NOTE-FROM-AN-OLD-PRODUCER"}), 10.0)
    assert _refused(message) is ErrorCode.UNSIGNED
    assert "NOTE-FROM-AN-OLD-PRODUCER" not in runner.notes


@pytest.mark.integration
def test_celery_send_task_through_the_inferq_broker_is_signed_and_computed(
    redis_url: str, redis_client: redis.Redis, raw_client: redis.Redis,
    start_worker: Callable[..., RecordingTriageRunner], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFERQ_SIGNING_KEYS", env_keys(k1=KEY_1))
    app = producer_app("inferq://" + redis_url.removeprefix("redis://"))  # keys from the environment
    try:
        app.send_task(TASK_TRIAGE, kwargs={"request": {"tenant": "ed", "note": "celery note"}},
                      task_id="celery-1", queue="batch")
    finally:
        app.close()
    by_settings = producer_app(redis_url, settings=Settings(redis_url=redis_url, signing_keys=env_keys(k2=KEY_2)))
    try:
        by_settings.send_task(TASK_TRIAGE, kwargs={"request": {"tenant": "ed", "note": "celery note two"}},
                              task_id="celery-2", queue="batch")
    finally:
        by_settings.close()
    entries = raw_client.xrange(BATCH)
    assert [fields[b"sig_kid"] for _, fields in entries] == [b"k1", b"k2"]
    for entry_id, fields in entries:
        assert set(fields) == {b"task", b"id", b"payload", b"sig_kid", b"sig_ts", b"sig"}
        assert verify(fields, ring("k1", "k2"), entry_ms(entry_id.decode())) is SignatureStatus.OK
    runner = start_worker()
    results = _results(redis_client, {"celery-1", "celery-2"})
    assert all(message.status is TaskStatus.OK for message in results.values())
    assert {"celery note", "celery note two"} <= set(runner.notes)


def _fetch(redis_url: str, settings: Settings, consumer: str) -> tuple[redis.Redis, Ingress, Publisher]:
    conn = worker_client(redis_url, settings)
    ingress = Ingress(conn, consumer, settings)
    ingress.ensure_groups()
    return conn, ingress, Publisher(conn, settings)


@pytest.mark.integration
def test_a_requeued_copy_is_resigned_and_what_would_be_refused_stays_pending(
    redis_url: str, redis_client: redis.Redis, raw_client: redis.Redis
) -> None:
    settings = _worker_settings(redis_url, signing_key_id="k2")
    good = signed(triage("good", "abdominal pain"), ring("k1"), epoch_ms())
    first_id = redis_client.xadd(BATCH, good)  # type: ignore[arg-type]
    redis_client.xadd(BATCH, triage("unsigned", "NOTE-UNSIGNED"))  # type: ignore[arg-type]
    redis_client.xadd(BATCH, good)  # type: ignore[arg-type]  # a replay
    conn, ingress, publisher = _fetch(redis_url, settings, "stopping")
    try:
        deliveries = ingress.fetch(["batch"], 10, None)
        [copy_id] = publisher.requeue(deliveries)
    finally:
        conn.close()
    [(_, copy)] = raw_client.xrange(BATCH, min=copy_id, max=copy_id)
    assert copy[b"origin"] == first_id.encode() and copy[b"prior_deliveries"] == b"0"
    assert copy[b"sig_kid"] == b"k2" and copy[b"sig"] != good["sig"].encode()
    assert verify(copy, ring("k1", "k2"), entry_ms(copy_id)) is SignatureStatus.OK
    # The unsigned entry and the replay were not copied: still pending, for a peer to claim and refuse.
    assert redis_client.xpending(BATCH, CONSUMER_GROUP)["pending"] == 2
    conn, ingress, publisher = _fetch(redis_url, settings, "peer")
    try:
        gate = publisher.signatures
        assert gate is not None
        [taken] = ingress.fetch(["batch"], 10, None)
        assert taken.entry_id == copy_id and taken.task_id == "good"
        assert gate.check([taken]) == [None]
        assert gate.check([taken]) == [None], "a redelivery of the same entry is no replay"
        time.sleep(0.35)
        claimed = ingress.claim_stale(10)  # the two left pending, and the copy this peer let go idle
        assert [(d.entry_id == copy_id, d.task_id, code) for d, code in zip(claimed, gate.check(claimed),
                                                                             strict=True)] == [
            (False, "unsigned", ErrorCode.UNSIGNED), (False, "good", ErrorCode.REPLAYED), (True, "good", None)]
    finally:
        conn.close()


@pytest.mark.integration
def test_a_graceful_stop_gives_back_signed_copies_a_peer_computes(
    redis_client: redis.Redis, start_worker: Callable[..., RecordingTriageRunner], redis_url: str
) -> None:
    ids = {f"g{i}" for i in range(40)}
    for task_id in sorted(ids):
        redis_client.xadd(BATCH, signed(triage(task_id, f"back pain {task_id}"), ring("k1"), epoch_ms()))  # type: ignore[arg-type]
    settings = _worker_settings(redis_url, signing_key_id="k2", batch_max_batch_size=4)  # holds 12
    adapters = {"triage": TriageAdapter(SlowRunner())}  # type: ignore[arg-type]
    stopping = WorkerRuntime(settings, name="sig-stopping", adapters=adapters)  # type: ignore[arg-type]
    stopping.start()
    assert _wait(lambda: bool(redis_client.xlen(results_stream("triage"))))
    assert stopping.stop(timeout_s=5.0)
    waiting = [fields for _, fields in cast(list[tuple[str, dict[str, str]]], redis_client.xrange(BATCH))]
    copies = [fields for fields in waiting if "origin" in fields]  # the rest were never fetched
    assert copies and all(fields["sig_kid"] == "k2" for fields in copies)
    start_worker()
    results = _results(redis_client, ids)
    assert all(message.status is TaskStatus.OK for message in results.values())


class SlowRunner(RecordingTriageRunner):
    def run(self, batch: Sequence[PreparedTriage], plan: BatchPlan) -> list[TriagePrediction]:
        time.sleep(0.3)
        return super().run(batch, plan)


def _wait(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------------------------------------
# The shell recipe of docs/wire-format.md, through the worker


@pytest.mark.integration
@needs_openssl
@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_documented_shell_example_is_computed_by_a_worker(
    redis_client: redis.Redis, raw_client: redis.Redis, redis_url: str,
    start_worker: Callable[..., RecordingTriageRunner],
) -> None:
    key_b64 = base64.b64encode(KEY_1).decode()
    entry_id = _bash(_doc_block("signed"), INFERQ_REDIS_URL=redis_url, SIGNING_KID="2026-q3", SIGNING_KEY_B64=key_b64)
    [(read_id, fields)] = raw_client.xrange(BATCH)
    assert read_id.decode() == entry_id
    rotating = f"2026-q1:{base64.b64encode(KEY_2).decode()},2026-q3:{key_b64}"
    key_ring = KeyRing.from_env({"INFERQ_SIGNING_KEYS": rotating})
    assert key_ring is not None
    assert verify(fields, key_ring, entry_ms=entry_ms(entry_id)) is SignatureStatus.OK
    runner = start_worker(signing_keys=rotating)
    task_id = fields[b"id"].decode()
    assert _results(redis_client, {task_id})[task_id].status is TaskStatus.OK
    assert "71F fall at home, L hip pain, cannot bear weight" in runner.notes
    # The same block run again under the same id: a new signature (a new sig_ts), the id answered once.
    _bash(_doc_block("signed"), INFERQ_REDIS_URL=redis_url, SIGNING_KID="2026-q3", SIGNING_KEY_B64=key_b64)
    assert _wait(lambda: _drained(redis_client))
    assert redis_client.xlen(results_stream("triage")) == 1


@pytest.mark.integration
def test_documented_python_signer_is_computed_by_a_worker(
    redis_client: redis.Redis, start_worker: Callable[..., RecordingTriageRunner]
) -> None:
    namespace: dict[str, Any] = {}
    exec(_doc_block("signed-python"), namespace)  # standard library only, as documented
    fields = namespace["signed"](triage("py-1", "stdlib signed note"), "k2", KEY_2)
    assert set(fields) == {"task", "id", "request", "sig_kid", "sig_ts", "sig"}
    assert fields["sig"] == sign(fields, ring("k2"), int(fields["sig_ts"]))["sig"]
    entry_id = redis_client.xadd(BATCH, fields)
    assert verify(fields, ring("k1", "k2"), entry_ms(entry_id)) is SignatureStatus.OK
    runner = start_worker()
    assert _results(redis_client, {"py-1"})["py-1"].status is TaskStatus.OK
    assert "stdlib signed note" in runner.notes


# ---------------------------------------------------------------------------------------------
# A real worker process (`python -m worker.app`) with the shipped triage model


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_process_computes_signed_entries_and_refuses_the_rest(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = {
        "INFERQ_SIGNING_KEYS": WORKER_KEYS, "INFERQ_KINDS": '["triage"]', "INFERQ_LANES": '["batch"]',
        "INFERQ_DEVICE": "cpu", "INFERQ_LOG_LEVEL": "WARNING", "INFERQ_BATCH_MAX_WAIT_MS": "20",
    }
    process = spawn_worker(redis_url, "it-signed", tmp_path, env)
    try:
        process.wait_ready(90.0)
        producer = Settings(redis_url=redis_url, signing_keys=env_keys(k1=KEY_1))
        with InferqClient(redis_url, settings=producer) as client:
            task_id = client.submit("triage", {"tenant": "ed", "note": "crushing chest pain, diaphoretic"})
            assert client.result(task_id, timeout_s=30.0).status is TaskStatus.OK
        tampered = signed(triage("it-tampered", "cough"), ring("k2"), epoch_ms()) | {"sig_kid": "k1"}
        redis_client.xadd(BATCH, triage("it-unsigned", "cough"))  # type: ignore[arg-type]
        redis_client.xadd(BATCH, tampered)  # type: ignore[arg-type]
        results = _results(redis_client, {"it-unsigned", "it-tampered"}, timeout_s=30.0)
        assert _refused(results["it-unsigned"]) is ErrorCode.UNSIGNED
        assert _refused(results["it-tampered"]) is ErrorCode.BAD_SIGNATURE
        assert all(message.model is None for message in results.values()), "no model answered them"
    finally:
        assert process.stop(timeout_s=15.0) == 0, process.log_tail()


# ---------------------------------------------------------------------------------------------
# What verifying costs


def test_verifying_costs_one_hmac_per_entry() -> None:
    gate = SignatureGate(ring("k1", "k2"), redis.Redis(port=1))  # `verdict` never talks to Redis
    fields = signed(triage("t", "x " * 150), ring("k1"), SIGNED_AT)
    raw = {name.encode(): value.encode() for name, value in fields.items()}
    delivery = decode_entry("batch", f"{SIGNED_AT}-0", raw, 1)
    assert gate.verdict(delivery).code is None
    per_entry_s = min(timeit.repeat(lambda: gate.verdict(delivery), number=2000, repeat=3)) / 2000
    assert per_entry_s < 1e-3, f"{per_entry_s * 1e6:.1f} us per entry"  # ~10 us measured; loose for shared CI
