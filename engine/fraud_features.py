"""Card transactions as model input: the event types, per-event features and reason codes.

One `FraudInput` is a customer's history (oldest first) plus the transaction to score. It becomes
one token per event, the transaction last. Every token carries categorical ids (MCC group,
channel, hashed country/currency/merchant/device) and numeric features computed relative to the
events before it (seen-before flags, velocity counts, amount against the customer's median), so
the sequence model and the reason codes see the same facts. All of it is vectorised with numpy:
a 4,096-event history featurises in a few milliseconds.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import torch

from engine.errors import InputError


@dataclass(slots=True)
class Event:
    """One card authorisation. `amount` is in units of `currency`; `timestamp` is epoch seconds."""

    amount: float
    currency: str
    mcc: str
    channel: str
    country: str
    timestamp: float
    merchant_id: str | None = None
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class EventColumns(Sequence[Event]):
    """Events stored field by field, oldest first: a history without one object per event.

    A sequence of `Event`s (indexing builds one), so it can stand wherever a history list does;
    `featurize` reads the columns directly. All columns have the same length.
    """

    amount: Sequence[float]
    currency: Sequence[str]
    mcc: Sequence[str]
    channel: Sequence[str]
    country: Sequence[str]
    timestamp: Sequence[float]
    merchant_id: Sequence[str | None]
    device_id: Sequence[str | None]

    def __post_init__(self) -> None:
        if len({len(column) for column in self._in_field_order()}) > 1:
            raise ValueError("event columns must all have the same length")

    @classmethod
    def of(cls, events: Sequence[Event]) -> EventColumns:
        if isinstance(events, EventColumns):
            return events
        return cls(*([getattr(e, name) for e in events] for name in _EVENT_FIELDS))

    def _in_field_order(self) -> tuple[Sequence[Any], ...]:
        return tuple(getattr(self, name) for name in _EVENT_FIELDS)

    def __len__(self) -> int:
        return len(self.amount)

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> EventColumns: ...

    def __getitem__(self, index: int | slice) -> Event | EventColumns:
        if isinstance(index, slice):
            return EventColumns(*(column[index] for column in self._in_field_order()))
        return Event(*(column[index] for column in self._in_field_order()))


_EVENT_FIELDS = tuple(f.name for f in fields(Event))


def event_list(events: Sequence[Event]) -> list[Event]:
    """The events as a list of `Event`s, built in one pass over the columns of an EventColumns
    (iterating one indexes it event by event): for code that walks a history many times."""
    if isinstance(events, EventColumns):
        return list(map(Event, *events._in_field_order()))
    return list(events)


@dataclass(slots=True)
class FraudInput:
    """The transaction to score and the customer's history before it, oldest first."""

    history: Sequence[Event]  # a list of Events, or EventColumns
    transaction: Event


# MCC groups with their own embedding; everything else shares "other". Airlines (3000-3299, 4511)
# are one group because no single airline code carries a signal of its own.
MCC_GROUPS = (
    "5411",
    "5541",
    "5812",
    "5999",
    "5732",
    "4829",
    "6011",
    "7995",
    "4121",
    "7011",
    "airline",
    "4899",
    "5311",
    "5815",
)
CHANNELS = ("card_present", "ecommerce", "atm", "contactless", "recurring")
# Card-present channels: two of them in different countries within hours is physically impossible.
PRESENT_CHANNELS = ("card_present", "contactless", "atm")

# Hash bucket counts: large enough that the few thousand merchants a portfolio sees rarely share a
# bucket (collisions only blur a merchant's learned risk), small enough to keep the checkpoint small.
COUNTRY_BUCKETS = 128
CURRENCY_BUCKETS = 64
MERCHANT_BUCKETS = 4096
DEVICE_BUCKETS = 256

PAD_ID = 0
NONE_ID = 1  # unknown MCC/channel, or a missing merchant/device id
CAT_FIELDS = ("mcc", "channel", "country", "currency", "merchant", "device")
CAT_VOCAB = (
    len(MCC_GROUPS) + 2,
    len(CHANNELS) + 2,
    COUNTRY_BUCKETS + 2,
    CURRENCY_BUCKETS + 2,
    MERCHANT_BUCKETS + 2,
    DEVICE_BUCKETS + 2,
)
NUMERIC_FEATURES = (
    "log_amount",
    "log_amount_vs_median",
    "small_amount",
    "log_minutes_since_prev",
    "is_first",
    "hour_sin",
    "hour_cos",
    "log_prior_10m",
    "log_prior_1h",
    "log_prior_24h",
    "log_small_prior_10m",
    "log_1h_vs_usual",
    "log_24h_vs_usual",
    "merchant_seen",
    "has_device",
    "device_seen",
    "country_seen",
    "home_country",
    "country_changed",
    "mcc_share",
    "log_hours_since_present",
    "prev_present_other_country",
    "log_hours_since_same_country",
    "log_hours_since_airline",
    "pos_from_end",
    "is_transaction",
)
N_NUMERIC = len(NUMERIC_FEATURES)

# Events smaller than this are the authorisations card testers use to check a stolen number.
SMALL_AMOUNT = 2.0
# Longest history the model was trained and evaluated on.
MAX_HISTORY = 4096
REASON_CODES = (
    "card_testing",
    "new_device",
    "unusual_country",
    "impossible_travel",
    "velocity",
    "unusual_category",
    "amount_spike",
)

_MCC_INDEX = {m: i + 2 for i, m in enumerate(MCC_GROUPS)}
_CHANNEL_INDEX = {c: i + 2 for i, c in enumerate(CHANNELS)}
_LOG_MAX_POS = math.log1p(MAX_HISTORY)
# By channel id (PAD and NONE included): a card-present channel.
_PRESENT_BY_CHANNEL = np.isin(np.arange(len(CHANNELS) + 2), [_CHANNEL_INDEX[c] for c in PRESENT_CHANNELS])


@dataclass(slots=True)
class EventFeatures:
    """Per-event model inputs for one FraudInput, plus its reason codes."""

    cat: torch.Tensor  # (L, len(CAT_FIELDS)) int64, L = len(history) + 1
    num: torch.Tensor  # (L, N_NUMERIC) float32
    reasons: list[str]

    @property
    def n_events(self) -> int:
        return int(self.cat.shape[0])


@dataclass(slots=True)
class _Coded:
    """A string column as codes numbered in order of first appearance, so a code above all
    earlier ones is a value not seen before."""

    codes: npt.NDArray[np.int64]  # (L,)
    index: dict[Any, int]  # distinct value -> its code, in order of first appearance

    def ids(self, table: _Remembered) -> npt.NDArray[np.int64]:
        """The id of each value, looked up once per distinct value, (L,)."""
        return table.ids(self.index, len(self.index))[self.codes]

    def present(self) -> npt.NDArray[np.bool_]:
        """(L,) bool: the value is not None (a missing merchant or device id)."""
        missing = self.index.get(None)
        present: npt.NDArray[np.bool_] = self.codes != (-1 if missing is None else missing)
        return present


@dataclass(slots=True)
class _Columns:
    """The events of one input as arrays; index -1 is the transaction."""

    amount: np.ndarray  # (L,) float64
    ts: np.ndarray  # (L,) float64, made non-decreasing
    channel: np.ndarray  # (L,) int64 channel ids
    mcc: np.ndarray  # (L,) int64 MCC group ids
    present: np.ndarray  # (L,) bool, a card-present channel
    country: _Coded
    currency: np.ndarray  # (L,) int64 currency bucket ids
    merchant: _Coded
    device: _Coded


def validate(inp: FraudInput) -> None:
    """Raise InputError for an input the model cannot score."""
    if not isinstance(inp, FraudInput):
        raise InputError(f"expected FraudInput, got {type(inp).__name__}")
    if len(inp.history) > MAX_HISTORY:
        raise InputError(f"history has {len(inp.history)} events; at most {MAX_HISTORY} are accepted")


def _check_values(amount: np.ndarray, ts: np.ndarray) -> None:
    if not (np.isfinite(amount).all() and (amount >= 0).all()):
        raise InputError("event amounts must be finite, non-negative numbers")
    if not np.isfinite(ts).all():
        raise InputError("event timestamps must be finite")


def featurize(inp: FraudInput) -> EventFeatures:
    """FraudInput -> per-event categorical ids, numeric features and reason codes."""
    validate(inp)
    cols = _columns(inp)
    cat = _categorical(cols)
    num, facts = _numeric(cols)
    return EventFeatures(torch.from_numpy(cat), torch.from_numpy(num), _reasons(facts))


def _mcc_group(mcc: str) -> int:
    if mcc in _MCC_INDEX:
        return _MCC_INDEX[mcc]
    if mcc == "4511" or (mcc.isdigit() and 3000 <= int(mcc) <= 3299):
        return _MCC_INDEX["airline"]
    return NONE_ID


def _channel_id(channel: str) -> int:
    return _CHANNEL_INDEX.get(channel, NONE_ID)


def _bucket(value: str | None, n_buckets: int) -> int:
    # crc32 rather than hash(): str hashes are salted per process and ids must be stable.
    if value is None:
        return NONE_ID
    return 2 + zlib.crc32(value.encode()) % n_buckets


class _Remembered(dict[Any, int]):
    """fn(value) per value, computed on first sight and then looked up; past `limit` values it
    starts afresh, so arbitrary merchant ids cannot grow it without bound."""

    def __init__(self, fn: Callable[[Any], int], limit: int = 16_384) -> None:
        super().__init__()
        self.fn, self.limit = fn, limit

    def __missing__(self, value: Any) -> int:
        if len(self) >= self.limit:
            self.clear()
        result = self[value] = self.fn(value)
        return result

    def ids(self, values: Iterable[Any], n: int) -> npt.NDArray[np.int64]:
        return np.fromiter(map(self.__getitem__, values), np.int64, n)  # (n,)


# A customer sees ~100 distinct merchants, most of them shared with other customers: remembered
# ids save a crc32 per merchant per task. 16k entries hold a portfolio's active merchants.
_CHANNEL_IDS = _Remembered(_channel_id)
_MCC_IDS = _Remembered(_mcc_group)
_COUNTRY_IDS = _Remembered(functools.partial(_bucket, n_buckets=COUNTRY_BUCKETS))
_CURRENCY_IDS = _Remembered(functools.partial(_bucket, n_buckets=CURRENCY_BUCKETS))
_MERCHANT_IDS = _Remembered(functools.partial(_bucket, n_buckets=MERCHANT_BUCKETS))
_DEVICE_IDS = _Remembered(functools.partial(_bucket, n_buckets=DEVICE_BUCKETS))


def _coded(values: list[Any]) -> _Coded:
    index = {v: i for i, v in enumerate(dict.fromkeys(values))}
    return _Coded(np.fromiter(map(index.__getitem__, values), np.int64, len(values)), index)


def _columns(inp: FraudInput) -> _Columns:
    history, txn = EventColumns.of(inp.history), inp.transaction
    n = len(history) + 1
    ts = np.fromiter([*history.timestamp, txn.timestamp], np.float64, n)
    amount = np.fromiter([*history.amount, txn.amount], np.float64, n)
    _check_values(amount, ts)
    channel = _CHANNEL_IDS.ids([*history.channel, txn.channel], n)
    return _Columns(
        amount=amount,
        ts=np.maximum.accumulate(ts),
        channel=channel,
        mcc=_MCC_IDS.ids([*history.mcc, txn.mcc], n),
        present=_PRESENT_BY_CHANNEL[channel],
        country=_coded([*history.country, txn.country]),
        currency=_CURRENCY_IDS.ids([*history.currency, txn.currency], n),
        merchant=_coded([*history.merchant_id, txn.merchant_id]),
        device=_coded([*history.device_id, txn.device_id]),
    )


def _categorical(cols: _Columns) -> np.ndarray:
    return np.stack(
        [
            cols.mcc,
            cols.channel,
            cols.country.ids(_COUNTRY_IDS),
            cols.currency,
            cols.merchant.ids(_MERCHANT_IDS),
            cols.device.ids(_DEVICE_IDS),
        ],
        axis=1,
    )  # (L, 6)


def _seen_before(codes: np.ndarray) -> np.ndarray:
    """(L,) bool: the value (by first-appearance code) occurred at an earlier position."""
    seen = np.zeros(len(codes), dtype=bool)
    if len(codes) > 1:
        seen[1:] = codes[1:] <= np.maximum.accumulate(codes)[:-1]
    return seen


def _prior_counts(ts: np.ndarray, window_s: float, flags: np.ndarray | None = None) -> np.ndarray:
    """Per event: earlier events (optionally only flagged ones) within window_s before it, (L,)."""
    start = np.searchsorted(ts, ts - window_s, side="left")
    if flags is None:
        return np.arange(len(ts)) - start
    csum = np.concatenate([[0], np.cumsum(flags)])
    counts: np.ndarray = csum[np.arange(len(ts))] - csum[start]
    return counts


def _numeric(cols: _Columns) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
    """Per-event numeric features (L, N_NUMERIC) in NUMERIC_FEATURES order, and the reason facts."""
    prior_1h = _prior_counts(cols.ts, 3600.0)
    feats = (
        _amount_features(cols)
        | _time_features(cols)
        | _velocity_features(cols, prior_1h)
        | _identity_features(cols)
        | _travel_features(cols)
    )
    num = np.empty((len(cols.ts), N_NUMERIC), dtype=np.float32)  # (L, N_NUMERIC)
    for column, name in enumerate(NUMERIC_FEATURES):
        num[:, column] = feats[name]
    return num, _facts(cols, feats, prior_1h)


def _median(values: np.ndarray) -> float:
    """np.median of finite values, computed as it does, without its per-call overhead."""
    ordered = np.sort(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def _percentile_99(values: np.ndarray) -> float:
    """np.percentile(values, 99) (its default linear method), computed as it does, without its
    per-call overhead."""
    ordered = np.sort(values)
    position = (len(ordered) - 1) * 0.99
    if position >= len(ordered) - 1:
        return float(ordered[-1])
    below = math.floor(position)
    gamma = position - below
    low, high = ordered[below], ordered[below + 1]
    diff = high - low
    # numpy's lerp: from the nearer end, so that gamma 1 gives `high` exactly.
    return float(high - diff * (1 - gamma)) if gamma >= 0.5 else float(low + diff * gamma)


def _amount_features(cols: _Columns) -> dict[str, np.ndarray]:
    n = len(cols.amount)
    median = _median(cols.amount[: n - 1]) if n > 1 else float(cols.amount[-1])
    return {
        "log_amount": np.log1p(cols.amount),
        "log_amount_vs_median": np.clip(np.log((cols.amount + 0.01) / (median + 0.01)), -6.0, 6.0),
        "small_amount": cols.amount < SMALL_AMOUNT,
    }


def _time_features(cols: _Columns) -> dict[str, np.ndarray]:
    n = len(cols.ts)
    hour = (cols.ts % 86400.0) / 3600.0
    position = np.arange(n)
    since_prev = np.zeros(n)  # the first event has no previous one
    since_prev[1:] = cols.ts[1:] - cols.ts[:-1]
    return {
        "log_minutes_since_prev": np.log1p(since_prev / 60.0),
        "is_first": position == 0,
        "hour_sin": np.sin(2 * np.pi * hour / 24.0),
        "hour_cos": np.cos(2 * np.pi * hour / 24.0),
        "pos_from_end": np.log1p(position[::-1]) / _LOG_MAX_POS,
        "is_transaction": position == n - 1,
    }


def _velocity_features(cols: _Columns, prior_1h: np.ndarray) -> dict[str, np.ndarray]:
    prior_24h = _prior_counts(cols.ts, 86400.0)
    per_hour = _usual_rate_per_hour(cols.ts)
    return {
        "log_prior_10m": np.log1p(_prior_counts(cols.ts, 600.0)),
        "log_prior_1h": np.log1p(prior_1h),
        "log_prior_24h": np.log1p(prior_24h),
        "log_small_prior_10m": np.log1p(_prior_counts(cols.ts, 600.0, cols.amount < SMALL_AMOUNT)),
        "log_1h_vs_usual": np.log((prior_1h + 1.0) / (per_hour + 1.0)),
        "log_24h_vs_usual": np.log((prior_24h + 1.0) / (24.0 * per_hour + 1.0)),
    }


def _identity_features(cols: _Columns) -> dict[str, np.ndarray]:
    n = len(cols.ts)
    country_codes = cols.country.codes
    history = slice(0, max(n - 1, 1))  # the transaction alone stands for an empty history
    # An id present here and equal to an earlier one was seen among the earlier present ids.
    merchant_present = cols.merchant.present()
    has_device = cols.device.present()
    home_code = int(np.bincount(country_codes[history]).argmax())
    mcc_share = np.bincount(cols.mcc[: n - 1], minlength=CAT_VOCAB[0]) / max(1, n - 1)
    country_changed = np.zeros(n, dtype=bool)
    country_changed[1:] = country_codes[1:] != country_codes[:-1]
    return {
        "merchant_seen": _seen_before(cols.merchant.codes) | ~merchant_present,
        "has_device": has_device,
        "device_seen": _seen_before(cols.device.codes) & has_device,
        "country_seen": _seen_before(country_codes),
        "home_country": country_codes == home_code,
        "country_changed": country_changed,
        "mcc_share": mcc_share[cols.mcc],
    }


def _facts(cols: _Columns, feats: dict[str, np.ndarray], prior_1h: np.ndarray) -> dict[str, Any]:
    """What the reason codes are decided from: facts about the transaction, the last event."""
    small_cnp = feats["small_amount"] & (cols.channel == _CHANNEL_INDEX["ecommerce"])
    has_device, device_seen = feats["has_device"], feats["device_seen"]
    # Only the transaction's count is needed: earlier events within 30 minutes before it.
    start_30m = int(np.searchsorted(cols.ts, cols.ts[-1] - 1800.0, side="left"))
    return {
        "n_history": len(cols.ts) - 1,
        "small_cnp_30m": int(np.count_nonzero(small_cnp[start_30m:-1])),
        "new_device": bool(has_device[-1] and not device_seen[-1] and has_device[:-1].any()),
        "new_country": bool(len(cols.ts) > 1 and not feats["country_seen"][-1]),
        "impossible_travel": _impossible_travel(cols),
        "prior_1h": int(prior_1h[-1]),
        "usual_peak_1h": _usual_peak(cols.ts, prior_1h),
        "mcc_share": float(feats["mcc_share"][-1]),
        "log_rel": float(feats["log_amount_vs_median"][-1]),
    }


# Gaps longer than this say only "not recently"; capping keeps the feature's scale bounded.
_GAP_CAP_HOURS = 24 * 90.0


def _log_hours_since(ts: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Per event: log1p(hours) since the latest earlier event with the flag set, capped, (L,)."""
    last = np.where(flags, ts, -np.inf)
    prev = np.concatenate([[-np.inf], np.maximum.accumulate(last)[:-1]])
    log_hours: np.ndarray = np.log1p(np.minimum((ts - prev) / 3600.0, _GAP_CAP_HOURS))
    return log_hours


def _previous_flagged(flags: np.ndarray) -> np.ndarray:
    """Per event: the index of the latest earlier event with the flag set, -1 if none, (L,)."""
    idx = np.where(flags, np.arange(len(flags)), -1)
    return np.concatenate([[-1], np.maximum.accumulate(idx)[:-1]])


def _log_hours_since_same_country(ts: np.ndarray, country_codes: np.ndarray) -> np.ndarray:
    gaps = np.full(len(ts), _GAP_CAP_HOURS)
    # Stable: positions grouped by country, each group in time order; neighbours within a group
    # are an event and the previous one in the same country.
    order = np.argsort(country_codes, kind="stable")
    same = country_codes[order[1:]] == country_codes[order[:-1]]
    later, earlier = order[1:][same], order[:-1][same]
    gaps[later] = np.minimum((ts[later] - ts[earlier]) / 3600.0, _GAP_CAP_HOURS)
    log_gaps: np.ndarray = np.log1p(gaps)
    return log_gaps


def _travel_features(cols: _Columns) -> dict[str, np.ndarray]:
    """Where the card was physically used last, how recently this country was seen, flights booked."""
    country_codes = cols.country.codes
    prev = _previous_flagged(cols.present)
    other = (prev >= 0) & (country_codes[np.maximum(prev, 0)] != country_codes)
    return {
        "log_hours_since_present": _log_hours_since(cols.ts, cols.present),
        "prev_present_other_country": other,
        "log_hours_since_same_country": _log_hours_since_same_country(cols.ts, country_codes),
        "log_hours_since_airline": _log_hours_since(cols.ts, cols.mcc == _MCC_INDEX["airline"]),
    }


def _usual_rate_per_hour(ts: np.ndarray) -> float:
    """The customer's average events per hour over the history (at least a day of it)."""
    span_hours: float = max((ts[-1] - ts[0]) / 3600.0, 24.0)
    return (len(ts) - 1) / span_hours


def _usual_peak(ts: np.ndarray, prior_1h: np.ndarray) -> float:
    """The customer's 99th-percentile hourly count, from events more than a day old."""
    old = ts < ts[-1] - 86400.0
    return _percentile_99(prior_1h[old]) if old.any() else 0.0


# A card present in one country and then another this many seconds later cannot have travelled.
_IMPOSSIBLE_TRAVEL_S = 4 * 3600.0


def _impossible_travel(cols: _Columns) -> bool:
    present, country_codes = cols.present, cols.country.codes
    if not present[-1]:
        return False
    earlier = np.flatnonzero(present[:-1] & (cols.ts[:-1] >= cols.ts[-1] - _IMPOSSIBLE_TRAVEL_S))
    return bool(earlier.size and (country_codes[earlier] != country_codes[-1]).any())


# Thresholds of the reason codes: each is a plain-language rule an analyst can check by hand.
_CARD_TESTING_MIN = 3  # tiny e-commerce charges in the 30 minutes before
_VELOCITY_MIN = 5  # events in the hour before, and at least twice the customer's usual peak
_UNUSUAL_MCC_SHARE = 0.02
_AMOUNT_SPIKE = math.log(5.0)  # five times the customer's median amount
_MIN_HISTORY = 10  # fewer events than this say too little about what is usual


def _reasons(facts: dict[str, Any]) -> list[str]:
    long_enough = facts["n_history"] >= _MIN_HISTORY
    fired = {
        "card_testing": facts["small_cnp_30m"] >= _CARD_TESTING_MIN,
        "new_device": facts["new_device"],
        "unusual_country": facts["new_country"] and long_enough,
        "impossible_travel": facts["impossible_travel"],
        "velocity": facts["prior_1h"] >= max(_VELOCITY_MIN, 2 * facts["usual_peak_1h"]),
        "unusual_category": long_enough and facts["mcc_share"] < _UNUSUAL_MCC_SHARE,
        "amount_spike": long_enough and facts["log_rel"] > _AMOUNT_SPIKE,
    }
    return [code for code in REASON_CODES if fired[code]]
