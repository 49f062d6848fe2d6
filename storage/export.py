"""Interval reads of a time range in bounded batches, for ``hes export`` (billing, MDM).

Why a module of its own: an export may cover every meter for months, so it must never hold
the range in memory. One statement reads it, ordered by meter, channel and timestamp, and its
rows come out ``batch_rows`` at a time: through a server-side cursor on PostgreSQL (SQLAlchemy
``stream_results``: the server sends ``FETCH FORWARD batch_rows`` at a time), and through the
SQLite cursor, which steps rows only as they are fetched. The plan is driven by the
``channels`` table (meter id, channel) in key order, each pair looking up its day rows on
``ix_interval_days_series``, so the order needs no sort; the day rows are decoded a fetched
chunk at a time into NumPy columns (:mod:`storage.interval_arrays`: no Python step per
value), and the rare off-grid entries (``interval_extra``) are merged into their channel's
place. The read happens in one snapshot (one transaction), so an export never mixes two
states of a meter's data.

Rows come from the channels the collector recorded (it records a meter's channels, with their
unit, in the same transaction as the reads), so each carries its unit; a read stored without
its channel row (never written by the collector) is not exported. The scaler is the one stored
with each day's values (the meter's scaler_unit; a day read with two scalers is held at the
finer one, the physical values unchanged).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import CursorResult, Join, and_, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import Select

from storage import schema
from storage.database import Database
from storage.errors import StorageError
from storage.interval_read import decode_row, stamp
from storage.interval_write import DAY_S, epoch_us

# NumPy (like pyarrow) is imported when an export runs, not with every command of the CLI.
if TYPE_CHECKING:
    from storage.interval_arrays import Bools, Int64s

DAY_US = DAY_S * 1_000_000

#: Rows per batch by default: a few MiB of arrays, large enough that the per-batch costs (a
#: round trip to PostgreSQL, a Parquet row group) do not show. 512 full day rows of a
#: 15-minute profile (2,048 of an hourly one): a fetched chunk of rows is then exactly one
#: batch, handed on without being copied to regroup it.
BATCH_ROWS = 49_152


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
    """The day rows of the range, in (meter, channel, day) order, with the channel's unit:
    the stored columns first, as :func:`storage.interval_arrays.decode_rows` takes them."""
    c, mk, ck, d = (
        schema.channels,
        schema.interval_meters,
        schema.interval_channels,
        schema.interval_days,
    )
    stmt = (
        select(
            d.c.day,
            d.c.period_s,
            d.c.scaler,
            d.c.present,
            d.c.vals,
            d.c.nulls,
            d.c.status,
            c.c.meter_id,
            c.c.channel,
            c.c.unit,
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
    """A batch of interval values column by column (NumPy arrays), what a Parquet writer
    takes without a per-value step: ``runs`` says which meter channel (and unit) the values
    belong to, as (meter_id, channel, unit, count) in order; ``ts_us`` is the capture time in
    epoch microseconds (UTC); ``value_null`` / ``status_null`` mark the values the meter sent
    as null-data and the entries without a status (``value`` / ``status`` are arbitrary
    there)."""

    runs: list[tuple[str, str, int | None, int]]
    ts_us: Int64s
    value: Int64s
    value_null: Bools
    scaler: Int64s
    status: Int64s
    status_null: Bools

    def __len__(self) -> int:
        return len(self.ts_us)

    def meter_ids(self) -> list[str]:
        """The meter of each value."""
        out: list[str] = []
        for meter, _channel, _unit, count in self.runs:
            out.extend([meter] * count)
        return out

    def values(self) -> list[int | None]:
        """The raw values, None for null-data."""
        return _with_nones(self.value, self.value_null)

    def statuses(self) -> list[int | None]:
        """The status bytes, None where there is none."""
        return _with_nones(self.status, self.status_null)

    def rows(self) -> list[ExportRow]:
        """The batch as :data:`ExportRow` tuples."""
        labels: list[tuple[str, str, int | None]] = []
        for meter, channel, unit, count in self.runs:
            labels.extend([(meter, channel, unit)] * count)
        return [
            (m, c, stamp(t), v, s, st, u)
            for (m, c, u), t, v, s, st in zip(
                labels,
                self.ts_us.tolist(),
                self.values(),
                self.scaler.tolist(),
                self.statuses(),
                strict=True,
            )
        ]


def _with_nones(values: Int64s, nulls: Bools) -> list[int | None]:
    import numpy as np

    out: list[int | None] = list(values.tolist())
    for i in np.flatnonzero(nulls).tolist():
        out[i] = None
    return out


#: One meter channel's run of entries: (meter, channel, unit, ts_us, values, scalers,
#: statuses), lists of equal length (the rare channels with off-grid entries, merged by hand).
_Part = tuple[str, str, int | None, list[int], list[int | None], list[int], list[int | None]]


def _day_part(row: Sequence[Any], lo: int, hi: int) -> _Part:
    """The entries of one day row inside ``[lo, hi)`` (epoch microseconds), column by column."""
    day, period, scaler, present, vals, nulls, status, meter, channel, unit = row
    entries = [
        e for e in decode_row(day, period, scaler, present, vals, nulls, status) if lo <= e[0] < hi
    ]
    return (
        meter, channel, unit, [e[0] for e in entries], [e[1] for e in entries],
        [e[2] for e in entries], [e[3] for e in entries],
    )  # fmt: skip


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


def _part_columns(part: _Part) -> ExportColumns:
    import numpy as np

    meter, channel, unit, ts, values, scalers, sts = part
    return ExportColumns(
        [(meter, channel, unit, len(ts))] if ts else [],
        np.array(ts, np.int64),
        np.array([0 if v is None else v for v in values], np.int64),
        np.array([v is None for v in values], np.bool_),
        np.array(scalers, np.int64),
        np.array([0 if st is None else st for st in sts], np.int64),
        np.array([st is None for st in sts], np.bool_),
    )


def _block_columns(block: Sequence[Sequence[Any]], lo: int, hi: int) -> ExportColumns:
    """Day rows without off-grid company decoded together, cut to ``[lo, hi)``."""
    import numpy as np

    from storage.interval_arrays import decode_rows

    arrays = decode_rows(block)
    counts = arrays.counts
    cols = ExportColumns(
        [],
        arrays.ts_us,
        arrays.value,
        arrays.value_null,
        arrays.scaler,
        arrays.status,
        arrays.status_null,
    )
    days = [row[0] for row in block]
    if not (lo <= min(days) * DAY_US and (max(days) + 1) * DAY_US <= hi):
        keep = (cols.ts_us >= lo) & (cols.ts_us < hi)
        kept = np.concatenate(([0], np.cumsum(keep)))
        ends = np.cumsum(counts)
        counts = kept[ends] - kept[ends - counts]
        cols = _taken(cols, keep)
    cols.runs = [
        (row[7], row[8], row[9], n) for row, n in zip(block, counts.tolist(), strict=True) if n
    ]
    return cols


def _taken(cols: ExportColumns, keep: Any) -> ExportColumns:
    """The columns at ``keep`` (a mask or a slice); ``runs`` left to the caller."""
    return ExportColumns(
        cols.runs,
        cols.ts_us[keep],
        cols.value[keep],
        cols.value_null[keep],
        cols.scaler[keep],
        cols.status[keep],
        cols.status_null[keep],
    )


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
                chunks: Iterator[Sequence[Sequence[Any]]] = _sqlite_chunks(result, fetch)
            else:
                streamed = conn.execution_options(stream_results=True, yield_per=fetch)
                result = streamed.execute(_day_rows(spec, first_day, last_day))
                chunks = result.partitions(fetch)
            if extras:
                rows = (r for chunk in chunks for r in chunk)
                pieces = _pieces(rows, extras, lo, hi, fetch)
            else:
                # nothing to merge (the common case): each fetched chunk is a block
                pieces = (_block_columns(chunk, lo, hi) for chunk in chunks)
            yield from _batched(pieces, batch_rows)
    except (sa_exc.SQLAlchemyError, sqlite3.Error) as exc:
        # sqlite3's own errors come from the raw cursor of _sqlite_chunks.
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


def _pieces(
    rows: Iterator[Sequence[Any]],
    extras: dict[tuple[str, str], _Part],
    lo: int,
    hi: int,
    block_rows: int,
) -> Iterator[ExportColumns]:
    """Day rows decoded ``block_rows`` at a time, with each meter channel's off-grid entries
    merged in time order and channels holding only off-grid entries in key order."""
    pending = sorted(extras)
    k = 0
    current: tuple[str, str] | None = None
    group: list[_Part] = []
    block: list[Sequence[Any]] = []
    for row in rows:
        key = (row[7], row[8])
        if key != current:
            if current is not None and current in extras:
                yield _part_columns(_joined([*group, extras[current]]))
            group = []
            while k < len(pending) and pending[k] < key:
                if pending[k] != current:
                    if block:
                        yield _block_columns(block, lo, hi)
                        block = []
                    yield _part_columns(extras[pending[k]])
                k += 1
            current = key
        if key in extras:
            if block:
                yield _block_columns(block, lo, hi)
                block = []
            group.append(_day_part(row, lo, hi))
        else:
            block.append(row)
            if len(block) >= block_rows:
                yield _block_columns(block, lo, hi)
                block = []
    if block:
        yield _block_columns(block, lo, hi)
    if current is not None and current in extras:
        yield _part_columns(_joined([*group, extras[current]]))
    for rest in pending[k:]:
        if rest != current:
            yield _part_columns(extras[rest])


def _concat(pieces: list[ExportColumns]) -> ExportColumns:
    import numpy as np

    if len(pieces) == 1:
        return pieces[0]
    return ExportColumns(
        [run for p in pieces for run in p.runs],
        np.concatenate([p.ts_us for p in pieces]),
        np.concatenate([p.value for p in pieces]),
        np.concatenate([p.value_null for p in pieces]),
        np.concatenate([p.scaler for p in pieces]),
        np.concatenate([p.status for p in pieces]),
        np.concatenate([p.status_null for p in pieces]),
    )


def _split(cols: ExportColumns, n: int) -> tuple[ExportColumns, ExportColumns]:
    """The first ``n`` values and the rest (views, runs cut where ``n`` falls)."""
    head: list[tuple[str, str, int | None, int]] = []
    taken = 0
    runs = cols.runs
    i = 0
    while taken < n:
        meter, channel, unit, count = runs[i]
        take = min(count, n - taken)
        head.append((meter, channel, unit, take))
        taken += take
        i += 1
        if take < count:
            rest_runs = [(meter, channel, unit, count - take), *runs[i:]]
            break
    else:
        rest_runs = runs[i:]
    first = _taken(cols, slice(0, n))
    first.runs = head
    rest = _taken(cols, slice(n, None))
    rest.runs = rest_runs
    return first, rest


def _batched(pieces: Iterator[ExportColumns], batch_rows: int) -> Iterator[ExportColumns]:
    """Pieces regrouped into batches of ``batch_rows`` values (the last one shorter)."""
    held: list[ExportColumns] = []
    size = 0
    for piece in pieces:
        if not len(piece):
            continue
        held.append(piece)
        size += len(piece)
        while size >= batch_rows:
            batch, rest = _split(_concat(held), batch_rows)
            yield batch
            held = [rest] if len(rest) else []
            size = len(rest)
    if size:
        yield _concat(held)


def _sqlite_chunks(result: CursorResult[Any], batch_rows: int) -> Iterator[Sequence[Sequence[Any]]]:
    """Straight from the sqlite3 cursor, which steps rows only as they are fetched (no column
    needs SQLAlchemy's result processing: blobs come as bytes)."""
    cursor = result.cursor
    try:
        while rows := cursor.fetchmany(batch_rows):
            yield rows
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
