"""Version 10: read attempts as compact rows (day number, meter and run keys, epoch microseconds).

Replaces ``read_attempts`` (an id, a text meter id, run id and day, two text time stamps, a
text outcome; a unique index on meter, run and start and an index on day and meter) by a
table of the same name keyed by ``(day, meter_key, started_us, run_key)`` with no other
index: the day as days since 1970-01-01, the meter's key of ``interval_meters`` (made here for
meters with no other row), a run key of the new ``collection_runs`` (made in the order the
runs' first attempts were stored, so run keys order an instant's attempts as the ids did), the
stamps as integer microseconds since the epoch and the outcome as its code (0 ok, 1 partial,
2 failed). Rows move inside the database (one ``INSERT ... SELECT``, converted in SQL) and are
counted: unless the new table holds every attempt, the upgrade fails and its transaction
leaves the database as it was.

Revision ID: 0010
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)

from storage.errors import StorageError
from storage.migrations.versions.r0009_compact_registers_events import (
    _SQLITE_STAMP,
    _epoch_us,
)

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

#: The only text SQLAlchemy's SQLite Date writes: ``YYYY-MM-DD``.
_SQLITE_DAY = "'" + "-".join(["[0-9]" * 4, "[0-9]" * 2, "[0-9]" * 2]) + "'"
_NEW = "read_attempts_compact"


def _day_number(conn: Connection, column: str) -> str:
    """SQL of the date ``column`` as days since 1970-01-01 (exact: a date is a midnight)."""
    if conn.dialect.name == "postgresql":
        return f"({column} - DATE '1970-01-01')"
    return f"(CAST(strftime('%s', {column}) AS INTEGER) / 86400)"


def _count(conn: Connection, table: str) -> int:
    return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def _refuse_odd_values(conn: Connection) -> None:
    """StorageError unless every SQLite day and stamp has the one form the SQL reads."""
    if conn.dialect.name != "sqlite":
        return
    for column, form, shape in (
        ("day", _SQLITE_DAY, "YYYY-MM-DD"),
        ("started", _SQLITE_STAMP, "YYYY-MM-DD HH:MM:SS.ffffff"),
        ("finished", _SQLITE_STAMP, "YYYY-MM-DD HH:MM:SS.ffffff"),
    ):
        odd = conn.execute(
            text(
                f"SELECT count(*) FROM read_attempts WHERE {column} IS NOT NULL "
                f"AND NOT {column} GLOB {form}"
            )
        ).scalar_one()
        if odd:
            raise StorageError(
                f"read_attempts.{column} holds {odd} values not of the form '{shape}': "
                "upgrade refused, database unchanged"
            )


def _create_tables() -> None:
    op.create_table(
        "collection_runs",
        Column("run_key", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(64), nullable=False),
        UniqueConstraint("run_id", name="uq_collection_runs_run_id"),
    )
    op.create_table(
        _NEW,
        # 8-byte columns first, then 4, 2 and text: no alignment padding in a PostgreSQL row
        Column("started_us", BigInteger, nullable=False),
        Column("finished_us", BigInteger),
        Column("bytes_tx", BigInteger, nullable=False),
        Column("bytes_rx", BigInteger, nullable=False),
        Column("day", Integer, nullable=False),
        Column("meter_key", Integer, nullable=False),
        Column("run_key", Integer, nullable=False),
        Column("round_trips", Integer, nullable=False),
        Column("outcome", SmallInteger, nullable=False),
        Column("error_class", String(64)),
        Column("error", Text),
        CheckConstraint("outcome IN (0, 1, 2)", name="ck_read_attempts_outcome"),
        PrimaryKeyConstraint("day", "meter_key", "started_us", "run_key", name="pk_read_attempts"),
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    conn = op.get_bind()
    _refuse_odd_values(conn)
    _create_tables()
    old = _count(conn, "read_attempts")
    # WHERE true: SQLite's parser needs it before ON CONFLICT after a SELECT
    conn.execute(
        text(
            "INSERT INTO interval_meters (meter_id) SELECT DISTINCT meter_id FROM read_attempts "
            "WHERE true ORDER BY meter_id ON CONFLICT DO NOTHING"
        )
    )
    conn.execute(
        text(
            "INSERT INTO collection_runs (run_id) SELECT run_id FROM read_attempts "
            "GROUP BY run_id ORDER BY MIN(id)"
        )
    )
    conn.execute(
        text(
            f"INSERT INTO {_NEW} (day, meter_key, started_us, run_key, finished_us, outcome, "
            "error_class, error, bytes_tx, bytes_rx, round_trips) "
            f"SELECT {_day_number(conn, 'a.day')}, m.meter_key, {_epoch_us(conn, 'a.started')}, "
            f"r.run_key, {_epoch_us(conn, 'a.finished')}, "
            "CASE a.outcome WHEN 'ok' THEN 0 WHEN 'partial' THEN 1 ELSE 2 END, "
            "a.error_class, a.error, a.bytes_tx, a.bytes_rx, a.round_trips "
            "FROM read_attempts a JOIN interval_meters m ON m.meter_id = a.meter_id "
            "JOIN collection_runs r ON r.run_id = a.run_id"
        )
    )
    moved = _count(conn, _NEW)
    if moved != old:
        raise StorageError(
            f"moving read_attempts into compact rows kept {moved} of {old} attempts: "
            "upgrade refused, database unchanged"
        )
    op.drop_table("read_attempts")
    op.rename_table(_NEW, "read_attempts")
