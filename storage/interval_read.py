"""Reading day rows back: one meter channel's entries, its gaps, and the fleet's missing counts.

Why the missing count is mostly SQL: a row's ``missing`` column is kept at write time, so a
whole day's completeness for every meter is one grouped SUM over that day's key range; only the
rows of a partial day (a window in a zone other than UTC starts mid-row) that have a gap are
looked at bit by bit, and a meter channel whose rows have another period than the one judged
is counted stamp by stamp. A row with ``missing = 0`` has no gap in any part of its day.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, select

from storage import schema
from storage.interval_codec import bitmap_int, row_columns, slots_of
from storage.interval_write import DAY_S, epoch_us
from storage.records import IntervalRead

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_US = DAY_S * 1_000_000

#: One decoded entry: (microseconds since the epoch, raw value, scaler, status).
Entry = tuple[int, int | None, int, int | None]


@functools.lru_cache(maxsize=200_000)
def stamp(us: int) -> datetime:
    """The aware UTC datetime of an epoch microsecond (stamps repeat across meters: cached)."""
    return _EPOCH + timedelta(microseconds=us)


def decode_row(
    day: int,
    period_s: int,
    scaler: int,
    present: bytes,
    vals: bytes,
    nulls: bytes | None,
    status: bytes | None,
) -> list[Entry]:
    """The entries of one stored day row, in time order."""
    slots = slots_of(present)
    values, statuses = row_columns(slots, vals, nulls, status)
    base = day * _DAY_US
    step = period_s * 1_000_000
    return [
        (base + s * step, v, scaler, st) for s, v, st in zip(slots, values, statuses, strict=True)
    ]


def series_keys(conn: Connection, meter_id: str, channel: str) -> tuple[int, int] | None:
    """(meter key, channel key) of a meter channel with stored values, or None."""
    mk, ck = schema.interval_meters, schema.interval_channels
    m = conn.execute(select(mk.c.meter_key).where(mk.c.meter_id == meter_id)).scalar()
    c = conn.execute(select(ck.c.channel_key).where(ck.c.channel == channel)).scalar()
    return (int(m), int(c)) if m is not None and c is not None else None


def _day_span(start_us: int, end_us: int) -> tuple[int, int]:
    """First and last day (numbers) a half-open microsecond window touches."""
    return start_us // _DAY_US, max(start_us, end_us - 1) // _DAY_US


def series_entries(
    conn: Connection, keys: tuple[int, int], start: datetime, end: datetime
) -> list[Entry]:
    """Entries of one meter channel with ``start <= ts < end``, in time order."""
    lo, hi = epoch_us(start), epoch_us(end)
    if hi <= lo:
        return []
    d, x = schema.interval_days, schema.interval_extra
    first_day, last_day = _day_span(lo, hi)
    rows = conn.execute(
        select(d.c.day, d.c.period_s, d.c.scaler, d.c.present, d.c.vals, d.c.nulls, d.c.status)
        .where(
            d.c.meter_key == keys[0],
            d.c.channel_key == keys[1],
            d.c.day >= first_day,
            d.c.day <= last_day,
        )
        .order_by(d.c.day)
    )
    out = [e for row in rows for e in decode_row(*row) if lo <= e[0] < hi]
    extra = conn.execute(
        select(x.c.ts_us, x.c.value, x.c.scaler, x.c.status).where(
            x.c.meter_key == keys[0],
            x.c.channel_key == keys[1],
            x.c.ts_us >= lo,
            x.c.ts_us < hi,
        )
    ).all()
    if extra:
        out.extend((int(t), v, int(s), st) for t, v, s, st in extra)
        out.sort(key=lambda e: e[0])
    return out


def interval_reads(
    conn: Connection, meter_id: str, channel: str, start: datetime, end: datetime
) -> list[IntervalRead]:
    """Stored entries of one meter channel with ``start <= ts < end``, as IntervalReads."""
    keys = series_keys(conn, meter_id, channel)
    if keys is None:
        return []
    return [
        IntervalRead(meter_id, channel, stamp(t), v, s, st)
        for t, v, s, st in series_entries(conn, keys, start, end)
    ]


def satisfied_epochs(
    conn: Connection, meter_id: str, channel: str, start: datetime, end: datetime
) -> set[int]:
    """Epoch seconds in ``[start, end)`` holding a value or inside an answered range."""
    keys = series_keys(conn, meter_id, channel)
    if keys is None:
        return set()
    lo, hi = epoch_us(start), epoch_us(end)
    d = schema.interval_days
    first_day, last_day = _day_span(lo, hi)
    out: set[int] = set()
    rows = conn.execute(
        select(d.c.day, d.c.period_s, d.c.present, d.c.complete).where(
            d.c.meter_key == keys[0],
            d.c.channel_key == keys[1],
            d.c.day >= first_day,
            d.c.day <= last_day,
        )
    )
    for day, period, present, complete in rows:
        base = day * DAY_S
        bits = bitmap_int(present) | bitmap_int(complete)
        out.update(base + s * period for s in range(bits.bit_length()) if bits >> s & 1)
    x = schema.interval_extra
    extra = conn.execute(
        select(x.c.ts_us).where(
            x.c.meter_key == keys[0],
            x.c.channel_key == keys[1],
            x.c.ts_us >= lo,
            x.c.ts_us < hi,
        )
    )
    out.update(int(t) // 1_000_000 for (t,) in extra if int(t) % 1_000_000 == 0)
    return out


def count_values(conn: Connection) -> int:
    """Every interval value stored (day rows' values and off-grid entries)."""
    d, x = schema.interval_days, schema.interval_extra
    held = conn.execute(select(func.coalesce(func.sum(d.c.n_values), 0))).scalar_one()
    extra = conn.execute(select(func.count()).select_from(x)).scalar_one()
    return int(held) + int(extra)


def _window_slots(expected: range, day: int, period_s: int) -> tuple[int, int, int]:
    """(count, first slot, last slot) of the expected stamps falling on ``day``."""
    base = day * DAY_S
    lo = max(expected.start, -(-base // period_s) * period_s)
    hi = min(expected.stop, base + DAY_S)
    on_day = range(lo, hi, period_s)
    if not on_day:
        return 0, 0, -1
    return len(on_day), (on_day[0] - base) // period_s, (on_day[-1] - base) // period_s


def missing_counts(
    conn: Connection,
    expected: range,
    channels: Sequence[str],
    period_s: int,
    meter_ids: Iterable[str],
) -> dict[str, int]:
    """Missing expected stamps per meter, summed over ``channels`` (see the module docstring).

    ``expected`` is the window's aligned stamps (epoch seconds, step ``period_s``).
    """
    ids = list(dict.fromkeys(meter_ids))
    chans = list(dict.fromkeys(channels))
    n_chan = len(chans)
    per_meter = len(expected) * n_chan
    result = dict.fromkeys(ids, per_meter)
    if not expected or not chans or not ids:
        return dict.fromkeys(ids, 0) if not per_meter else result
    ck = schema.interval_channels
    chosen = select(ck.c.channel_key).where(ck.c.channel.in_(chans))
    ckeys = [int(k) for (k,) in conn.execute(chosen)]
    if not ckeys:
        return result
    first_day = expected[0] // DAY_S
    last_day = expected[-1] // DAY_S
    full: list[int] = []
    partial: list[tuple[int, int, int, int]] = []  # (day, expected count, first slot, last slot)
    slots = DAY_S // period_s if DAY_S % period_s == 0 else 0
    if not slots:
        return _counted_stamp_by_stamp(conn, expected, chans, ids)
    for day in range(first_day, last_day + 1):
        count, lo, hi = _window_slots(expected, day, period_s)
        if slots and count == slots:
            full.append(day)
        elif count:
            partial.append((day, count, lo, hi))
    d, mk = schema.interval_days, schema.interval_meters
    same = d.c.period_s == period_s
    in_full = and_(same, d.c.day >= full[0], d.c.day <= full[-1]) if full else None
    cols: list[Any] = [d.c.meter_key]
    if in_full is not None:
        cols += [
            func.sum(case((in_full, 1), else_=0)).label("rows_full"),
            func.sum(case((in_full, d.c.missing), else_=0)).label("missing_full"),
        ]
    cols += [
        func.sum(case((and_(same, d.c.day == p[0]), 1), else_=0)).label(f"rows_p{j}")
        for j, p in enumerate(partial)
    ]
    cols.append(func.sum(case((same, 0), else_=1)).label("odd"))
    agg = (
        select(*cols)
        .where(d.c.day >= first_day, d.c.day <= last_day, d.c.channel_key.in_(ckeys))
        .group_by(d.c.meter_key)
        .subquery()
    )
    stmt = select(mk.c.meter_id, agg).join(agg, agg.c.meter_key == mk.c.meter_key)
    n_full = len(full)
    odd_meters: set[str] = set()
    for row in conn.execute(stmt):
        meter = row.meter_id
        if meter not in result:
            continue
        if row.odd:
            odd_meters.add(meter)
            continue
        missing = 0
        if n_full:
            missing += int(row.missing_full) + (n_full * n_chan - int(row.rows_full)) * slots
        for j, (_day, count, _lo, _hi) in enumerate(partial):
            missing += (n_chan - int(getattr(row, f"rows_p{j}"))) * count
        result[meter] = missing
    for day, _count, lo, hi in partial:
        mask = ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)
        gaps = conn.execute(
            select(mk.c.meter_id, d.c.present, d.c.complete)
            .join(mk, mk.c.meter_key == d.c.meter_key)
            .where(d.c.day == day, d.c.channel_key.in_(ckeys), same, d.c.missing > 0)
        )
        for meter, present, complete in gaps:
            if meter in result and meter not in odd_meters:
                unsatisfied = mask & ~(bitmap_int(present) | bitmap_int(complete))
                result[meter] += unsatisfied.bit_count()
    result.update(_counted_stamp_by_stamp(conn, expected, chans, sorted(odd_meters)))
    return result


def _counted_stamp_by_stamp(
    conn: Connection, expected: range, channels: Sequence[str], meter_ids: Iterable[str]
) -> dict[str, int]:
    """Missing stamps of meters whose rows are on another grid than the one judged."""
    start = datetime.fromtimestamp(expected[0], UTC)
    end = datetime.fromtimestamp(expected[-1] + 1, UTC)
    wanted = set(expected)
    out: dict[str, int] = defaultdict(int)
    for meter in meter_ids:
        for channel in channels:
            have = satisfied_epochs(conn, meter, channel, start, end)
            out[meter] += len(wanted - have)
    return dict(out)
