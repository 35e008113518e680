"""Usage metering: inferences and compute seconds per tenant, kind and day, and the report over them.

The counts are written by the FINISH script (`worker.keys`), in the same atomic step as the result,
and only when that step posts the result: a redelivered task whose result already exists, or a
retried script whose reply was lost, adds nothing. What counts:

- `inferences`: results with status `ok` (the model answered);
- `compute_us`: the batch's model time (microseconds) apportioned to every task of the batch by its
  share of the batch's tokens (`apportion`), whether its result is `ok` or `failed` (a batch that
  raised and was split, an output that broke the contract): the device time was spent either way, so
  the cost per 1,000 inferences carries it.

Tasks answered without reaching the model (`invalid`, `expired`, `rejected`, dead letters, ids already
answered) count nothing: they took no device time, and an invalid or refused request has no tenant
that can be trusted.

One hash per UTC day, `inferq:usage:{YYYY-MM-DD}` (the day the result was written), with the fields
`{tenant}|{kind}|inferences` and `{tenant}|{kind}|compute_us` (a tenant never holds `|`), kept for
`INFERQ_USAGE_RETENTION_DAYS` after its last write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from worker.keys import usage_key

FIELD_SEP: Final = "|"
INFERENCES: Final = "inferences"
COMPUTE_US: Final = "compute_us"
SECONDS_PER_HOUR: Final = 3600.0


@dataclass(frozen=True)
class Usage:
    """What one computed task adds to its tenant's usage: its share of the batch's model time."""

    tenant: str
    compute_s: float

    @property
    def compute_us(self) -> int:
        return max(0, round(self.compute_s * 1_000_000))


def apportion(total_s: float, tokens: Sequence[int]) -> list[float]:
    """`total_s` split over a batch's tasks by their tokens (evenly when none has any).

    By tokens rather than evenly: a batch mixes a 16-event fraud history with a 4,096-event one, or
    a one-line note with a chunked discharge summary, and attention and the feed-forward layers cost
    in proportion to the tokens each brings (padding is the batch's, shared in the same proportion).
    """
    if not tokens:
        return []
    weights = [max(0, n) for n in tokens]
    whole = sum(weights)
    if whole == 0:
        return [total_s / len(tokens)] * len(tokens)
    return [total_s * w / whole for w in weights]


def usage_prefix(tenant: str, kind: str) -> str:
    """The part of a usage field before its counter name."""
    if FIELD_SEP in tenant:
        raise ValueError(f"tenant {tenant!r} holds {FIELD_SEP!r}")
    return f"{tenant}{FIELD_SEP}{kind}"


def day_of(epoch_ms: int) -> str:
    """The UTC day (YYYY-MM-DD) of an epoch time in milliseconds."""
    return datetime.fromtimestamp(epoch_ms / 1000.0, UTC).date().isoformat()


@dataclass(frozen=True)
class UsageRow:
    """One day × tenant × kind of the report."""

    day: str
    tenant: str
    kind: str
    inferences: int
    compute_s: float
    cost_per_1k: float | None  # None: no price set, or no inference to spread the cost over

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def cost_per_1k(compute_s: float, inferences: int, price_per_device_hour: float | None) -> float | None:
    """What 1,000 inferences cost in device time at `price_per_device_hour`."""
    if price_per_device_hour is None or inferences <= 0:
        return None
    return compute_s / SECONDS_PER_HOUR * price_per_device_hour / inferences * 1000.0


def days_between(since: date, until: date) -> list[str]:
    """Every day from `since` to `until`, both included."""
    return [(since + timedelta(days=n)).isoformat() for n in range((until - since).days + 1)]


def rows_of(day: str, fields: Mapping[str, str], price: float | None, tenant: str | None = None) -> list[UsageRow]:
    """The report rows of one day's hash (decoded), sorted by tenant and kind."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for name, value in fields.items():
        parts = name.split(FIELD_SEP)
        if len(parts) != 3 or parts[2] not in (INFERENCES, COMPUTE_US):
            continue  # not a field this version writes
        if tenant is not None and parts[0] != tenant:
            continue
        counts.setdefault((parts[0], parts[1]), {INFERENCES: 0, COMPUTE_US: 0})[parts[2]] = int(value)
    rows = []
    for (who, kind), found in sorted(counts.items()):
        compute_s = found[COMPUTE_US] / 1_000_000
        rows.append(UsageRow(day, who, kind, found[INFERENCES], compute_s,
                             cost_per_1k(compute_s, found[INFERENCES], price)))
    return rows


def read_usage(client: Any, since: date, until: date, price: float | None, tenant: str | None = None) -> list[UsageRow]:
    """The report rows from `since` to `until` (UTC days, both included), one round trip."""
    days = days_between(since, until)
    pipe = client.pipeline(transaction=False)
    for day in days:
        pipe.hgetall(usage_key(day))
    rows: list[UsageRow] = []
    for day, found in zip(days, pipe.execute(), strict=True):
        decoded = {_text(name): _text(value) for name, value in found.items()}
        rows += rows_of(day, decoded, price, tenant)
    return rows


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def format_table(rows: Sequence[UsageRow], price: float | None) -> str:
    """The report as a text table, with a total line."""
    header = f"{'day':<10}  {'tenant':<24}  {'kind':<6}  {'inferences':>12}  {'compute s':>12}  {'cost/1k':>10}"
    lines = [header, "-" * len(header)]

    def line(day: str, tenant: str, kind: str, inferences: int, compute_s: float, cost: float | None) -> str:
        shown = "-" if cost is None else f"{cost:.4f}"
        return f"{day:<10}  {tenant:<24}  {kind:<6}  {inferences:>12,}  {compute_s:>12.3f}  {shown:>10}"

    for row in rows:
        lines.append(line(row.day, row.tenant, row.kind, row.inferences, row.compute_s, row.cost_per_1k))
    inferences = sum(row.inferences for row in rows)
    compute_s = sum(row.compute_s for row in rows)
    lines.append("-" * len(header))
    lines.append(line("total", "", "", inferences, compute_s, cost_per_1k(compute_s, inferences, price)))
    if price is None:
        lines.append("cost/1k: set INFERQ_PRICE_PER_DEVICE_HOUR to price the device time")
    return "\n".join(lines)
