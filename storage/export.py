"""Interval reads of a time range in bounded batches, for ``hes export`` (billing, MDM).

Why a module of its own: an export may cover every meter for months, so it must never hold
the range in memory. One statement reads it, ordered by meter, channel and timestamp, and its
rows come out ``batch_rows`` at a time: through a server-side cursor on PostgreSQL (SQLAlchemy
``stream_results``: the server sends ``FETCH FORWARD batch_rows`` at a time), and through the
SQLite cursor, which steps rows only as they are fetched. The plan is driven by the
``channels`` table (meter id, channel) in key order, each pair looking up its range on the
primary key of ``interval_reads``, so the order needs no sort and one statement serves every
size; the read happens in one snapshot (one transaction), so an export never mixes two
states of a meter's data.

Rows come from the channels the collector recorded (it records a meter's channels, with their
unit, in the same transaction as the reads), so each carries its unit; a read stored without
its channel row (never written by the collector) is not exported. The scaler is the one stored
with each value (the meter's scaler_unit when that value was read).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    String,
    and_,
    func,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import Select

from storage import schema
from storage.database import Database
from storage.errors import StorageError

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


def _statement(spec: ExportRange, dialect: str) -> Select[Any]:
    r = schema.interval_reads
    c = schema.channels
    # SQLite holds timestamps as text: fetched raw and parsed once per distinct stamp below,
    # instead of once per row by the column type.
    ts = type_coerce(r.c.ts, String) if dialect == "sqlite" else r.c.ts
    after: ColumnElement[bool] = r.c.ts >= spec.start
    before: ColumnElement[bool] = r.c.ts < spec.end
    if dialect == "sqlite" and spec.area is None and not spec.meters:
        # Without statistics SQLite would scan the whole range on ix_interval_reads_ts and
        # sort it; likelihood() says the range alone does not narrow much, so the plan stays
        # channels in key order, each pair's range looked up on the primary key: no sort.
        # (A meter or area filter leads the planner to that plan by itself.)
        likely: ColumnElement[Any] = literal_column("0.9")
        after = func.likelihood(after, likely)
        before = func.likelihood(before, likely)
    stmt = (
        select(c.c.meter_id, c.c.channel, ts, r.c.value, r.c.scaler, r.c.status, c.c.unit)
        .select_from(
            c.join(
                r,
                and_(
                    r.c.meter_id == c.c.meter_id,
                    r.c.channel == c.c.channel,
                    after,
                    before,
                ),
            )
        )
        .order_by(c.c.meter_id, c.c.channel, r.c.ts)
    )
    if spec.area is not None:
        m = schema.meters
        stmt = stmt.where(c.c.meter_id.in_(select(m.c.meter_id).where(m.c.area == spec.area)))
    if spec.meters:
        stmt = stmt.where(c.c.meter_id.in_(spec.meters))
    if spec.channels:
        stmt = stmt.where(c.c.channel.in_(spec.channels))
    return stmt


def interval_batches(
    db: Database, spec: ExportRange, batch_rows: int = BATCH_ROWS
) -> Generator[list[ExportRow], None, None]:
    """The reads of ``spec`` ordered by meter, channel and ts, at most ``batch_rows`` a batch.

    A generator holding one connection (and one read transaction) until it is exhausted or
    closed: close it (``contextlib.closing``) when stopping early. Database failures raise
    :class:`StorageError`.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be positive, not {batch_rows}")
    stmt = _statement(spec, db.dialect)
    try:
        with db.engine.connect() as conn:
            if db.dialect == "sqlite":
                yield from _sqlite_batches(conn.execute(stmt), batch_rows)
                return
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
            for part in result.partitions(batch_rows):
                yield [(m, c, t, v, s, st, u) for m, c, t, v, s, st, u in part]
    except (sa_exc.SQLAlchemyError, sqlite3.Error) as exc:
        # sqlite3's own errors come from the raw cursor of _sqlite_batches.
        orig = getattr(exc, "orig", None) or exc
        detail = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        raise StorageError(
            f"exporting interval reads failed on {db.safe_url}: {type(orig).__name__}: {detail}",
            transient=isinstance(exc, sa_exc.OperationalError | sqlite3.OperationalError),
        ) from exc


def _sqlite_batches(result: CursorResult[Any], batch_rows: int) -> Iterator[list[ExportRow]]:
    """Straight from the sqlite3 cursor, which steps rows only as they are fetched.

    No column of the statement has a result type to apply (the timestamp comes as its stored
    text), so SQLAlchemy's row objects would only cost time; each distinct stamp (the same
    96 a day for every meter) is parsed once.
    """
    cursor = result.cursor
    stamps: dict[str, datetime] = {}
    get = stamps.get

    def parse(text: str) -> datetime:
        if len(stamps) >= 100_000:
            stamps.clear()
        ts = stamps[text] = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return ts

    try:
        while rows := cursor.fetchmany(batch_rows):
            yield [(m, c, get(t) or parse(t), v, s, st, u) for m, c, t, v, s, st, u in rows]
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
