"""A seeded card-transaction simulator: customers, their histories, fraud and legitimate drift.

Every example is one fresh customer drawn from `numpy.random.default_rng([seed, index])`, so
example i is the same on every machine and any slice of a data set can be rebuilt on its own.
A customer has a home country, a spending profile over merchant categories, favourite merchants,
a time-of-day habit, devices that come and go, and a travel frequency; some move abroad. Their
history is a stream of ordinary spending; the transaction to score is either the next ordinary
event, one of the hard legitimate cases (travel, a move, a new phone, a big purchase, a shopping
spree, app-store micro-charges, a visit to a merchant that was compromised), or one of five fraud
patterns whose evidence sits in the history (card testing, account takeover, compromised
merchant, velocity, geographic impossibility).

Amounts are in units of the event's currency and drawn on one scale for every currency.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.fraud_features import Event, FraudInput

FRAUD_PATTERNS = (
    "card_testing",
    "account_takeover",
    "compromised_merchant",
    "velocity",
    "geo_impossible",
)
LEGIT_SCENARIOS = (
    "legit",
    "legit_travel",
    "legit_new_device",
    "legit_big_purchase",
    "legit_spree",
    "legit_small_charges",
    "legit_compromised_visit",
    "legit_moved",
)
# Most legitimate transactions are ordinary; the rest are the cases a model must not flag.
LEGIT_WEIGHTS = (0.52, 0.12, 0.07, 0.07, 0.06, 0.05, 0.05, 0.06)

CURRENCY = {
    "US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "ES": "EUR", "IT": "EUR", "NL": "EUR",
    "IE": "EUR", "PT": "EUR", "GR": "EUR", "HR": "EUR", "CA": "CAD", "AU": "AUD", "SE": "SEK",
    "PL": "PLN", "MX": "MXN", "TH": "THB", "JP": "JPY", "TR": "TRY", "AE": "AED", "RO": "RON",
    "NG": "NGN", "VN": "VND", "BR": "BRL", "ID": "IDR", "UA": "UAH", "PH": "PHP", "MY": "MYR",
}  # fmt: skip
HOME_COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "AU", "SE", "PL", "IE")
HOME_WEIGHTS = (0.3, 0.12, 0.1, 0.08, 0.06, 0.06, 0.05, 0.07, 0.05, 0.04, 0.04, 0.03)
TRAVEL_COUNTRIES = ("ES", "IT", "FR", "US", "GB", "PT", "GR", "MX", "TH", "JP", "DE", "NL", "TR", "AE", "HR")
FRAUD_COUNTRIES = ("RO", "NG", "VN", "BR", "ID", "UA", "PH", "MY")

LEGIT_MCCS = (
    "5411",
    "5541",
    "5812",
    "5999",
    "4121",
    "5311",
    "4899",
    "5815",
    "6011",
    "5732",
    "7011",
    "7995",
    "4829",
)
# Portfolio-wide category mix; each customer draws their own around it.
MCC_WEIGHTS = (0.25, 0.10, 0.18, 0.12, 0.05, 0.08, 0.03, 0.05, 0.04, 0.03, 0.01, 0.03, 0.03)
MEDIAN_AMOUNT = {
    "5411": 45.0, "5541": 50.0, "5812": 30.0, "5999": 35.0, "4121": 18.0, "5311": 60.0,
    "4899": 15.0, "5815": 4.0, "6011": 100.0, "5732": 180.0, "7011": 150.0, "7995": 40.0,
    "4829": 200.0, "airline": 380.0,
}  # fmt: skip
CHANNEL_MIX = {
    "5411": {"contactless": 0.6, "card_present": 0.4},
    "5541": {"card_present": 0.7, "contactless": 0.3},
    "5812": {"contactless": 0.5, "card_present": 0.3, "ecommerce": 0.2},
    "5999": {"ecommerce": 0.6, "card_present": 0.2, "contactless": 0.2},
    "4121": {"ecommerce": 0.6, "contactless": 0.4},
    "5311": {"card_present": 0.5, "ecommerce": 0.3, "contactless": 0.2},
    "4899": {"recurring": 1.0},
    "5815": {"ecommerce": 0.6, "recurring": 0.4},
    "6011": {"atm": 1.0},
    "5732": {"card_present": 0.5, "ecommerce": 0.5},
    "7011": {"card_present": 0.6, "ecommerce": 0.4},
    "7995": {"ecommerce": 1.0},
    "4829": {"ecommerce": 1.0},
}
TRAVEL_MCCS = ("5812", "7011", "4121", "5999", "5411", "6011", "5541")
TRAVEL_WEIGHTS = (0.35, 0.1, 0.15, 0.15, 0.1, 0.1, 0.05)
ONLINE = ("ecommerce", "recurring")
MERCHANTS_PER_POOL = 60  # merchants per (country, category): enough to have favourites and new ones
DAY = 86400.0
HOUR = 3600.0
END_TIME = 1.76e9  # histories end around October 2025


@dataclass
class SimConfig:
    seed: int = 0
    # Training sets are enriched (real portfolios run at 0.1-0.5%) so that a few thousand
    # examples hold enough fraud to learn from; evaluation re-weights to a realistic rate.
    fraud_rate: float = 0.08
    # History lengths: a mixture of log-uniform ranges (low, high, weight), tens to 4,096 events.
    lengths: tuple[tuple[int, int, float], ...] = ((16, 512, 0.9), (512, 4096, 0.1))


@dataclass
class LabelledExample:
    input: FraudInput
    label: int  # 1 fraud, 0 legitimate
    pattern: str  # a FRAUD_PATTERNS or LEGIT_SCENARIOS name


@dataclass
class _World:
    """What every customer shares: the merchants that leaked card data."""

    compromised: dict[str, list[str]]  # home country -> compromised merchant ids


@dataclass
class _Profile:
    home: str
    rate_per_day: float
    mcc_p: np.ndarray  # (len(LEGIT_MCCS),)
    scale: np.ndarray  # (len(LEGIT_MCCS),) the customer's typical amount per category
    peak_hour: float
    hour_sd: float
    favourites: dict[str, np.ndarray]  # mcc -> merchant numbers
    p_new_merchant: float
    trips_per_year: float
    devices: list[tuple[str, float]] = field(default_factory=list)  # (id, first use ts)
    moved: tuple[float, str] | None = None  # (ts, new home)


@dataclass
class _Stream:
    """A history as columns, so scenarios can edit it before it becomes Events."""

    ts: np.ndarray
    amount: np.ndarray
    mcc: list[str]
    channel: list[str]
    country: list[str]
    merchant: list[str | None]
    device: list[str | None]

    def __len__(self) -> int:
        return len(self.ts)

    def events(self) -> list[Event]:
        order = np.argsort(self.ts, kind="stable").tolist()
        ts, amount = self.ts.tolist(), np.round(self.amount, 2).tolist()
        return [
            Event(
                amount[i], CURRENCY[self.country[i]], self.mcc[i], self.channel[i],
                self.country[i], ts[i], self.merchant[i], self.device[i],
            )
            for i in order
        ]  # fmt: skip

    def pop_last(self) -> Event:
        last = self.events()[-1]
        keep = np.argsort(self.ts, kind="stable")[:-1]
        self.ts, self.amount = self.ts[keep], self.amount[keep]
        for name in ("mcc", "channel", "country", "merchant", "device"):
            column = getattr(self, name)
            setattr(self, name, [column[i] for i in keep])
        return last

    def append(self, events: list[Event]) -> None:
        self.ts = np.concatenate([self.ts, [e.timestamp for e in events]])
        self.amount = np.concatenate([self.amount, [e.amount for e in events]])
        for e in events:
            self.mcc.append(e.mcc)
            self.channel.append(e.channel)
            self.country.append(e.country)
            self.merchant.append(e.merchant_id)
            self.device.append(e.device_id)


Rng = np.random.Generator
Scenario = tuple[list[Event], Event]  # (history oldest first, transaction to score)


def merchant_id(country: str, mcc: str, number: int) -> str:
    return f"{country}-{mcc}-{number:03d}"


def _world(seed: int) -> _World:
    rng = np.random.default_rng([seed, 2**31 - 1])
    compromised = {}
    for home in HOME_COUNTRIES:
        mccs = rng.choice(["5541", "5812", "5411", "5999"], size=2, replace=False)
        compromised[home] = [merchant_id(home, m, int(rng.integers(MERCHANTS_PER_POOL))) for m in mccs]
    return _World(compromised)


class FraudSimulator:
    """Labelled examples, example i determined by (config.seed, i) alone."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.world = _world(self.config.seed)

    def example(self, index: int) -> LabelledExample:
        rng = np.random.default_rng([self.config.seed, index])
        n = _history_length(rng, self.config.lengths)
        profile = _profile(rng, index)
        if rng.random() < self.config.fraud_rate:
            pattern = FRAUD_PATTERNS[int(rng.integers(len(FRAUD_PATTERNS)))]
            history, txn = _FRAUD[pattern](rng, profile, n, self.world)
            return LabelledExample(FraudInput(history, txn), 1, pattern)
        scenario = LEGIT_SCENARIOS[int(rng.choice(len(LEGIT_SCENARIOS), p=_LEGIT_P))]
        history, txn = _LEGIT[scenario](rng, profile, n, self.world)
        return LabelledExample(FraudInput(history, txn), 0, scenario)

    def examples(self, count: int, start: int = 0) -> Iterator[LabelledExample]:
        for index in range(start, start + count):
            yield self.example(index)


_LEGIT_P = np.asarray(LEGIT_WEIGHTS) / sum(LEGIT_WEIGHTS)


def _history_length(rng: np.random.Generator, lengths: tuple[tuple[int, int, float], ...]) -> int:
    weights = np.asarray([w for _, _, w in lengths])
    low, high, _ = lengths[int(rng.choice(len(lengths), p=weights / weights.sum()))]
    return int(np.exp(rng.uniform(np.log(low), np.log(high + 1))))


def _profile(rng: np.random.Generator, index: int) -> _Profile:
    home = str(rng.choice(HOME_COUNTRIES, p=np.asarray(HOME_WEIGHTS) / sum(HOME_WEIGHTS)))
    wealth = rng.lognormal(0.0, 0.5)
    mcc_p = rng.dirichlet(np.asarray(MCC_WEIGHTS) * 15.0)
    favourites = {m: rng.choice(MERCHANTS_PER_POOL, size=int(rng.integers(2, 8)), replace=False) for m in LEGIT_MCCS}
    kind = rng.random()
    # Homebodies, occasional travellers and frequent travellers: a foreign purchase means
    # different things for each.
    trips = rng.uniform(0, 1) if kind < 0.6 else rng.uniform(2, 5) if kind < 0.9 else rng.uniform(8, 20)
    profile = _Profile(
        home=home,
        rate_per_day=float(rng.lognormal(np.log(2.5), 0.6)),
        mcc_p=mcc_p,
        scale=np.asarray([MEDIAN_AMOUNT[m] for m in LEGIT_MCCS]) * wealth * rng.lognormal(0, 0.3, len(LEGIT_MCCS)),
        peak_hour=float(rng.uniform(8, 21)),
        hour_sd=float(rng.uniform(1.5, 4.0)),
        favourites=favourites,
        p_new_merchant=float(rng.uniform(0.05, 0.3)),
        trips_per_year=float(trips),
    )
    return profile


def _add_devices(rng: np.random.Generator, profile: _Profile, t0: float, t1: float, tag: str) -> None:
    profile.devices = [(f"dev-{tag}-0", t0 - DAY)]
    for k in range(1, int(rng.integers(1, 4))):
        profile.devices.append((f"dev-{tag}-{k}", float(rng.uniform(t0, t1))))


def _home_at(profile: _Profile, ts: np.ndarray | Sequence[float]) -> list[str]:
    if profile.moved is None:
        return [profile.home] * len(ts)
    when, new_home = profile.moved
    return [new_home if t >= when else profile.home for t in ts]


def _times(rng: np.random.Generator, profile: _Profile, n: int, t_end: float) -> np.ndarray:
    days = max(n / profile.rate_per_day, 1.0)
    t0 = t_end - days * DAY
    day = np.floor(rng.uniform(0, days, n))
    hour = np.mod(rng.normal(profile.peak_hour, profile.hour_sd, n), 24.0)
    return np.sort(t0 + day * DAY + hour * HOUR + rng.uniform(0, 60, n))


_CHANNEL_CDF = {m: (list(mix), np.cumsum(list(mix.values()))) for m, mix in CHANNEL_MIX.items()}


def _channels(rng: np.random.Generator, mccs: list[str]) -> list[str]:
    draws = rng.random(len(mccs)).tolist()
    out = []
    for m, u in zip(mccs, draws, strict=True):
        names, cdf = _CHANNEL_CDF[m]
        out.append(names[min(int(np.searchsorted(cdf, u)), len(names) - 1)])
    return out


def _stream(rng: np.random.Generator, profile: _Profile, n: int, t_end: float, tag: str) -> _Stream:
    """n ordinary events ending before t_end, trips included."""
    ts = _times(rng, profile, n, t_end)
    _add_devices(rng, profile, float(ts[0]) if n else t_end, t_end, tag)
    cat = rng.choice(len(LEGIT_MCCS), p=profile.mcc_p, size=n)
    mccs = [LEGIT_MCCS[c] for c in cat]
    amount = np.round(profile.scale[cat] * rng.lognormal(0, 0.55, n), 2)
    country = _home_at(profile, ts)
    stream = _Stream(ts, amount, mccs, _channels(rng, mccs), country, [None] * n, [None] * n)
    _place_merchants(rng, profile, stream)
    _place_devices(rng, profile, stream)
    _add_trips(rng, profile, stream)
    return stream


def _place_merchants(rng: np.random.Generator, profile: _Profile, stream: _Stream) -> None:
    n = len(stream)
    new = (rng.random(n) < profile.p_new_merchant).tolist()
    fresh = rng.integers(MERCHANTS_PER_POOL, size=n).tolist()
    pick = rng.random(n).tolist()
    for i, m in enumerate(stream.mcc):
        favs = profile.favourites[m]
        k = fresh[i] if new[i] else int(favs[int(pick[i] * len(favs))])
        stream.merchant[i] = merchant_id(stream.country[i], m, k)


def _device_at(rng: np.random.Generator, profile: _Profile, ts: float) -> str | None:
    active = [d for d, since in profile.devices if since <= ts]
    if rng.random() < 0.08:  # some merchants do not pass a device id
        return None
    # Customers mostly use their newest device, sometimes an older one.
    return active[-1] if rng.random() < 0.8 else active[int(rng.integers(len(active)))]


def _place_devices(rng: np.random.Generator, profile: _Profile, stream: _Stream) -> None:
    profile.devices.sort(key=lambda d: d[1])
    for i, ch in enumerate(stream.channel):
        if ch in ONLINE:
            stream.device[i] = _device_at(rng, profile, float(stream.ts[i]))


def _add_trips(rng: np.random.Generator, profile: _Profile, stream: _Stream) -> None:
    if len(stream) < 2:
        return
    span_days = (stream.ts[-1] - stream.ts[0]) / DAY
    for _ in range(int(rng.poisson(profile.trips_per_year * span_days / 365.0))):
        start = float(rng.uniform(stream.ts[0], stream.ts[-1]))
        _trip(rng, profile, stream, start, start + float(rng.uniform(2, 14)) * DAY)


def _trip(rng: np.random.Generator, profile: _Profile, stream: _Stream, start: float, end: float) -> str:
    """Move the events in [start, end) abroad, book a flight before it; returns the destination."""
    home = _home_at(profile, np.asarray([start]))[0]
    dest = str(rng.choice([c for c in TRAVEL_COUNTRIES if c != home]))
    # Nobody pays at home and abroad within hours: the flight leaves a gap before the first event.
    gap = float(rng.uniform(3, 10)) * HOUR
    before = (stream.ts >= start - gap) & (stream.ts < start)
    stream.ts[before] = start - gap - rng.uniform(0, HOUR, int(before.sum()))
    inside = np.flatnonzero((stream.ts >= start) & (stream.ts < end))
    for j, i in enumerate(inside):
        m = "7011" if j == 0 else str(rng.choice(TRAVEL_MCCS, p=TRAVEL_WEIGHTS))
        stream.mcc[i], stream.country[i] = m, dest
        stream.channel[i] = "atm" if m == "6011" else str(rng.choice(["card_present", "contactless"]))
        stream.merchant[i] = merchant_id(dest, m, int(rng.integers(MERCHANTS_PER_POOL)))
        stream.amount[i] = round(float(MEDIAN_AMOUNT[m] * rng.lognormal(0, 0.6)), 2)
        stream.device[i] = None
    _book_flight(rng, stream, start, home)
    return dest


def _book_flight(rng: np.random.Generator, stream: _Stream, start: float, home: str) -> None:
    booked = start - float(rng.uniform(2, 40)) * DAY
    candidates = np.flatnonzero((stream.ts < start - DAY) & (np.asarray(stream.country) == home))
    if not candidates.size:
        return
    i = int(candidates[np.argmin(np.abs(stream.ts[candidates] - booked))])
    stream.mcc[i], stream.channel[i] = str(rng.integers(3000, 3300)), "ecommerce"
    stream.amount[i] = round(float(MEDIAN_AMOUNT["airline"] * rng.lognormal(0, 0.5)), 2)
    stream.merchant[i] = merchant_id(home, "airline", int(rng.integers(MERCHANTS_PER_POOL)))


def _end_time(rng: np.random.Generator) -> float:
    return END_TIME + float(rng.uniform(-60, 0)) * DAY


def _ordinary(rng: np.random.Generator, profile: _Profile, n: int) -> tuple[list[Event], Event]:
    """The history and the next event of the same customer."""
    stream = _stream(rng, profile, n + 1, _end_time(rng), str(rng.integers(1 << 40)))
    events = stream.events()
    return events[:-1], events[-1]


def _event(
    rng: np.random.Generator, country: str, mcc: str, channel: str, amount: float, ts: float,
    merchant: str | None = None, device: str | None = None,
) -> Event:  # fmt: skip
    merchant = merchant or merchant_id(country, mcc, int(rng.integers(MERCHANTS_PER_POOL)))
    return Event(round(amount, 2), CURRENCY[country], mcc, channel, country, ts, merchant, device)


def _base(rng: np.random.Generator, profile: _Profile, n: int) -> tuple[_Stream, float]:
    """A history of n events and the time of the next one."""
    t_end = _end_time(rng)
    stream = _stream(rng, profile, n, t_end, str(rng.integers(1 << 40)))
    return stream, float(stream.ts.max()) + float(rng.exponential(DAY / profile.rate_per_day))


def _typical(profile: _Profile, mcc: str) -> float:
    return float(profile.scale[LEGIT_MCCS.index(mcc)]) if mcc in LEGIT_MCCS else MEDIAN_AMOUNT[mcc]


# --- legitimate scenarios ---------------------------------------------------------------------


def _legit(rng: Rng, profile: _Profile, n: int, world: _World) -> Scenario:
    return _ordinary(rng, profile, n)


def _legit_travel(rng: Rng, profile: _Profile, n: int, world: _World) -> Scenario:
    stream, t = _base(rng, profile, n)
    dest = _trip(rng, profile, stream, t - float(rng.uniform(0.3, 6)) * DAY, t + DAY)
    m = str(rng.choice(TRAVEL_MCCS, p=TRAVEL_WEIGHTS))
    channel = "atm" if m == "6011" else "card_present"
    return stream.events(), _event(rng, dest, m, channel, MEDIAN_AMOUNT[m] * rng.lognormal(0, 0.6), t)


def _legit_new_device(rng: Rng, profile: _Profile, n: int, world: _World) -> Scenario:
    stream, t = _base(rng, profile, n)
    m = str(rng.choice(["5999", "5311", "5815", "4121"]))
    amount = _typical(profile, m) * rng.lognormal(0, 0.5)
    device = f"dev-new-{rng.integers(1 << 40)}"
    return stream.events(), _event(rng, _home_at(profile, [t])[0], m, "ecommerce", amount, t, device=device)


def _legit_big_purchase(rng: Rng, profile: _Profile, n: int, world: _World) -> Scenario:
    stream, t = _base(rng, profile, n)
    m = str(rng.choice(["5732", "5311"]))
    amount = _typical(profile, m) * rng.uniform(3, 12)
    return stream.events(), _event(rng, _home_at(profile, [t])[0], m, "card_present", amount, t)


def _shopping(rng: Rng, profile: _Profile, country: str, count: int, t: float, span: float) -> list[Event]:
    times = np.sort(t - rng.uniform(60, span, count))
    out = []
    for ts in times:
        m = str(rng.choice(["5411", "5812", "5999", "5311", "5541"]))
        out.append(_event(rng, country, m, "contactless", _typical(profile, m) * rng.lognormal(0, 0.5), float(ts)))
    return out


def _legit_spree(rng: Rng, profile: _Profile, n: int, world: _World) -> Scenario:
    count = int(rng.integers(3, 7))
    stream, t = _base(rng, profile, max(n - count, 1))
    home = _home_at(profile, [t])[0]
    stream.append(_shopping(rng, profile, home, count, t, 2 * HOUR))
    return stream.events(), _shopping(rng, profile, home, 1, t + 120, 60)[0]


def _legit_small_charges(rng: Rng, profile: _Profile, n: int, world: _World) -> Scenario:
    count = int(rng.integers(2, 5))
    stream, t = _base(rng, profile, max(n - count, 1) + 1)
    txn = stream.pop_last()
    home = _home_at(profile, [t])[0]
    store = merchant_id(home, "5815", int(rng.integers(MERCHANTS_PER_POOL)))
    device = profile.devices[-1][0]
    charges = [
        _event(rng, home, "5815", "ecommerce", float(rng.choice([0.99, 1.49, 1.99])), t - float(s), store, device)
        for s in np.sort(rng.uniform(60, 1800, count))[::-1]
    ]
    stream.append(charges)
    txn.timestamp = t
    return stream.events(), txn


def _visit(rng: Rng, profile: _Profile, stream: _Stream, world: _World, t: float) -> None:
    """Turn one event 2-30 days before t into a card-present visit to a compromised merchant."""
    if not len(stream):
        return
    home = _home_at(profile, [t])[0]
    merchant = str(rng.choice(world.compromised[home]))
    country, mcc = merchant.split("-")[0], merchant.split("-")[1]
    when = t - float(rng.uniform(2, 30)) * DAY
    i = int(np.argmin(np.abs(stream.ts - when)))
    stream.mcc[i], stream.channel[i], stream.country[i] = mcc, "card_present", country
    stream.merchant[i], stream.device[i] = merchant, None
    stream.amount[i] = round(_typical(profile, mcc) * float(rng.lognormal(0, 0.4)), 2)


def _legit_compromised_visit(rng: Rng, profile: _Profile, n: int, world: _World) -> Scenario:
    history, txn = _ordinary(rng, profile, n)
    stream = _stream_of(history)
    _visit(rng, profile, stream, world, txn.timestamp)
    return stream.events(), txn


def _legit_moved(rng: Rng, profile: _Profile, n: int, world: _World) -> Scenario:
    new_home = str(rng.choice([c for c in HOME_COUNTRIES if c != profile.home]))
    profile.moved = (END_TIME - float(rng.uniform(65, 300)) * DAY, new_home)
    return _ordinary(rng, profile, n)


def _stream_of(events: list[Event]) -> _Stream:
    stream = _Stream(np.zeros(0), np.zeros(0), [], [], [], [], [])
    stream.append(events)
    return stream


# --- fraud patterns ---------------------------------------------------------------------------


def _fraud_device(rng: Rng) -> str:
    return f"dev-fx-{rng.integers(1 << 40)}"


def _card_testing(rng: Rng, profile: _Profile, n: int, world: _World) -> Scenario:
    count = int(rng.integers(3, 11))
    stream, t = _base(rng, profile, max(n - count, 1))
    device = _fraud_device(rng) if rng.random() < 0.5 else None
    # A few minutes of tiny charges, the big one up to half an hour later.
    end = t - float(rng.uniform(1, 30)) * 60
    tests = []
    for s in np.sort(end - rng.uniform(0, float(rng.uniform(2, 20)) * 60, count)):
        country = str(rng.choice(TRAVEL_COUNTRIES + FRAUD_COUNTRIES))
        m = str(rng.choice(["5999", "5815", "4899", "5311"]))
        tests.append(_event(rng, country, m, "ecommerce", float(rng.uniform(0.1, 1.99)), float(s), device=device))
    stream.append(tests)
    m = str(rng.choice(["5732", "5999", "5311"]))
    txn = _event(
        rng,
        str(rng.choice(TRAVEL_COUNTRIES)),
        m,
        "ecommerce",
        float(rng.uniform(150, 2500)),
        t,
        device=device,
    )
    return stream.events(), txn


def _account_takeover(rng: Rng, profile: _Profile, n: int, world: _World) -> Scenario:
    stream, t = _base(rng, profile, n)
    home = _home_at(profile, [t])[0]
    country = str(rng.choice(FRAUD_COUNTRIES + TRAVEL_COUNTRIES)) if rng.random() < 0.8 else home
    m = str(rng.choice(["4829", "5732", "7995", "5999"], p=[0.5, 0.3, 0.1, 0.1]))
    amount = max(_typical(profile, "5999"), 30.0) * float(rng.uniform(2, 20))
    return stream.events(), _event(rng, country, m, "ecommerce", amount, t, device=_fraud_device(rng))


def _compromised_merchant(rng: Rng, profile: _Profile, n: int, world: _World) -> Scenario:
    stream, t = _base(rng, profile, n)
    _visit(rng, profile, stream, world, t)
    home = _home_at(profile, [t])[0]
    m = str(rng.choice(["5732", "5999", "6011", "5311"]))
    if rng.random() < 0.6:
        channel = "atm" if m == "6011" else "card_present"
        return stream.events(), _event(rng, home, m, channel, _typical(profile, m) * rng.uniform(1.5, 6), t)
    device = _fraud_device(rng) if rng.random() < 0.5 else None
    return stream.events(), _event(
        rng, home, "5999", "ecommerce", _typical(profile, "5999") * rng.uniform(1.5, 8), t, device=device
    )


def _velocity(rng: Rng, profile: _Profile, n: int, world: _World) -> Scenario:
    count = int(rng.integers(5, 13))
    stream, t = _base(rng, profile, max(n - count, 1))
    home = _home_at(profile, [t])[0]
    burst = []
    for s in np.sort(rng.uniform(60, float(rng.uniform(30, 120)) * 60, count))[::-1]:
        m = str(rng.choice(["5999", "5311", "5732", "5411", "6011"]))
        channel = "atm" if m == "6011" else "card_present"
        burst.append(_event(rng, home, m, channel, _typical(profile, m) * float(rng.uniform(0.5, 3)), t - float(s)))
    stream.append(burst)
    m = str(rng.choice(["5999", "5311", "5732"]))
    return stream.events(), _event(rng, home, m, "card_present", _typical(profile, m) * float(rng.uniform(0.5, 3)), t)


def _geo_impossible(rng: Rng, profile: _Profile, n: int, world: _World) -> Scenario:
    stream, t = _base(rng, profile, max(n - 1, 1))
    home = _home_at(profile, [t])[0]
    gap = float(rng.uniform(0.3, 5)) * HOUR
    m = str(rng.choice(["5411", "5812", "5541"]))
    stream.append([_event(rng, home, m, "contactless", _typical(profile, m), t - gap)])
    far = str(rng.choice([c for c in FRAUD_COUNTRIES + TRAVEL_COUNTRIES if c != home]))
    m = str(rng.choice(["6011", "5732", "5999", "5311"]))
    channel = "atm" if m == "6011" else "card_present"
    return stream.events(), _event(rng, far, m, channel, _typical(profile, m) * float(rng.uniform(1, 6)), t)


_LEGIT = {
    "legit": _legit,
    "legit_travel": _legit_travel,
    "legit_new_device": _legit_new_device,
    "legit_big_purchase": _legit_big_purchase,
    "legit_spree": _legit_spree,
    "legit_small_charges": _legit_small_charges,
    "legit_compromised_visit": _legit_compromised_visit,
    "legit_moved": _legit_moved,
}
_FRAUD = {
    "card_testing": _card_testing,
    "account_takeover": _account_takeover,
    "compromised_merchant": _compromised_merchant,
    "velocity": _velocity,
    "geo_impossible": _geo_impossible,
}
