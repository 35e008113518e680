"""Synthetic traffic in the wire contract's request form, for the demo and the benchmarks.

The engine's seeded generators (`training.triage_data`, `training.fraud_sim`) speak the engine's
types; this module turns their examples into the JSON a producer would send. No real patient or
card data is involved.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from contracts.requests import MAX_PAST_S
from engine.fraud_features import Event, FraudInput
from training.triage_data import TriageExample

# The generator's arrival phrases as contract codes (private vehicle and wheelchair are walk-ins).
ARRIVAL_CODES = {"walk-in": "walk_in", "private vehicle": "walk_in", "wheelchair": "walk_in", "EMS": "ems"}
# A day inside the contract's ten-year window: a history generated a moment ago stays valid
# through a long run.
_HISTORY_WINDOW_S = MAX_PAST_S - 86_400


def rfc3339(epoch_s: float) -> str:
    """Epoch seconds as an RFC 3339 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_json(ev: Event, shift_s: float = 0.0) -> dict[str, Any]:
    """One engine event as a contract transaction event, moved in time by `shift_s`."""
    out: dict[str, Any] = {
        "amount": round(float(ev.amount), 2),
        "currency": ev.currency,
        "mcc": ev.mcc,
        "channel": ev.channel,
        "country": ev.country,
        "timestamp": rfc3339(ev.timestamp + shift_s),
    }
    if ev.merchant_id:
        out["merchant_id"] = ev.merchant_id
    if ev.device_id:
        out["device_id"] = ev.device_id
    return out


def fraud_request(inp: FraudInput, tenant: str, *, age_s: float = 0.0) -> dict[str, Any]:
    """A fraud request whose transaction happened `age_s` seconds ago; events older than the
    contract's window (a slow spender's 4,096 events can reach further back) are left out."""
    shift = time.time() - age_s - inp.transaction.timestamp
    oldest = time.time() - _HISTORY_WINDOW_S - shift
    return {
        "tenant": tenant,
        "transaction": event_json(inp.transaction, shift),
        "history": [event_json(e, shift) for e in inp.history if e.timestamp >= oldest],
    }


def triage_request(ex: TriageExample, tenant: str) -> dict[str, Any]:
    """A triage request carrying the example's note and structured fields."""
    request: dict[str, Any] = {"tenant": tenant, "note": ex.note}
    if ex.age_years is not None:
        request["age"] = round(float(ex.age_years), 3)
    if ex.sex:
        request["sex"] = ex.sex
    if ex.arrival_mode:
        request["arrival_mode"] = ARRIVAL_CODES.get(ex.arrival_mode, "other")
    vitals = {k: (round(v, 1) if k in ("temperature_c", "spo2") else int(v)) for k, v in ex.vitals.items()}
    if vitals:
        request["vitals"] = vitals
    return request


def triage_stream(seed: int, tenant: str, chunk: int = 200) -> Iterator[dict[str, Any]]:
    """Endless triage requests, `chunk` generated at a time."""
    from training.triage_data import generate

    while True:
        yield from (triage_request(ex, tenant) for ex in generate(chunk, seed))
        seed += 1


def fraud_stream(inputs: Iterable[FraudInput], tenant: str) -> Iterator[dict[str, Any]]:
    """Fraud requests for the given inputs, each transaction happening now."""
    return (fraud_request(inp, tenant) for inp in inputs)


# Requests at the simulator's own time carry at most this much history before the transaction: the
# contract refuses events over ten years old, a slow spender's 4,096 events can reach further back,
# and a fixed cut (unlike one against the clock) keeps training and evaluation data the same every
# day. Issuers send a bounded window of history too.
HISTORY_AT_S = 5 * 365 * 86_400


def fraud_request_at(inp: FraudInput, tenant: str) -> dict[str, Any]:
    """A fraud request at the simulated transaction's own time: the hour of day, the gaps and every
    other feature are the simulator's; events over five years before the transaction are left out."""
    oldest = inp.transaction.timestamp - HISTORY_AT_S
    return {
        "tenant": tenant,
        "transaction": event_json(inp.transaction),
        "history": [event_json(e) for e in inp.history if e.timestamp >= oldest],
    }
