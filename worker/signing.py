"""Signed lane entries: HMAC-SHA256 over the whole entry, with a key id, a time and a replay rule.

Off unless `INFERQ_SIGNING_KEYS` is set. A signed entry carries three fields more than it would unsigned:

- `sig_kid`: id of the key that signed it; several keys are active at once while keys rotate
- `sig_ts`: epoch ms at which it was signed, as decimal ASCII digits
- `sig`: lower-case hex of HMAC-SHA256(key, canonical(entry))

`canonical` covers every field of the entry except `sig` (so `sig_kid` and `sig_ts` too): the fields
sorted bytewise by name, each written `<len(name)>:<name><len(value)>:<value>` with lengths as decimal
byte counts of the UTF-8 (or raw) bytes and nothing between fields. The length prefixes make the string
unambiguous for any bytes, and a shell script builds it with `printf` (docs/wire-format.md shows how).
Producers sign in `worker.client` (every entry of a submission, at each send attempt) and
`worker.transport` (each Celery message), over exactly the fields they XADD.

`verify` answers, in this order: UNSIGNED (none of the three fields), BAD_SIGNATURE (some but not all of
them, or a malformed `sig_ts`), UNKNOWN_KEY, BAD_SIGNATURE (the MAC differs), STALE, OK. Staleness
compares `sig_ts` with the entry id's time (when Redis added the entry), not with the time of reading:
a task that waited in a backlog is not stale, one signed more than the window before or after it was
queued is (a captured entry added again later, or a producer's clock far off).

Replays: within the window an attacker could XADD a captured entry again. The worker records each
signature it accepts with the entry that carried it: `SET replay_key(sig) <lane>:<entry id> NX GET PX
<2 x window>` (`SignatureGate.check`, one script call per fetched group). When the SET finds the key holding
another entry, the entry is a replay (error code `replayed`); the same entry is a redelivery of the one
entry and is fine. A copy added later than the marker lives is stale anyway, and a replayed task id that
was answered is answered once regardless (the exactly-once marker `inferq:done:{id}` outlives both).

Where: `worker.preparing.Preparer` checks every fetched group before any request reaches the contract
parser, an adapter or the model. A refused entry is answered `rejected` with its code where it names a
task id and a kind; a replay is dead-lettered without an answer (its task id belongs to the entry first
accepted, whose result must not be pre-empted); the rest are dead-lettered.

A worker that puts a fetched task back at a graceful stop adds `origin` and `prior_deliveries`; it
re-signs that copy with its own key (`sign` ignores the old signature fields), so the fields a worker
trusts for queue time and delivery counts are covered as well and a producer cannot forge them. It
re-signs only what it would accept, checked again at that point (the HMAC here, the replay marker in the
same script as the copy, `worker.keys.Scripts.requeue_signed`); anything else stays pending, for a peer
to claim and refuse. A worker needs `INFERQ_SIGNING_KEY_ID` (or the first key) for that, so every
worker holds the key it signs with.

Key material never appears in reprs, logs or exception messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final

import redis
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from contracts import ErrorCode
from worker.config import Settings
from worker.entries import Delivery, entry_ms
from worker.errors import ConfigurationError
from worker.keys import REPLAY_PREFIX, Scripts, replay_key

__all__ = [
    "REPLAY_PREFIX",
    "KeyRing",
    "SignatureGate",
    "SignatureStatus",
    "Verdict",
    "canonical",
    "replay_key",
    "replay_marker",
    "sign",
    "signed",
    "verify",
]

FIELD_SIG_KID: Final = "sig_kid"
FIELD_SIG_TS: Final = "sig_ts"
FIELD_SIG: Final = "sig"
SIGNATURE_FIELDS: Final = (FIELD_SIG_KID, FIELD_SIG_TS, FIELD_SIG)
_SIGNATURE_KEYS: Final = frozenset(name.encode() for name in SIGNATURE_FIELDS)

# 128 bits: below that an HMAC key is guessable long before SHA-256 itself matters.
MIN_KEY_BYTES: Final = 16

_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Fifteen digits reach the year 33658: enough, and short enough that int() never runs long.
_TS = re.compile(rb"[0-9]{1,15}")

Fields = Mapping[str, str | bytes] | Mapping[bytes, str | bytes] | Mapping[str | bytes, str | bytes]


class SignatureStatus(StrEnum):
    """What `verify` found out about one entry."""

    OK = "ok"
    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    STALE = "stale"


ERROR_CODES: Final[Mapping[SignatureStatus, ErrorCode]] = {
    SignatureStatus.UNSIGNED: ErrorCode.UNSIGNED,
    SignatureStatus.UNKNOWN_KEY: ErrorCode.UNKNOWN_SIGNING_KEY,
    SignatureStatus.BAD_SIGNATURE: ErrorCode.BAD_SIGNATURE,
    SignatureStatus.STALE: ErrorCode.STALE_SIGNATURE,
}


@dataclass(frozen=True)
class KeyRing:
    """The HMAC keys a process holds, the one it signs with, and how far `sig_ts` may stray."""

    keys: Mapping[str, bytes] = field(repr=False)
    signing_kid: str | None
    window_ms: int
    required: bool = True  # unsigned entries refused; false only while producers move to signing

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigurationError("a signing key ring needs at least one key")
        for kid, key in self.keys.items():
            _check_key(kid, key)
        if self.signing_kid is not None and self.signing_kid not in self.keys:
            raise ConfigurationError(f"signing key id {self.signing_kid!r} is not among the signing keys")
        if self.window_ms <= 0:
            raise ConfigurationError("the signing window must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing | None:
        """The ring the settings describe, or None when signing is off (no keys set)."""
        secret = settings.signing_keys.get_secret_value().strip() if settings.signing_keys else ""
        if not secret:
            _check_signing_off(settings)
            return None
        keys = parse_keys(secret)
        return cls(
            keys=MappingProxyType(keys),
            signing_kid=settings.signing_key_id or next(iter(keys)),
            window_ms=round(settings.signing_window_s * 1000),
            required=settings.signing_required is not False,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> KeyRing | None:
        """The same from an environment mapping: only its `INFERQ_SIGNING_*` variables count."""
        values = {name: environ[var] for name in _SIGNING_SETTINGS if (var := f"INFERQ_{name.upper()}") in environ}
        return cls.from_settings(_InitOnlySettings.model_validate(values))

    @property
    def replay_ttl_ms(self) -> int:
        """How long an accepted signature is remembered (see the module docstring)."""
        return 2 * self.window_ms

    def refusal(self, status: SignatureStatus) -> ErrorCode | None:
        """The error code an entry with this status is refused with, or None when it is accepted."""
        if status is SignatureStatus.OK or (status is SignatureStatus.UNSIGNED and not self.required):
            return None
        return ERROR_CODES[status]


_SIGNING_SETTINGS: Final = ("signing_keys", "signing_key_id", "signing_window_s", "signing_required")


class _InitOnlySettings(Settings):
    """Settings built from the arguments alone, so `from_env` reads the mapping it is given."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _check_signing_off(settings: Settings) -> None:
    if settings.signing_required:
        raise ConfigurationError("INFERQ_SIGNING_REQUIRED is true but INFERQ_SIGNING_KEYS is unset")
    if settings.signing_key_id:
        raise ConfigurationError("INFERQ_SIGNING_KEY_ID is set but INFERQ_SIGNING_KEYS is unset")


def _check_key(kid: str, key: bytes) -> None:
    if not _KID.fullmatch(kid):
        raise ConfigurationError("a signing key id must be 1-64 characters of A-Z a-z 0-9 . _ -")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(f"signing key {kid!r} has {len(key)} bytes; at least {MIN_KEY_BYTES} are needed")


def parse_keys(text: str) -> dict[str, bytes]:
    """`kid:base64key` pairs, comma-separated, as `INFERQ_SIGNING_KEYS` holds them."""
    keys: dict[str, bytes] = {}
    for position, item in enumerate((part.strip() for part in text.split(",")), start=1):
        if not item:
            continue
        kid, _, encoded = item.partition(":")
        # Messages name the position or a checked key id, never the text: it may be a key.
        if not _KID.fullmatch(kid) or not encoded:
            raise ConfigurationError(f"INFERQ_SIGNING_KEYS: item {position} is not kid:base64key")
        if kid in keys:
            raise ConfigurationError(f"INFERQ_SIGNING_KEYS: key id {kid!r} appears twice")
        keys[kid] = _decoded_key(kid, encoded)
        _check_key(kid, keys[kid])
    return keys


def _decoded_key(kid: str, encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"INFERQ_SIGNING_KEYS: key {kid!r} is not standard base64") from None


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _normalised(fields: Fields) -> dict[bytes, bytes]:
    out = {_as_bytes(name): _as_bytes(value) for name, value in fields.items()}
    if len(out) != len(fields):
        raise ValueError("a field is named twice (once as str, once as bytes)")
    return out


def _canonical_bytes(fields: Mapping[bytes, bytes]) -> bytes:
    parts = []
    for name in sorted(fields):
        if name != b"sig":
            value = fields[name]
            parts.append(b"%d:%s%d:%s" % (len(name), name, len(value), value))
    return b"".join(parts)


def canonical(fields: Fields) -> bytes:
    """The bytes the MAC covers: every field but `sig`, sorted by name, each `<len>:<name><len>:<value>`."""
    return _canonical_bytes(_normalised(fields))


def _mac_hex(key: bytes, fields: Mapping[bytes, bytes]) -> bytes:
    return hmac.new(key, _canonical_bytes(fields), hashlib.sha256).hexdigest().encode("ascii")


def epoch_ms() -> int:
    """Epoch milliseconds, the unit of `sig_ts` and of stream entry ids."""
    return time.time_ns() // 1_000_000


def sign(fields: Fields, ring: KeyRing, now_ms: int | None = None) -> dict[str, str]:
    """The three signature fields to add to `fields` (any signature fields already there are replaced)."""
    if ring.signing_kid is None:
        raise ConfigurationError("this key ring verifies only: it has no signing key id")
    kid, ts = ring.signing_kid, str(epoch_ms() if now_ms is None else now_ms)
    body = {name: value for name, value in _normalised(fields).items() if name not in _SIGNATURE_KEYS}
    body |= {FIELD_SIG_KID.encode(): kid.encode(), FIELD_SIG_TS.encode(): ts.encode()}
    mac = _mac_hex(ring.keys[kid], body).decode("ascii")
    return {FIELD_SIG_KID: kid, FIELD_SIG_TS: ts, FIELD_SIG: mac}


def verify(fields: Fields, ring: KeyRing, entry_ms: int) -> SignatureStatus:
    """Check an entry's signature; `entry_ms` is its stream entry id's time (set by Redis at XADD)."""
    try:
        entry = _normalised(fields)
    except ValueError:  # UnicodeEncodeError included: a str that is not text cannot have been signed
        return SignatureStatus.BAD_SIGNATURE
    present = [name in entry for name in _SIGNATURE_KEYS]
    if not any(present):
        return SignatureStatus.UNSIGNED
    ts = entry.get(FIELD_SIG_TS.encode(), b"")
    if not all(present) or not _TS.fullmatch(ts):
        return SignatureStatus.BAD_SIGNATURE
    key = ring.keys.get(entry[FIELD_SIG_KID.encode()].decode("utf-8", "replace"))
    if key is None:
        return SignatureStatus.UNKNOWN_KEY
    # compare_digest: the time taken must not tell an attacker how many leading characters matched.
    if not hmac.compare_digest(_mac_hex(key, entry), entry[FIELD_SIG.encode()]):
        return SignatureStatus.BAD_SIGNATURE
    if abs(entry_ms - int(ts)) > ring.window_ms:
        return SignatureStatus.STALE
    return SignatureStatus.OK




def signed(fields: Mapping[str, str], ring: KeyRing | None, now_ms: int | None = None) -> dict[str, str]:
    """`fields` with their signature fields added (any old ones replaced); unchanged when `ring` is None."""
    if ring is None:
        return dict(fields)
    return {**fields, **sign(fields, ring, now_ms)}


def replay_marker(lane: str, entry_id: str) -> str:
    """What a replay marker holds: the entry that carried the signature first, `{lane}:{entry id}`."""
    return f"{lane}:{entry_id}"


@dataclass(frozen=True)
class Verdict:
    """A worker's decision on one entry's signature, before the replay check."""

    code: ErrorCode | None  # the refusal; None when accepted
    sig: str | None = None  # the signature of an accepted signed entry, for its replay marker


class SignatureGate:
    """A worker's check of the entries it fetched: one HMAC each, then one round trip for replay markers."""

    def __init__(self, ring: KeyRing, client: redis.Redis) -> None:
        self.ring = ring
        self._client = client
        self._scripts = Scripts(client)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> SignatureGate | None:
        """The gate of a worker with these settings, or None when signing is off."""
        ring = KeyRing.from_settings(settings)
        return cls(ring, client) if ring is not None else None

    def verdict(self, delivery: Delivery) -> Verdict:
        """Signature, key and time of one delivery's raw fields (no Redis)."""
        status = verify(delivery.raw, self.ring, entry_ms(delivery.entry_id))
        code = self.ring.refusal(status)
        if code is None and status is SignatureStatus.OK:
            return Verdict(None, delivery.raw[FIELD_SIG.encode()].decode("ascii"))
        return Verdict(code)

    def check(self, deliveries: Sequence[Delivery]) -> list[ErrorCode | None]:
        """Each delivery's refusal, None for one accepted; raises redis.RedisError from the replay round trip.

        The replay markers of every accepted signed delivery are set in one script (`SET NX GET` each,
        `worker.keys.Scripts.check_replays`): a marker that already holds another entry makes that
        delivery `replayed`.
        """
        verdicts = [self.verdict(delivery) for delivery in deliveries]
        codes = [verdict.code for verdict in verdicts]
        marked = [(index, verdict.sig) for index, verdict in enumerate(verdicts) if verdict.sig is not None]
        if not marked:
            return codes
        pairs = [(replay_key(sig), replay_marker(deliveries[index].lane, deliveries[index].entry_id))
                 for index, sig in marked]
        replayed = self._scripts.check_replays(self._client, markers=pairs, replay_ttl_ms=self.ring.replay_ttl_ms)
        for (index, _), again in zip(marked, replayed, strict=True):
            if again:
                codes[index] = ErrorCode.REPLAYED
        return codes

    def resigned(self, fields: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
        """`fields` signed anew with this worker's own key (its old signature fields replaced)."""
        own = sign(fields, self.ring)
        return {**fields, **{name.encode(): value.encode() for name, value in own.items()}}

