"""Interval reads of a time range in bounded batches, for ``hes export`` (billing, MDM).

Why a module of its own: an export may cover every meter for months, so it must never hold
the range in memory. One statement reads it, ordered by meter, channel and timestamp, and its
rows come out ``batch_rows`` at a time: through a server-side cursor on PostgreSQL (SQLAlchemy
``stream_results``: the server sends ``FETCH FORWARD batch_rows`` at a time), and through the
SQLite cursor, which steps rows only as they are fetched. The plan is driven by the
``channels`` table (meter id, channel) in key order, each pair looking up its day rows on
``ix_interval_days_series``, so the order needs no sort; each day row is unpacked as it
arrives, and the rare off-grid entries (``interval_extra``) are merged into their channel's
place. The read happens in one snapshot (one transaction), so an export never mixes two
states of a meter's data.

Rows come from the channels the collector recorded (it records a meter's channels, with their
unit, in the same transaction as the reads), so each carries its unit; a read stored without
its channel row (never written by the collector) is not exported. The scaler is the one stored
with each day's values (the meter's scaler_unit; a day read with two scalers is held at the
finer one, the physical values unchanged).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, Join, and_, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import Select

from storage import schema
from storage.database import Database
from storage.errors import StorageError
from storage.interval_codec import row_columns, slots_of
from storage.interval_read import stamp
from storage.interval_write import DAY_S, epoch_us

DAY_US = DAY_S * 1_000_000

#: Rows per batch by default: a few MiB of Python objects, large enough that the per-batch
#: costs (a round trip to PostgreSQL, a Parquet row group) do not show.
BATCH_ROWS = 50_000


#: One interval value, a plain tuple (a NamedTuple per row would double the cost of a batch):
#: ``(meter_id, channel, ts, value, scaler, status, unit)``. The physical value is
#: ``value * 10**scaler`` in ``unit`` (a COSEM unit code); ``ts`` is the entry's capture
#: time, aware UTC: the *end* of the interval it closes.
ExportRow = tuple[str, str, datetime, int | None, int, int | None, int | None]
EXPORT_COLUMNS = ("meter_id", "channel", "ts", "value", "scaler", "status", "unit")


@dataclass(frozen=True, slots=True)
class ExportRange:
    """What to export: reads with ``start <= ts < end``, optionally of one area or some meters
    and channels (empty tuples: all of them)."""

    start: datetime
    end: datetime
    area: str | None = None
    meters: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            if getattr(self, name).tzinfo is None:
                raise ValueError(f"{name} must be an aware datetime")
        if self.end <= self.start:
            raise ValueError(
                f"end {self.end.isoformat()} is not after start {self.start.isoformat()}"
            )


def _filtered(stmt: Select[Any], spec: ExportRange) -> Select[Any]:
    c = schema.channels
    if spec.area is not None:
        m = schema.meters
        stmt = stmt.where(c.c.meter_id.in_(select(m.c.meter_id).where(m.c.area == spec.area)))
    if spec.meters:
        stmt = stmt.where(c.c.meter_id.in_(spec.meters))
    if spec.channels:
        stmt = stmt.where(c.c.channel.in_(spec.channels))
    return stmt


def _keyed_channels() -> Join:
    c, mk, ck = schema.channels, schema.interval_meters, schema.interval_channels
    return c.join(mk, mk.c.meter_id == c.c.meter_id).join(ck, ck.c.channel == c.c.channel)


def _day_rows(spec: ExportRange, first_day: int, last_day: int) -> Select[Any]:
    """The day rows of the range, in (meter, channel, day) order, with the channel's unit."""
    c, mk, ck, d = (
        schema.channels,
        schema.interval_meters,
        schema.interval_channels,
        schema.interval_days,
    )
    stmt = (
        select(
            c.c.meter_id,
            c.c.channel,
            c.c.unit,
            d.c.day,
            d.c.period_s,
            d.c.scaler,
            d.c.present,
            d.c.vals,
            d.c.nulls,
            d.c.status,
        )
        .select_from(
            _keyed_channels().join(
                d,
                and_(
                    d.c.meter_key == mk.c.meter_key,
                    d.c.channel_key == ck.c.channel_key,
                    d.c.day >= first_day,
                    d.c.day <= last_day,
                ),
            )
        )
        .order_by(c.c.meter_id, c.c.channel, d.c.day)
    )
    return _filtered(stmt, spec)


def _extra_rows(spec: ExportRange, lo: int, hi: int) -> Select[Any]:
    """The off-grid entries of the range (rare), in (meter, channel, ts) order."""
    c, mk, ck, x = (
        schema.channels,
        schema.interval_meters,
        schema.interval_channels,
        schema.interval_extra,
    )
    stmt = (
        select(c.c.meter_id, c.c.channel, c.c.unit, x.c.ts_us, x.c.value, x.c.scaler, x.c.status)
        .select_from(
            _keyed_channels().join(
                x,
                and_(
                    x.c.meter_key == mk.c.meter_key,
                    x.c.channel_key == ck.c.channel_key,
                    x.c.ts_us >= lo,
                    x.c.ts_us < hi,
                ),
            )
        )
        .order_by(c.c.meter_id, c.c.channel, x.c.ts_us)
    )
    return _filtered(stmt, spec)


@dataclass(slots=True)
class ExportColumns:
    """A batch of interval values column by column, what a Parquet writer takes without a
    per-value step: ``runs`` says which meter channel (and unit) the values belong to, as
    (meter_id, channel, unit, count) in order; ``ts_us`` is the capture time in epoch
    microseconds (UTC)."""

    runs: list[tuple[str, str, int | None, int]] = field(default_factory=list)
    ts_us: list[int] = field(default_factory=list)
    value: list[int | None] = field(default_factory=list)
    scaler: list[int] = field(default_factory=list)
    status: list[int | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts_us)

    def meter_ids(self) -> list[str]:
        """The meter of each value."""
        out: list[str] = []
        for meter, _channel, _unit, count in self.runs:
            out.extend([meter] * count)
        return out

    def rows(self) -> list[ExportRow]:
        """The batch as :data:`ExportRow` tuples."""
        labels: list[tuple[str, str, int | None]] = []
        for meter, channel, unit, count in self.runs:
            labels.extend([(meter, channel, unit)] * count)
        return [
            (m, c, stamp(t), v, s, st, u)
            for (m, c, u), t, v, s, st in zip(
                labels, self.ts_us, self.value, self.scaler, self.status, strict=True
            )
        ]


#: One meter channel's run of entries: (meter, channel, unit, ts_us, values, scalers,
#: statuses), lists of equal length.
_Part = tuple[str, str, int | None, list[int], list[int | None], list[int], list[int | None]]


@functools.lru_cache(maxsize=4096)
def _slots(present: bytes) -> list[int]:
    """The slots of a present bitmap (a fleet's rows share a handful: cached; not mutated)."""
    return slots_of(present)


@functools.lru_cache(maxsize=4096)
def _stamps(day: int, period: int, present: bytes) -> list[int]:
    """Epoch microseconds of a row's present slots (cached like :func:`_slots`)."""
    base = day * DAY_US
    step = period * 1_000_000
    return [base + s * step for s in _slots(present)]


def _day_part(row: Sequence[Any], lo: int, hi: int) -> _Part:
    """The entries of one day row inside ``[lo, hi)`` (epoch microseconds), column by column."""
    meter, channel, unit, day, period, scaler, present, vals, nulls, status = row
    values, sts = row_columns(_slots(present), vals, nulls, status)
    n = len(values)
    base = day * DAY_US
    ts = _stamps(day, period, present)
    if not (lo <= base and base + DAY_US <= hi):
        keep = [i for i, t in enumerate(ts) if lo <= t < hi]
        ts = [ts[i] for i in keep]
        values = [values[i] for i in keep]
        sts = [sts[i] for i in keep]
        n = len(keep)
    return meter, channel, unit, ts, values, [scaler] * n, sts


def _joined(parts: list[_Part]) -> _Part:
    """Parts of one meter channel as one, in time order (off-grid entries among day rows)."""
    entries = sorted(
        (t, v, s, st) for p in parts for t, v, s, st in zip(p[3], p[4], p[5], p[6], strict=True)
    )
    first = parts[0]
    return (
        first[0], first[1], first[2], [e[0] for e in entries], [e[1] for e in entries],
        [e[2] for e in entries], [e[3] for e in entries],
    )  # fmt: skip


def interval_columns(
    db: Database, spec: ExportRange, batch_rows: int = BATCH_ROWS
) -> Generator[ExportColumns, None, None]:
    """The reads of ``spec`` ordered by meter, channel and ts, at most ``batch_rows`` a batch,
    column by column.

    A generator holding one connection (and one read transaction) until it is exhausted or
    closed: close it (``contextlib.closing``) when stopping early. Database failures raise
    :class:`StorageError`.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be positive, not {batch_rows}")
    lo, hi = epoch_us(spec.start), epoch_us(spec.end)
    first_day, last_day = lo // DAY_US, (hi - 1) // DAY_US
    try:
        with db.engine.connect() as conn, conn.begin():
            extras: dict[tuple[str, str], _Part] = {}
            for m, c, u, t, v, s, st in conn.execute(_extra_rows(spec, lo, hi)):
                part = extras.setdefault((m, c), (m, c, u, [], [], [], []))
                part[3].append(int(t))
                part[4].append(v)
                part[5].append(int(s))
                part[6].append(st)
            # a day row holds up to 96 values (15-minute profile): fetch about a batch's worth
            fetch = max(8, batch_rows // 96)
            if db.dialect == "sqlite":
                result = conn.execute(_day_rows(spec, first_day, last_day))
                rows: Iterator[Sequence[Any]] = _sqlite_rows(result, fetch)
            else:
                streamed = conn.execution_options(stream_results=True, yield_per=fetch)
                result = streamed.execute(_day_rows(spec, first_day, last_day))
                rows = (r for part in result.partitions(fetch) for r in part)
            yield from _batched(_merged(rows, extras, lo, hi), batch_rows)
    except (sa_exc.SQLAlchemyError, sqlite3.Error) as exc:
        # sqlite3's own errors come from the raw cursor of _sqlite_rows.
        orig = getattr(exc, "orig", None) or exc
        detail = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        raise StorageError(
            f"exporting interval reads failed on {db.safe_url}: {type(orig).__name__}: {detail}",
            transient=isinstance(exc, sa_exc.OperationalError | sqlite3.OperationalError),
        ) from exc


def interval_batches(
    db: Database, spec: ExportRange, batch_rows: int = BATCH_ROWS
) -> Generator[list[ExportRow], None, None]:
    """:func:`interval_columns` as lists of :data:`ExportRow` tuples (CSV, tools, tests)."""
    columns = interval_columns(db, spec, batch_rows)
    try:
        for batch in columns:
            yield batch.rows()
    finally:
        columns.close()


def _merged(
    rows: Iterator[Sequence[Any]],
    extras: dict[tuple[str, str], _Part],
    lo: int,
    hi: int,
) -> Iterator[_Part]:
    """Day rows decoded, with each meter channel's off-grid entries merged in time order and
    channels holding only off-grid entries in key order."""
    pending = sorted(extras)
    k = 0
    current: tuple[str, str] | None = None
    group: list[_Part] = []
    for row in rows:
        key = (row[0], row[1])
        if key != current:
            if current is not None and current in extras:
                yield _joined([*group, extras[current]])
            group = []
            while k < len(pending) and pending[k] < key:
                if pending[k] != current:
                    yield extras[pending[k]]
                k += 1
            current = key
        part = _day_part(row, lo, hi)
        if key in extras:
            group.append(part)
        else:
            yield part
    if current is not None and current in extras:
        yield _joined([*group, extras[current]])
    for rest in pending[k:]:
        if rest != current:
            yield extras[rest]


def _batched(parts: Iterator[_Part], batch_rows: int) -> Iterator[ExportColumns]:
    """Parts regrouped into batches of ``batch_rows`` values (the last one shorter)."""
    out = ExportColumns()
    for meter, channel, unit, ts, values, scalers, sts in parts:
        start = 0
        n = len(ts)
        while start < n:
            take = min(n - start, batch_rows - len(out))
            end = start + take
            out.runs.append((meter, channel, unit, take))
            out.ts_us.extend(ts[start:end])
            out.value.extend(values[start:end])
            out.scaler.extend(scalers[start:end])
            out.status.extend(sts[start:end])
            start = end
            if len(out) >= batch_rows:
                yield out
                out = ExportColumns()
    if len(out):
        yield out


def _sqlite_rows(result: CursorResult[Any], batch_rows: int) -> Iterator[Sequence[Any]]:
    """Straight from the sqlite3 cursor, which steps rows only as they are fetched (no column
    needs SQLAlchemy's result processing: blobs come as bytes)."""
    cursor = result.cursor
    try:
        while rows := cursor.fetchmany(batch_rows):
            yield from rows
    finally:
        result.close()


def known_areas(db: Database) -> list[str]:
    """The areas of the inventory, sorted (to name them when an unknown one is asked for)."""
    m = schema.meters
    stmt = select(m.c.area).distinct().where(m.c.area.is_not(None)).order_by(m.c.area)
    return [str(row[0]) for row in db.execute_read(stmt)]


def unknown_meters(db: Database, meter_ids: Sequence[str]) -> list[str]:
    """Those of ``meter_ids`` neither in the inventory nor with a recorded channel, in order."""
    wanted = list(dict.fromkeys(meter_ids))
    if not wanted:
        return []
    have: set[str] = set()
    for table in (schema.meters, schema.channels):
        stmt = select(table.c.meter_id).distinct().where(table.c.meter_id.in_(wanted))
        have.update(str(row[0]) for row in db.execute_read(stmt))
    return [m for m in wanted if m not in have]
