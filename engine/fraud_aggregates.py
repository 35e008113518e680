"""Per-card aggregates: a compact, incrementally maintained state and the features read from it.

A `CardState` summarises a card's history in a fixed number of bytes, so an online store can keep
it next to the model and serving never rescans the history:

- exact running totals: event count, amount sum and maximum, sums of log1p(amount) and its square
  (mean and variance), first and last timestamp, hour-of-day on the unit circle, events per MCC
  group and per channel;
- the latest `RECENT_EVENTS` events (timestamp, amount, MCC group, channel, country, merchant and
  device hashes), kept in time order: the sliding windows (10 minutes to 7 days) and the distinct
  merchants / countries / devices in them are exact while a window holds fewer events than that;
- countries: exact counts and last-seen times for the first `COUNTRY_SLOTS` distinct countries
  (later ones are counted together as "other");
- merchants and devices seen: Bloom filters (`MERCHANT_BLOOM_BITS`, `DEVICE_BLOOM_BITS` bits, three
  hashes each). "New merchant/device" is then exact for a value never seen and wrong only for a
  false positive (about 1% for a card with 1,200 distinct merchants); distinct counts are the
  linear-counting estimate from the filter's set bits;
- the last card-present payment (time, country) and the last airline purchase.

`CardState.update(event)` folds one event in (events may arrive out of time order: totals,
filters and counts do not depend on order, the recent events are kept sorted, "last" fields take
the latest timestamp); `CardState.from_history(events)` builds the same state from a whole
history at once with numpy. `to_bytes`/`from_bytes` give a fixed-size binary form (a versioned
header and one numpy structured record; no pickle). `aggregate_features(state, transaction)`
reads the model's aggregate vector (`AGGREGATE_FEATURES`) for a transaction about to be scored.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from engine.fraud_features import (
    _CHANNEL_IDS,
    _MCC_IDS,
    CAT_VOCAB,
    CHANNELS,
    PRESENT_CHANNELS,
    SMALL_AMOUNT,
    Event,
    EventColumns,
    _Remembered,
)

RECENT_EVENTS = 256
COUNTRY_SLOTS = 32
MERCHANT_BLOOM_BITS = 16384
DEVICE_BLOOM_BITS = 1024
BLOOM_HASHES = 3
DAY = 86400.0
HOUR = 3600.0
# Gaps longer than this say only "not recently".
GAP_CAP_HOURS = 24 * 90.0

_N_MCC, _N_CHANNEL = CAT_VOCAB[0], CAT_VOCAB[1]
_ECOMMERCE = CHANNELS.index("ecommerce") + 2
_PRESENT_IDS = np.asarray([CHANNELS.index(c) + 2 for c in PRESENT_CHANNELS])
_PRESENT_BY_ID = np.isin(np.arange(_N_CHANNEL), _PRESENT_IDS)  # by channel id: card-present
_AIRLINE = _MCC_IDS["3000"]
_RISKY_MCC = np.asarray([_MCC_IDS[m] for m in ("4829", "5732", "7995", "6011")])

STATE_DTYPE = np.dtype(
    [
        ("n", "<u4"),
        ("sum_amount", "<f8"),
        ("max_amount", "<f8"),
        ("sum_log", "<f8"),
        ("sum_log_sq", "<f8"),
        ("first_ts", "<f8"),
        ("last_ts", "<f8"),
        ("sum_hour_sin", "<f8"),
        ("sum_hour_cos", "<f8"),
        ("mcc_counts", "<u4", (_N_MCC,)),
        ("channel_counts", "<u4", (_N_CHANNEL,)),
        ("country_code", "<u2", (COUNTRY_SLOTS,)),  # two ASCII letters; 0 = empty slot
        ("country_count", "<u4", (COUNTRY_SLOTS,)),
        ("country_last_ts", "<f8", (COUNTRY_SLOTS,)),
        ("country_other", "<u4"),
        ("merchant_bloom", "u1", (MERCHANT_BLOOM_BITS // 8,)),
        ("device_bloom", "u1", (DEVICE_BLOOM_BITS // 8,)),
        ("last_present_ts", "<f8"),
        ("last_present_country", "<u2"),
        ("last_airline_ts", "<f8"),
        ("recent_n", "<u2"),
        ("recent_ts", "<f8", (RECENT_EVENTS,)),
        ("recent_amount", "<f4", (RECENT_EVENTS,)),
        ("recent_mcc", "u1", (RECENT_EVENTS,)),
        ("recent_channel", "u1", (RECENT_EVENTS,)),
        ("recent_country", "<u2", (RECENT_EVENTS,)),
        ("recent_merchant", "<u4", (RECENT_EVENTS,)),  # crc32 + 1; 0 = no merchant id
        ("recent_device", "<u4", (RECENT_EVENTS,)),  # crc32 + 1; 0 = no device id
    ]
)
_MAGIC = b"IQCS"
_VERSION = 1
_HEADER = struct.Struct("<4sHH")  # magic, version, reserved
PACKED_SIZE = _HEADER.size + STATE_DTYPE.itemsize
_RECENT_FIELDS = ("ts", "amount", "mcc", "channel", "country", "merchant", "device")


def country_code(country: str) -> int:
    """An ISO 3166 alpha-2 code as one uint16 (two ASCII bytes); anything else hashes above them."""
    raw = country.encode()
    if len(raw) == 2:
        return raw[0] << 8 | raw[1]
    return 0x8000 | zlib.crc32(raw) % 0x7FFF


def id_hash(value: str | None) -> int:
    """A merchant or device id as a non-zero uint32 (0 stands for a missing id)."""
    return 0 if value is None else zlib.crc32(value.encode()) % 0xFFFFFFFF + 1


def _bloom_positions(h: int, n_bits: int) -> list[int]:
    h2 = (h * 0x9E3779B1 >> 7) | 1
    return [(h + i * h2) % n_bits for i in range(BLOOM_HASHES)]


def _bloom_has(bits: npt.NDArray[np.uint8], h: int) -> bool:
    return all(bits[p >> 3] >> (p & 7) & 1 for p in _bloom_positions(h, len(bits) * 8))


def _bloom_count(bits: npt.NDArray[np.uint8]) -> float:
    """Linear-counting estimate of the distinct values in a Bloom filter."""
    m = len(bits) * 8
    set_bits = int(np.unpackbits(bits).sum())
    if set_bits >= m:
        return float(m)
    return -m / BLOOM_HASHES * math.log1p(-set_bits / m)


def _hour_angle(ts: float | np.ndarray) -> Any:
    return (np.asarray(ts, dtype=np.float64) % DAY) / DAY * 2 * np.pi


class CardState:
    """A card's running aggregates (see the module doc); `record` is one STATE_DTYPE record."""

    __slots__ = ("record",)

    def __init__(self, record: np.ndarray | None = None) -> None:
        if record is None:
            record = np.zeros((), dtype=STATE_DTYPE)
            for name in ("first_ts", "last_ts", "last_present_ts", "last_airline_ts"):
                record[name] = np.nan
        self.record = record

    def __getitem__(self, name: str) -> Any:
        return self.record[name]

    @property
    def n(self) -> int:
        return int(self.record["n"])

    # --- binary form -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The fixed-size packed form (PACKED_SIZE bytes)."""
        return _HEADER.pack(_MAGIC, _VERSION, 0) + self.record.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> CardState:
        if len(data) != PACKED_SIZE:
            raise ValueError(f"a packed card state has {PACKED_SIZE} bytes, not {len(data)}")
        magic, version, _ = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION:
            raise ValueError(f"not a version-{_VERSION} card state")
        return cls(np.frombuffer(data, dtype=STATE_DTYPE, count=1, offset=_HEADER.size).reshape(()).copy())

    # --- incremental fold --------------------------------------------------------------------

    def update(self, event: Event) -> None:
        """Fold one event into the state (events may come in any time order)."""
        r = self.record
        amount, ts = float(event.amount), float(event.timestamp)
        mcc, channel, country = _MCC_IDS[event.mcc], _CHANNEL_IDS[event.channel], country_code(event.country)
        merchant, device = id_hash(event.merchant_id), id_hash(event.device_id)
        log_amount = float(np.log1p(np.float64(amount)))
        r["n"] += 1
        r["sum_amount"] += amount
        r["max_amount"] = max(float(r["max_amount"]), amount)
        r["sum_log"] += log_amount
        r["sum_log_sq"] += log_amount * log_amount
        r["first_ts"] = np.fmin(r["first_ts"], ts)
        r["last_ts"] = np.fmax(r["last_ts"], ts)
        angle = _hour_angle(ts)
        r["sum_hour_sin"] += float(np.sin(angle))
        r["sum_hour_cos"] += float(np.cos(angle))
        r["mcc_counts"][mcc] += 1
        r["channel_counts"][channel] += 1
        self._count_country(country, ts)
        for h, bits in ((merchant, r["merchant_bloom"]), (device, r["device_bloom"])):
            if h:
                for p in _bloom_positions(h, len(bits) * 8):
                    bits[p >> 3] |= 1 << (p & 7)
        if channel in _PRESENT_IDS and not ts < r["last_present_ts"]:
            r["last_present_ts"], r["last_present_country"] = ts, country
        if mcc == _AIRLINE:
            r["last_airline_ts"] = np.fmax(r["last_airline_ts"], ts)
        self._insert_recent((ts, amount, mcc, channel, country, merchant, device))

    def _count_country(self, country: int, ts: float) -> None:
        # Slots stay sorted by code, so the state does not depend on the order countries first came.
        r = self.record
        codes = r["country_code"]
        used = int(np.count_nonzero(codes))
        at = int(np.searchsorted(codes[:used], country))
        if at == used or codes[at] != country:
            if used == COUNTRY_SLOTS:
                r["country_other"] += 1
                return
            for name in ("country_code", "country_count", "country_last_ts"):
                column = r[name]
                column[at + 1 : used + 1] = column[at:used].copy()
            codes[at], r["country_count"][at], r["country_last_ts"][at] = country, 0, ts
        r["country_count"][at] += 1
        r["country_last_ts"][at] = max(float(r["country_last_ts"][at]), ts)

    def _insert_recent(self, values: tuple[float, ...]) -> None:
        r = self.record
        n = int(r["recent_n"])
        ts = values[0]
        at = int(np.searchsorted(r["recent_ts"][:n], ts, side="right"))
        if n == RECENT_EVENTS:
            if at == 0:
                return  # older than every kept event: only the totals count it
            for name in _RECENT_FIELDS:  # drop the oldest
                column = r[f"recent_{name}"]
                column[: at - 1] = column[1:at].copy()
            at -= 1
        else:
            for name in _RECENT_FIELDS:
                column = r[f"recent_{name}"]
                column[at + 1 : n + 1] = column[at:n].copy()
            r["recent_n"] = n + 1
        for name, value in zip(_RECENT_FIELDS, values, strict=True):
            r[f"recent_{name}"][at] = value

    # --- the same state from a whole history -------------------------------------------------

    @classmethod
    def from_history(cls, history: Sequence[Event]) -> CardState:
        """The state after folding in every event of a history (oldest first), computed at once:
        numpy over the columns, Python work only per distinct country, merchant and device."""
        state = cls()
        cols = EventColumns.of(history)
        n = len(cols.amount)
        if n == 0:
            return state
        r = state.record
        amount = np.asarray(cols.amount, dtype=np.float64)
        ts = np.asarray(cols.timestamp, dtype=np.float64)
        mcc = _MCC_IDS.ids(cols.mcc, n)
        channel = _CHANNEL_IDS.ids(cols.channel, n)
        country = _COUNTRY_CODES.ids(cols.country, n)
        log_amount = np.log1p(amount)
        angle = _hour_angle(ts)
        r["n"] = n
        # Cumulative sums add left to right, in the fold's order.
        r["sum_amount"] = np.cumsum(amount)[-1]
        r["max_amount"] = max(0.0, float(amount.max()))
        r["sum_log"] = np.cumsum(log_amount)[-1]
        r["sum_log_sq"] = np.cumsum(log_amount * log_amount)[-1]
        r["first_ts"], r["last_ts"] = ts.min(), ts.max()
        r["sum_hour_sin"] = np.cumsum(np.sin(angle))[-1]
        r["sum_hour_cos"] = np.cumsum(np.cos(angle))[-1]
        r["mcc_counts"] = np.bincount(mcc, minlength=_N_MCC)
        r["channel_counts"] = np.bincount(channel, minlength=_N_CHANNEL)
        _countries(r, country, ts)
        # Merchants and devices: hashed once per distinct id for the filters, per event only for
        # the recent events.
        merchant_ids, merchant_hashes = _distinct_hashes(cols.merchant_id)
        device_ids, device_hashes = _distinct_hashes(cols.device_id)
        _bloom_fill(r["merchant_bloom"], merchant_hashes)
        _bloom_fill(r["device_bloom"], device_hashes)
        present = np.flatnonzero(_PRESENT_BY_ID[channel])
        if present.size:
            last = int(present[ts[present] == ts[present].max()][-1])  # the latest; of equal times, the last
            r["last_present_ts"], r["last_present_country"] = ts[last], country[last]
        airline = ts[mcc == _AIRLINE]
        if airline.size:
            r["last_airline_ts"] = airline.max()
        order = np.argsort(ts, kind="stable")[-RECENT_EVENTS:]
        k = len(order)
        r["recent_n"] = k
        picked = order.tolist()
        merchant = _picked_hashes(cols.merchant_id, picked, merchant_ids, merchant_hashes)
        device = _picked_hashes(cols.device_id, picked, device_ids, device_hashes)
        for name, column in zip(_RECENT_FIELDS[:5], (ts, amount, mcc, channel, country), strict=True):
            r[f"recent_{name}"][:k] = column[order]
        r["recent_merchant"][:k] = merchant
        r["recent_device"][:k] = device
        return state


# Country codes by name, remembered across calls as the MCC and channel ids are.
_COUNTRY_CODES = _Remembered(country_code)


def _distinct_hashes(values: Sequence[str | None]) -> tuple[list[str], npt.NDArray[np.int64]]:
    """The distinct ids (None left out) and their id_hash, one crc32 per id."""
    distinct = dict.fromkeys(values)
    distinct.pop(None, None)
    ids = list(cast("dict[str, None]", distinct))
    crc = np.fromiter(map(zlib.crc32, map(str.encode, ids)), np.int64, len(ids))
    return ids, crc % 0xFFFFFFFF + 1


def _picked_hashes(
    values: Sequence[str | None], picked: list[int], ids: list[str], hashes: npt.NDArray[np.int64]
) -> list[int]:
    """id_hash of the values at these positions: looked up among the distinct ids' hashes when
    there are few of them, hashed afresh otherwise."""
    chosen = itemgetter(*picked)(values) if len(picked) > 1 else [values[i] for i in picked]
    if len(ids) > 2 * len(picked):
        return list(map(id_hash, chosen))
    index = dict(zip(ids, hashes.tolist(), strict=True))
    return list(map(index.get, chosen, repeat(0)))  # a missing id (None) hashes to 0


def _bloom_fill(bits: npt.NDArray[np.uint8], hashes: np.ndarray) -> None:
    """Set the filter bits of these (non-zero) hashes: `_bloom_positions`, for all of them at once."""
    if not hashes.size:
        return
    m = len(bits) * 8
    h = hashes.astype(np.uint64)  # below 2**32: every product and sum here stays below 2**64
    h2 = (h * np.uint64(0x9E3779B1) >> np.uint64(7)) | np.uint64(1)
    flags = np.zeros(m, dtype=np.uint8)
    for i in range(BLOOM_HASHES):
        flags[(h + np.uint64(i) * h2) % np.uint64(m)] = 1
    bits |= np.packbits(flags, bitorder="little")


def _countries(r: np.ndarray, country: np.ndarray, ts: np.ndarray) -> None:
    codes, first, counts = np.unique(country, return_index=True, return_counts=True)
    by_first = np.argsort(first)
    kept, other = np.sort(by_first[:COUNTRY_SLOTS]), by_first[COUNTRY_SLOTS:]  # sorted by code
    k = len(kept)
    r["country_code"][:k] = codes[kept]
    r["country_count"][:k] = counts[kept]
    last_ts = np.full(len(codes), -np.inf)
    np.maximum.at(last_ts, np.searchsorted(codes, country), ts)
    r["country_last_ts"][:k] = last_ts[kept]
    r["country_other"] = int(counts[other].sum())


# --- features of a transaction against a state ---------------------------------------------------

AGGREGATE_FEATURES = (
    "log_amount", "amount_z", "log_amount_vs_mean", "log_amount_vs_max", "log_n_history",
    "log_history_days", "log_rate_per_day", "log_count_10m", "log_count_1h", "log_count_24h",
    "log_count_7d", "log_sum_1h", "log_sum_24h", "log_1h_vs_usual", "log_24h_vs_usual",
    "log_small_10m", "log_small_online_1h", "log_merchants_1h", "log_countries_24h", "log_devices_7d",
    "log_minutes_since_last", "has_device", "new_device", "log_n_devices", "new_merchant",
    "log_n_merchants", "new_country", "home_country", "country_share", "foreign_share",
    "log_n_countries", "log_hours_since_same_country", "mcc_share", "channel_share", "hour_deviation",
    "log_hours_since_present", "present_elsewhere", "log_hours_since_airline", "foreign_share_7d",
    "risky_category", "card_present", "ecommerce", "atm", "contactless", "recurring",
)  # fmt: skip
N_AGGREGATES = len(AGGREGATE_FEATURES)


def _log_hours(seconds: float) -> float:
    if not math.isfinite(seconds):
        return math.log1p(GAP_CAP_HOURS)
    return math.log1p(min(max(seconds, 0.0) / HOUR, GAP_CAP_HOURS))


def aggregate_features(state: CardState, txn: Event) -> npt.NDArray[np.float32]:
    """The aggregate vector (AGGREGATE_FEATURES order) of `txn` against the card's state before it."""
    r = state.record
    n = state.n
    t, amount = float(txn.timestamp), float(txn.amount)
    mcc, channel = _MCC_IDS[txn.mcc], _CHANNEL_IDS[txn.channel]
    country = country_code(txn.country)
    f = dict.fromkeys(AGGREGATE_FEATURES, 0.0)
    log_amount = math.log1p(amount)
    f["log_amount"] = log_amount
    mean_log = float(r["sum_log"]) / n if n else log_amount
    var_log = max(float(r["sum_log_sq"]) / n - mean_log * mean_log, 0.0) if n else 0.0
    f["amount_z"] = (log_amount - mean_log) / (math.sqrt(var_log) + 0.1)
    mean_amount = float(r["sum_amount"]) / n if n else amount
    f["log_amount_vs_mean"] = math.log((amount + 0.01) / (mean_amount + 0.01))
    f["log_amount_vs_max"] = math.log((amount + 0.01) / (float(r["max_amount"]) + 0.01)) if n else 0.0
    f["log_n_history"] = math.log1p(n)
    days = max((t - float(r["first_ts"])) / DAY, 1.0) if n else 1.0
    rate = n / days
    f["log_history_days"], f["log_rate_per_day"] = math.log(days), math.log1p(rate)
    _recent_features(f, r, t, rate)
    f["log_minutes_since_last"] = math.log1p(max(t - float(r["last_ts"]), 0.0) / 60.0) if n else math.log1p(1e5)
    device, merchant = id_hash(txn.device_id), id_hash(txn.merchant_id)
    devices_seen = bool(r["device_bloom"].any())
    f["has_device"] = float(device != 0)
    f["new_device"] = float(device != 0 and devices_seen and not _bloom_has(r["device_bloom"], device))
    f["log_n_devices"] = math.log1p(_bloom_count(r["device_bloom"]))
    f["new_merchant"] = float(merchant != 0 and not _bloom_has(r["merchant_bloom"], merchant))
    f["log_n_merchants"] = math.log1p(_bloom_count(r["merchant_bloom"]))
    _country_features(f, r, country, t, n)
    f["mcc_share"] = float(r["mcc_counts"][mcc]) / max(n, 1)
    f["channel_share"] = float(r["channel_counts"][channel]) / max(n, 1)
    mean_angle = math.atan2(float(r["sum_hour_sin"]), float(r["sum_hour_cos"]))
    f["hour_deviation"] = abs(math.remainder(float(_hour_angle(t)) - mean_angle, 2 * math.pi)) if n else 0.0
    f["log_hours_since_present"] = _log_hours(t - float(r["last_present_ts"]))
    f["present_elsewhere"] = float(
        math.isfinite(float(r["last_present_ts"])) and int(r["last_present_country"]) != country
    )
    f["log_hours_since_airline"] = _log_hours(t - float(r["last_airline_ts"]))
    f["risky_category"] = float(mcc in _RISKY_MCC)
    for name in CHANNELS:
        f[name] = float(channel == CHANNELS.index(name) + 2)
    return np.fromiter((f[k] for k in AGGREGATE_FEATURES), np.float32, N_AGGREGATES)


def _recent_features(f: dict[str, float], r: np.ndarray, t: float, rate: float) -> None:
    k = int(r["recent_n"])
    ts = r["recent_ts"][:k]
    amount = r["recent_amount"][:k].astype(np.float64)
    small = amount < SMALL_AMOUNT
    online = r["recent_channel"][:k] == _ECOMMERCE

    def within(seconds: float) -> npt.NDArray[np.bool_]:
        inside: npt.NDArray[np.bool_] = (ts >= t - seconds) & (ts <= t)
        return inside

    w10m, w1h, w24h, w7d = within(600.0), within(HOUR), within(DAY), within(7 * DAY)
    c1h, c24h = int(w1h.sum()), int(w24h.sum())
    f["log_count_10m"] = math.log1p(int(w10m.sum()))
    f["log_count_1h"] = math.log1p(c1h)
    f["log_count_24h"] = math.log1p(c24h)
    f["log_count_7d"] = math.log1p(int(w7d.sum()))
    f["log_sum_1h"] = math.log1p(float(amount[w1h].sum()))
    f["log_sum_24h"] = math.log1p(float(amount[w24h].sum()))
    f["log_1h_vs_usual"] = math.log((c1h + 1.0) / (rate / 24.0 + 1.0))
    f["log_24h_vs_usual"] = math.log((c24h + 1.0) / (rate + 1.0))
    f["log_small_10m"] = math.log1p(int((small & w10m).sum()))
    f["log_small_online_1h"] = math.log1p(int((small & online & w1h).sum()))
    f["log_merchants_1h"] = math.log1p(len(np.unique(r["recent_merchant"][:k][w1h])))
    f["log_countries_24h"] = math.log1p(len(np.unique(r["recent_country"][:k][w24h])))
    devices = r["recent_device"][:k][w7d]
    f["log_devices_7d"] = math.log1p(len(np.unique(devices[devices > 0])))


def _country_features(f: dict[str, float], r: np.ndarray, country: int, t: float, n: int) -> None:
    codes, counts = r["country_code"], r["country_count"]
    used = codes > 0
    f["log_n_countries"] = math.log1p(int(used.sum()))
    if not n:
        f["home_country"] = 1.0
        f["log_hours_since_same_country"] = math.log1p(GAP_CAP_HOURS)
        return
    home = int(codes[int(np.argmax(counts))])
    slot = np.flatnonzero(codes == country)
    seen = slot.size > 0
    f["new_country"] = float(not seen and not r["country_other"])
    f["home_country"] = float(country == home)
    f["country_share"] = float(counts[slot[0]]) / n if seen else 0.0
    f["foreign_share"] = 1.0 - float(counts.max()) / n
    f["log_hours_since_same_country"] = _log_hours(t - float(r["country_last_ts"][slot[0]]) if seen else math.inf)
    k = int(r["recent_n"])
    week = r["recent_ts"][:k] >= t - 7 * DAY
    f["foreign_share_7d"] = float((r["recent_country"][:k][week] != home).mean()) if week.any() else 0.0


def card_aggregates(history: Sequence[Event], txn: Event) -> npt.NDArray[np.float32]:
    """The aggregate vector of a stateless request: the state built from its history, then read."""
    return aggregate_features(CardState.from_history(history), txn)
