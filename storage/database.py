"""The hes database: open (SQLite by default, PostgreSQL by URL), migrate, write, query.

Every write is one transaction and idempotent (``INSERT ... ON CONFLICT DO NOTHING``
on the natural key), so a collector killed mid-run and restarted stores exactly the
same rows. Every SQLAlchemy/driver failure leaves this module as :class:`StorageError`
naming the database URL with the password masked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, tzinfo
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    func,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from storage import attempts as attempt_rows
from storage import interval_read, schema
from storage.engine import (
    postgres_engine,
    resolve_url,
    safe_url,
    sqlite_engine,
)
from storage.errors import StorageError
from storage.gaps import day_window, expected_epochs, from_epoch, group_missing
from storage.interval_write import KeyCache, forget_range, store_intervals
from storage.migration import SCHEMA_VERSION, current_revision
from storage.migration import upgrade as upgrade_schema
from storage.records import (
    Attempt,
    Channel,
    Coverage,
    Event,
    IntervalRead,
    MeterRecord,
    RegisterRead,
    SessionWrite,
)
from storage.register_events import DictionaryKeys, store_events, store_registers

if TYPE_CHECKING:
    from storage.report import DayRate

__all__ = ["SCHEMA_VERSION", "Database", "StorageError", "open_database"]

# Keys of postgresql advisory locks taken while migrating (any fixed 64-bit number).
_PG_MIGRATION_LOCK = 0x4E5_0001


def open_database(
    url: str | os.PathLike[str] | None = None,
    *,
    busy_timeout_s: float = 30.0,
    connect_timeout_s: float = 10.0,
) -> Database:
    """Open (creating and migrating as needed) the database at ``url``.

    ``None`` means ``hes.db`` in the current directory; a plain path means a SQLite
    file there; ``postgresql+psycopg://user@host:port/db`` (or ``postgresql://``)
    means PostgreSQL. Raises :class:`StorageError` naming what is wrong.
    """
    resolved = resolve_url(url)
    if resolved.get_backend_name() == "sqlite":
        engine = sqlite_engine(resolved, busy_timeout_s)
    else:
        engine = postgres_engine(resolved, connect_timeout_s)
    db = Database(engine, resolved)
    try:
        db.migrate()
    except BaseException:
        engine.dispose()
        raise
    return db


def _sqlite_ts(ts: datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime stores, made by C code (isoformat)."""
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: hes stores aware (UTC) timestamps only")
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


_METER_COLS = ", ".join(MeterRecord._fields)
_METER_UPDATES = ", ".join(f"{f} = excluded.{f}" for f in (*MeterRecord._fields[1:], "updated_at"))
_SQLITE_METER_UPSERT = (
    f"INSERT INTO meters ({_METER_COLS}, created_at, updated_at) "
    f"VALUES ({', '.join('?' * (len(MeterRecord._fields) + 2))}) "
    f"ON CONFLICT (meter_id) DO UPDATE SET {_METER_UPDATES}"
)
_PG_METER_TYPES = {
    "port": "integer",
    "physical_address": "integer",
    "logical_address": "integer",
    "client_sap": "integer",
    "installed_on": "date",
}
_PG_METER_UPSERT = text(
    f"INSERT INTO meters ({_METER_COLS}, created_at, updated_at) "
    "SELECT *, CAST(:now AS timestamptz), CAST(:now AS timestamptz) FROM unnest("
    + ", ".join(f"CAST(:{f} AS {_PG_METER_TYPES.get(f, 'text')}[])" for f in MeterRecord._fields)
    + f") ON CONFLICT (meter_id) DO UPDATE SET {_METER_UPDATES}"
)


_PG_CHANNEL_UPSERT = text(
    "INSERT INTO channels (meter_id, channel, unit, scaler, period_s) SELECT * FROM unnest("
    "CAST(:meter_id AS text[]), CAST(:channel AS text[]), CAST(:unit AS smallint[]), "
    "CAST(:scaler AS smallint[]), CAST(:period_s AS integer[])) "
    "ON CONFLICT (meter_id, channel) DO UPDATE SET unit = excluded.unit, "
    "scaler = excluded.scaler, period_s = excluded.period_s"
)

_SQLITE_CHANNEL_UPSERT = (
    "INSERT INTO channels (meter_id, channel, unit, scaler, period_s) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (meter_id, channel) DO UPDATE SET unit = excluded.unit, "
    "scaler = excluded.scaler, period_s = excluded.period_s"
)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Database:
    """Handle on one hes database; thread-safe through SQLAlchemy's connection pool."""

    def __init__(self, engine: Engine, url: URL) -> None:
        self.engine = engine
        self.url = url
        self.dialect = engine.dialect.name
        self._writer: Engine = engine
        self._keys = KeyCache()
        self._obis = DictionaryKeys()
        self._runs = DictionaryKeys()
        if self.dialect == "sqlite":
            self._writer = engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages and logs."""
        return safe_url(self.url)

    def __repr__(self) -> str:
        return f"Database({self.safe_url})"

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except sa_exc.SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            transient = isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or bool(
                getattr(exc, "connection_invalidated", False)
            )
            detail = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
            raise StorageError(
                f"{action} failed on {self.safe_url}: {type(orig).__name__}: {detail}",
                transient=transient,
            ) from exc
        except OverflowError as exc:
            # sqlite3 raises this itself, unwrapped, for an int beyond 64 bits.
            raise StorageError(f"{action} failed on {self.safe_url}: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction (committed on success, rolled back on any error)."""
        with self._guard("transaction"), self._writer.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._guard("query"), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """One read connection in one transaction (one snapshot), for multi-statement reports;
        rolled back at the end (a report's temporary tables go with it)."""
        with self._guard("query"), self.engine.connect() as conn, conn.begin() as tx:
            yield conn
            tx.rollback()

    # -- schema -----------------------------------------------------------------

    def schema_version(self) -> int:
        """Version the database is at: its Alembic revision's number (0 for an empty database)."""
        with self._read() as conn:
            revision = current_revision(conn)
        return int(revision) if revision is not None else 0

    def migrate(self) -> int:
        """Bring the schema to :data:`SCHEMA_VERSION` in one transaction; return the version.

        The Alembic revisions of ``storage/migrations`` run on this connection
        (:mod:`storage.migration`); on PostgreSQL an advisory lock makes concurrent
        opens migrate once (SQLite's ``BEGIN IMMEDIATE`` does the same).
        """
        with self._guard("opening the database"), self._writer.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
            return upgrade_schema(conn, self.safe_url)

    # -- inventory --------------------------------------------------------------

    def upsert_meters(
        self, records: Sequence[MeterRecord], conn: Connection | None = None
    ) -> tuple[int, int]:
        """Insert new meters and update existing ones; return ``(inserted, updated)``.

        Driver-level bulk statements (tuples on SQLite, arrays through unnest on
        PostgreSQL): 200,000 meters in a couple of seconds.
        """
        if not records:
            return 0, 0
        now = datetime.now(UTC)

        def run(c: Connection) -> tuple[int, int]:
            known = set(c.execute(select(schema.meters.c.meter_id)).scalars())
            existing = sum(1 for r in records if r.meter_id in known)
            if self.dialect == "postgresql":
                for chunk in _chunks(records, 20_000):
                    arrays: dict[str, list[Any]] = {f: [] for f in MeterRecord._fields}
                    for rec in chunk:
                        for f, v in zip(MeterRecord._fields, rec, strict=True):
                            arrays[f].append(v)
                    c.execute(_PG_METER_UPSERT, {**arrays, "now": now})
            else:
                stamp = _sqlite_ts(now)
                rows = [
                    (*(v.isoformat() if isinstance(v, date) else v for v in rec), stamp, stamp)
                    for rec in records
                ]
                for chunk in _chunks(rows, 20_000):
                    c.exec_driver_sql(_SQLITE_METER_UPSERT, list(chunk))
            return len(records) - existing, existing

        with self._guard("importing meters"):
            if conn is not None:
                return run(conn)
            with self._writer.begin() as own:
                return run(own)

    def meters(
        self, conn: Connection | None = None, *, enabled_only: bool = False
    ) -> list[MeterRecord]:
        """Every meter of the inventory (only the enabled ones with ``enabled_only``), by id."""
        cols = [schema.meters.c[f] for f in MeterRecord._fields]
        stmt = select(*cols).order_by(schema.meters.c.meter_id)
        if enabled_only:
            stmt = stmt.where(schema.meters.c.enabled.is_(True))
        if conn is not None:
            with self._guard("reading meters"):
                return [MeterRecord(*row) for row in conn.execute(stmt)]
        with self._read() as own:
            return [MeterRecord(*row) for row in own.execute(stmt)]

    def set_enabled(self, meter_ids: Sequence[str], enabled: bool) -> list[str]:
        """Enable or disable meters; returns the ids that exist (the others are unknown)."""
        t = schema.meters
        ids = list(dict.fromkeys(meter_ids))
        with self._guard("enabling meters"), self._writer.begin() as conn:
            known = [
                str(r[0]) for r in conn.execute(select(t.c.meter_id).where(t.c.meter_id.in_(ids)))
            ]
            if known:
                conn.execute(
                    update(t)
                    .where(t.c.meter_id.in_(known))
                    .values(enabled=enabled, updated_at=datetime.now(UTC))
                )
        return sorted(known)

    def disabled_meter_ids(self) -> set[str]:
        """The meters an operator disabled (neither read nor expected)."""
        t = schema.meters
        with self._read() as conn:
            return {str(r[0]) for r in conn.execute(select(t.c.meter_id).where(~t.c.enabled))}

    def get_meter(self, meter_id: str) -> MeterRecord | None:
        """One meter of the inventory, or None."""
        cols = [schema.meters.c[f] for f in MeterRecord._fields]
        with self._read() as conn:
            row = conn.execute(select(*cols).where(schema.meters.c.meter_id == meter_id)).first()
        return MeterRecord(*row) if row is not None else None

    def meter_channels(self, meter_id: str) -> list[Channel]:
        """The profile channels recorded for one meter (unit, scaler, period), by name."""
        t = schema.channels
        cols = [t.c[f] for f in Channel._fields]
        stmt = select(*cols).where(t.c.meter_id == meter_id).order_by(t.c.channel)
        with self._read() as conn:
            return [Channel(*row) for row in conn.execute(stmt)]

    def upsert_channels(self, rows: Iterable[Channel], conn: Connection | None = None) -> None:
        """Record (or update the unit/scaler/period of) meters' profile channels."""
        # one row per key: PostgreSQL refuses to update a row twice in one statement
        unique = list({(r.meter_id, r.channel): r for r in rows}.values())
        if not unique:
            return
        with self._guard("writing channels"):
            if conn is not None:
                self._upsert_channel_rows(conn, unique)
                return
            with self._writer.begin() as own:
                self._upsert_channel_rows(own, unique)

    def _upsert_channel_rows(self, conn: Connection, rows: Sequence[Channel]) -> None:
        """One statement of all rows: arrays through unnest on PostgreSQL (not a round of
        executemany per row), a driver-level executemany of plain tuples on SQLite (the
        night's first batch writes every channel of its meters)."""
        if self.dialect == "postgresql":
            columns = map(list, zip(*rows, strict=True))
            conn.execute(_PG_CHANNEL_UPSERT, dict(zip(Channel._fields, columns, strict=True)))
        else:
            conn.exec_driver_sql(_SQLITE_CHANNEL_UPSERT, [tuple(r) for r in rows])

    def store_sessions(self, writes: Sequence[SessionWrite]) -> list[int]:
        """Store what many sessions read, and their attempts, in one transaction.

        Returns the number of new interval rows of each write, in order. All or
        nothing: on an error no write of the batch is stored (each is read again).
        """
        attempts = [w.attempt for w in writes if w.attempt is not None]
        attempt_rows.check_outcomes(attempts)
        channels = [c for w in writes for c in w.channels]
        registers = [r for w in writes for r in w.registers]
        coverage = [c for w in writes for c in w.coverage]
        periods = {(c.meter_id, c.channel): c.period_s for c in channels}
        with self._guard("storing session reads"), self._keyed():
            with self._writer.begin() as conn:
                changed = self._keys.changed_channels(channels)
                if changed:
                    self.upsert_channels(changed, conn)
                store_registers(conn, self._keys, self._obis, registers)
                counts = store_intervals(
                    conn, self._keys, [w.intervals for w in writes], coverage, periods
                )
                attempt_rows.store_attempts(conn, self._keys, self._runs, attempts)
            self._committed()
        return counts

    # -- readings ---------------------------------------------------------------

    def insert_interval_reads(
        self,
        rows: Iterable[IntervalRead],
        coverage: Iterable[Coverage] = (),
        conn: Connection | None = None,
    ) -> int:
        """Store load-profile entries (and the ranges they answer) in one transaction.

        Rows already stored (same meter, channel, ts) are left as they are; returns
        the number of new rows. ``coverage`` records that the meter answered those
        ranges in full, so stamps inside them it did not return count as absent.
        """
        reads = list(rows)
        covered = list(coverage)
        with self._guard("writing interval reads"), self._keyed():
            if conn is not None:
                return store_intervals(conn, self._keys, [reads], covered)[0]
            with self._writer.begin() as own:
                new = store_intervals(own, self._keys, [reads], covered)[0]
            self._committed()
            return new

    def forget_intervals(
        self,
        meter_ids: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        values: bool = True,
        coverage: bool = True,
    ) -> int:
        """Remove stored values and answered-range marks of ``meter_ids`` in ``[start, end)``
        (:func:`storage.interval_write.forget_range`); return the values removed."""
        with self._guard("forgetting interval reads"), self._writer.begin() as conn:
            return forget_range(conn, list(meter_ids), start, end, values=values, coverage=coverage)

    @contextmanager
    def _keyed(self) -> Iterator[None]:
        """Forget the keys and partitions a write made unless it reported its commit."""
        try:
            yield
        finally:
            self._keys.rolled_back()
            self._obis.rolled_back()
            self._runs.rolled_back()

    def _committed(self) -> None:
        self._keys.committed()
        self._obis.committed()
        self._runs.committed()

    def record_coverage(self, rows: Iterable[Coverage]) -> None:
        """Record answered ranges on their own (a range read that returned no entry)."""
        self.insert_interval_reads((), rows)

    def insert_register_reads(self, rows: Iterable[RegisterRead]) -> int:
        """Store register values; duplicates of (meter, obis, ts) are ignored."""
        return self._keyed_write("writing register reads", store_registers, list(rows))

    def insert_events(self, rows: Iterable[Event]) -> int:
        """Store event-log entries; duplicates of (meter, log, ts, code) are ignored."""
        return self._keyed_write("writing events", store_events, list(rows))

    def _keyed_write(self, action: str, store: Callable[..., int], rows: Sequence[Any]) -> int:
        """One transaction of a keyed bulk write; the keys it made are kept once it commits."""
        if not rows:
            return 0
        with self._guard(action), self._keyed():
            with self._writer.begin() as conn:
                new = store(conn, self._keys, self._obis, rows)
            self._committed()
        return new

    def record_attempt(self, attempt: Attempt) -> bool:
        """Store one read attempt; return whether it is new (False: already stored)."""
        return self.record_attempts([attempt]) == 1

    def record_attempts(self, attempts: Iterable[Attempt]) -> int:
        """Store many read attempts in one transaction; return how many were new.

        An attempt already stored (same day, meter, start and run) is left as it is.
        """
        rows = list(attempts)
        attempt_rows.check_outcomes(rows)
        if not rows:
            return 0
        with self._guard("writing read attempts"), self._keyed():
            with self._writer.begin() as conn:
                new = attempt_rows.store_attempts(conn, self._keys, self._runs, rows)
            self._committed()
        return new

    def attempts(self, day: date | None = None) -> list[Attempt]:
        """Every read attempt stored (of ``day`` only, when given), by day, meter key, start."""
        with self._read() as conn:
            return attempt_rows.attempts(conn, day)

    def interval_reads(
        self, meter_id: str, channel: str, start: datetime, end: datetime
    ) -> list[IntervalRead]:
        """Stored entries of one meter channel with ``start <= ts < end``, by time."""
        with self._read() as conn:
            return interval_read.interval_reads(conn, meter_id, channel, start, end)

    def count_rows(self, table: str) -> int:
        """Number of rows in one of the hes tables (for tests and reports)."""
        tbl = schema.metadata.tables[table]
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(tbl)).scalar_one())

    def count_interval_values(self) -> int:
        """Every interval value stored (what a row per value would have counted)."""
        with self._read() as conn:
            return interval_read.count_values(conn)

    # -- gaps -------------------------------------------------------------------

    def missing_intervals(
        self,
        meter_id: str,
        channel: str,
        day_start: datetime,
        day_end: datetime,
        period_s: int = 900,
    ) -> list[tuple[datetime, datetime]]:
        """Missing aligned stamps in ``[day_start, day_end)`` as inclusive (first, last) ranges.

        Each range is what to ask the meter for by selective access (from, to).
        Stamps inside a recorded coverage range are not missing.
        """
        expected = expected_epochs(day_start, day_end, period_s)
        if not expected:
            return []
        with self._read() as conn:
            have = interval_read.satisfied_epochs(conn, meter_id, channel, day_start, day_end)
        missing = [e for e in expected if e not in have]
        return [(from_epoch(a), from_epoch(b)) for a, b in group_missing(missing, period_s)]

    def missing_counts(
        self,
        start: datetime,
        end: datetime,
        channels: Sequence[str],
        period_s: int = 900,
        meter_ids: Iterable[str] | None = None,
    ) -> dict[str, int]:
        """Missing intervals per meter (summed over ``channels``) in ``[start, end)``.

        One grouped SUM over the window's day rows decides most meters
        (:func:`storage.interval_read.missing_counts`).
        """
        expected = expected_epochs(start, end, period_s)
        with self._read() as conn:
            if meter_ids is None:
                ids: Iterable[str] = list(conn.execute(select(schema.meters.c.meter_id)).scalars())
            else:
                ids = meter_ids
            return interval_read.missing_counts(conn, expected, channels, period_s, ids)

    def complete_meters(
        self, day: date, channels: Sequence[str], *, period_s: int = 900, tz: tzinfo = UTC
    ) -> set[str]:
        """Inventory meters with no missing interval on ``day`` (midnight to midnight in tz)."""
        start, end = day_window(day, tz)
        return {m for m, n in self.missing_counts(start, end, channels, period_s).items() if n == 0}

    def incomplete_meters(
        self, day: date, channels: Sequence[str], *, period_s: int = 900, tz: tzinfo = UTC
    ) -> dict[str, int]:
        """Meters with missing intervals on ``day``, mapped to how many are missing."""
        start, end = day_window(day, tz)
        return {m: n for m, n in self.missing_counts(start, end, channels, period_s).items() if n}

    def daily_report(
        self,
        day: date,
        channels: Sequence[str] | None = None,
        *,
        period_s: int = 900,
        tz: tzinfo = UTC,
        worst: int = 10,
    ) -> dict[str, Any]:
        """Collection figures for ``day``; see :func:`storage.report.daily_report`."""
        from storage.report import daily_report

        return daily_report(self, day, channels, period_s=period_s, tz=tz, worst=worst)

    def success_rates(
        self,
        last_day: date,
        days: int,
        channels: Sequence[str] | None = None,
        *,
        period_s: int = 900,
        tz: tzinfo = UTC,
    ) -> list[DayRate]:
        """Success and first-pass rate per day; see :func:`storage.report.success_rates`."""
        from storage.report import success_rates

        return success_rates(self, last_day, days, channels, period_s=period_s, tz=tz)

    def execute_read(self, stmt: Any) -> list[Any]:
        """Run a read-only Core statement and return its rows (for reports)."""
        with self._read() as conn:
            return list(conn.execute(stmt))

    def ping(self) -> None:
        """Raise StorageError unless the database answers."""
        with self._read() as conn:
            conn.execute(text("SELECT 1"))
