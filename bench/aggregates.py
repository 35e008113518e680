"""Card aggregates of a stateless request: the engine's path against the former one, one thread.

    .venv/bin/python bench/aggregates.py [--repeats 31] [--lengths 16 128 512 4096]

Times `engine.fraud_aggregates.card_aggregates(history, transaction)` (the card state built from
the whole history with `CardState.from_history`, then `aggregate_features`) against the former
batch build, kept callable below (`former_from_history`: one crc32 and one Python Bloom-filter
insert per distinct merchant and device id, every id hashed per event, a list of `Event`s turned
into columns through `EventColumns.of`). Both read the same inputs and must give the same vector;
the run checks that first.

Inputs per history length L: the last L events of a long simulated history
(`training.fraud_sim.FraudSimulator`) as columns (`EventColumns` of lists, the form a worker
builds), as a list of `Event`s, and, for the worst case, L = the longest with every merchant and
device id distinct. Each figure is the
median of `--repeats` calls; the two paths alternate call by call so that load from other
processes falls on both alike. The load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # before bench/, whose engine.py would shadow the engine package

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from engine.fraud_aggregates import (  # noqa: E402
    _AIRLINE,
    _N_CHANNEL,
    _N_MCC,
    _PRESENT_IDS,
    _RECENT_FIELDS,
    RECENT_EVENTS,
    CardState,
    _bloom_positions,
    _countries,
    _hour_angle,
    aggregate_features,
    card_aggregates,
    country_code,
    id_hash,
)
from engine.fraud_features import _CHANNEL_IDS, _MCC_IDS, Event, EventColumns  # noqa: E402
from training.fraud_sim import FraudSimulator, SimConfig  # noqa: E402


def _former_hashes(values: Sequence[str | None], n: int) -> npt.NDArray[np.int64]:
    index = {v: id_hash(v) for v in dict.fromkeys(values)}
    return np.fromiter(map(index.__getitem__, values), np.int64, n)


def _former_bloom_fill(bits: npt.NDArray[np.uint8], hashes: np.ndarray) -> None:
    m = len(bits) * 8
    positions = [p for h in np.unique(hashes[hashes > 0]).tolist() for p in _bloom_positions(h, m)]
    if positions:
        flags = np.zeros(m, dtype=np.uint8)
        flags[positions] = 1
        bits |= np.packbits(flags, bitorder="little")


def former_from_history(history: Sequence[Event]) -> CardState:
    """`CardState.from_history` as it was before the column path."""
    state = CardState()
    cols = EventColumns.of(history)
    n = len(cols)
    if n == 0:
        return state
    r = state.record
    amount = np.asarray(cols.amount, dtype=np.float64)
    ts = np.asarray(cols.timestamp, dtype=np.float64)
    mcc = _MCC_IDS.ids(cols.mcc, n)
    channel = _CHANNEL_IDS.ids(cols.channel, n)
    country_index = {c: country_code(c) for c in dict.fromkeys(cols.country)}
    country = np.fromiter(map(country_index.__getitem__, cols.country), np.int64, n)
    merchant = _former_hashes(cols.merchant_id, n)
    device = _former_hashes(cols.device_id, n)
    log_amount = np.log1p(amount)
    angle = _hour_angle(ts)
    r["n"] = n
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
    _former_bloom_fill(r["merchant_bloom"], merchant)
    _former_bloom_fill(r["device_bloom"], device)
    present = np.flatnonzero(np.isin(channel, _PRESENT_IDS))
    if present.size:
        last = int(present[ts[present] == ts[present].max()][-1])
        r["last_present_ts"], r["last_present_country"] = ts[last], country[last]
    airline = ts[mcc == _AIRLINE]
    if airline.size:
        r["last_airline_ts"] = airline.max()
    order = np.argsort(ts, kind="stable")[-RECENT_EVENTS:]
    k = len(order)
    r["recent_n"] = k
    for name, column in zip(_RECENT_FIELDS, (ts, amount, mcc, channel, country, merchant, device), strict=True):
        r[f"recent_{name}"][:k] = column[order]
    return state


def former_card_aggregates(history: Sequence[Event], txn: Event) -> npt.NDArray[np.float32]:
    return aggregate_features(former_from_history(history), txn)


Case = tuple[str, int, Sequence[Event], Event]


def cases(lengths: Sequence[int]) -> list[Case]:
    inp = FraudSimulator(SimConfig(seed=7, lengths=((4200, 4400, 1.0),))).example(0).input
    events = list(inp.history)
    out: list[Case] = []
    for length in lengths:
        tail = events[len(events) - length :]
        out.append(("columns", length, EventColumns.of(tail), inp.transaction))
        out.append(("list", length, tail, inp.transaction))
    distinct = [
        Event(e.amount, e.currency, e.mcc, e.channel, e.country, e.timestamp, f"m{i}", f"d{i}")
        for i, e in enumerate(events[-max(lengths) :])
    ]
    out.append(("columns, ids distinct", len(distinct), EventColumns.of(distinct), inp.transaction))
    return out


Fn = Callable[[Sequence[Event], Event], npt.NDArray[np.float32]]


def time_pair(case: Case, repeats: int) -> tuple[float, float]:
    """Median ms per call of the former and the current path, alternating call by call."""
    _, _, history, txn = case
    fns: dict[str, Fn] = {"former": former_card_aggregates, "current": card_aggregates}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm both (per-process caches of MCC, channel and country ids)
        fn(history, txn)
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(history, txn)
            samples[name].append(time.perf_counter() - start)
    return statistics.median(samples["former"]) * 1e3, statistics.median(samples["current"]) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 128, 512, 4096])
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    all_cases = cases(args.lengths)
    for form, length, history, txn in all_cases:
        if not np.array_equal(former_card_aggregates(history, txn), card_aggregates(history, txn)):
            raise SystemExit(f"the two paths disagree on {form} L={length}")
    load_before = os.getloadavg()
    print(f"{'history':<24}{'events':>7}{'former ms':>11}{'current ms':>12}{'speed-up':>10}")
    for case in all_cases:
        former, current = time_pair(case, args.repeats)
        print(f"{case[0]:<24}{case[1]:>7}{former:>11.3f}{current:>12.3f}{former / current:>9.2f}x")
    load_after = os.getloadavg()
    print(
        f"median of {args.repeats} calls each, alternating; one thread; load average "
        f"{load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} CPUs; vectors identical on every input"
    )


if __name__ == "__main__":
    main()
