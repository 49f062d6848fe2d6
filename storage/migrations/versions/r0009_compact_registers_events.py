"""Version 9: register values and events as compact rows (integer keys, epoch microseconds).

Replaces ``register_reads`` (text meter id, text OBIS, text time stamps) by
``register_values`` and ``events`` by ``meter_events``: the meter's key of
``interval_meters`` (made here for meters with no interval value yet), an OBIS key of the new
``obis_codes``, time stamps as integer microseconds since the epoch. Rows move inside the
database (one ``INSERT ... SELECT`` a table, the stamps converted in SQL), so a year of reads
moves at the database's speed, and are counted: if a new table does not hold as many rows as
its old one did, the upgrade fails and its transaction leaves the database as it was.

Revision ID: 0009
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)

from storage.errors import StorageError

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: The only text SQLAlchemy's SQLite DateTime writes: ``YYYY-MM-DD HH:MM:SS.ffffff``.
_SQLITE_STAMP = (
    "'"
    + "-".join(["[0-9]" * 4, "[0-9]" * 2, "[0-9]" * 2])
    + " "
    + (":".join(["[0-9]" * 2] * 3) + "." + "[0-9]" * 6 + "'")
)


def _epoch_us(conn: Connection, column: str) -> str:
    """SQL of ``column``'s time stamp as microseconds since the epoch (exact, NULL kept)."""
    if conn.dialect.name == "postgresql":
        utc = f"({column} AT TIME ZONE 'UTC')"
        return (
            f"(CAST(EXTRACT(EPOCH FROM date_trunc('second', {utc})) AS bigint) * 1000000"
            f" + CAST(EXTRACT(MICROSECONDS FROM {utc}) AS bigint) % 1000000)"
        )
    return (
        f"(CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000"
        f" + CAST(substr({column}, 21, 6) AS INTEGER))"
    )


def _create_tables() -> None:
    op.create_table(
        "obis_codes",
        Column("obis_key", Integer, primary_key=True, autoincrement=True),
        Column("obis", String(32), nullable=False),
        UniqueConstraint("obis", name="uq_obis_codes_obis"),
    )
    op.create_table(
        "register_values",
        Column("meter_key", Integer, nullable=False),
        Column("obis_key", Integer, nullable=False),
        Column("ts_us", BigInteger, nullable=False),
        Column("value", BigInteger),
        Column("scaler", SmallInteger, nullable=False),
        Column("unit", SmallInteger),
        Column("capture_us", BigInteger),
        PrimaryKeyConstraint("meter_key", "obis_key", "ts_us", name="pk_register_values"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "meter_events",
        Column("meter_key", Integer, nullable=False),
        Column("log_key", Integer, nullable=False),
        Column("ts_us", BigInteger, nullable=False),
        Column("code", Integer, nullable=False),
        Column("name", String(128)),
        PrimaryKeyConstraint("meter_key", "log_key", "ts_us", "code", name="pk_meter_events"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_meter_events_log_ts", "meter_events", ["log_key", "ts_us"])


def _count(conn: Connection, table: str) -> int:
    return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def _refuse_odd_stamps(conn: Connection) -> None:
    """StorageError unless every SQLite stamp has the one form the SQL conversion reads."""
    if conn.dialect.name != "sqlite":
        return
    for table, column in (
        ("register_reads", "ts"),
        ("register_reads", "capture_time"),
        ("events", "ts"),
    ):
        odd = conn.execute(
            text(
                f"SELECT count(*) FROM {table} WHERE {column} IS NOT NULL "
                f"AND NOT {column} GLOB {_SQLITE_STAMP}"
            )
        ).scalar_one()
        if odd:
            raise StorageError(
                f"{table}.{column} holds {odd} time stamps not of the form "
                "'YYYY-MM-DD HH:MM:SS.ffffff': upgrade refused, database unchanged"
            )


def upgrade() -> None:
    conn = op.get_bind()
    _refuse_odd_stamps(conn)
    _create_tables()
    old = {"register_reads": _count(conn, "register_reads"), "events": _count(conn, "events")}
    # WHERE true: SQLite's parser needs it before ON CONFLICT after a SELECT
    conn.execute(
        text(
            "INSERT INTO interval_meters (meter_id) SELECT meter_id FROM (SELECT meter_id FROM "
            "register_reads UNION SELECT meter_id FROM events) AS ids WHERE true "
            "ORDER BY meter_id ON CONFLICT DO NOTHING"
        )
    )
    conn.execute(
        text(
            "INSERT INTO obis_codes (obis) SELECT obis FROM (SELECT obis FROM register_reads "
            "UNION SELECT log_obis FROM events) AS codes WHERE true ORDER BY obis "
            "ON CONFLICT DO NOTHING"
        )
    )
    conn.execute(
        text(
            "INSERT INTO register_values (meter_key, obis_key, ts_us, value, scaler, unit, "
            f"capture_us) SELECT m.meter_key, o.obis_key, {_epoch_us(conn, 'r.ts')}, r.value, "
            f"r.scaler, r.unit, {_epoch_us(conn, 'r.capture_time')} FROM register_reads r "
            "JOIN interval_meters m ON m.meter_id = r.meter_id JOIN obis_codes o ON o.obis = r.obis"
        )
    )
    conn.execute(
        text(
            "INSERT INTO meter_events (meter_key, log_key, ts_us, code, name) "
            f"SELECT m.meter_key, o.obis_key, {_epoch_us(conn, 'e.ts')}, e.code, e.name "
            "FROM events e JOIN interval_meters m ON m.meter_id = e.meter_id "
            "JOIN obis_codes o ON o.obis = e.log_obis"
        )
    )
    for before, after in (("register_reads", "register_values"), ("events", "meter_events")):
        moved = _count(conn, after)
        if moved != old[before]:
            raise StorageError(
                f"moving {before} into {after} kept {moved} of {old[before]} rows: "
                "upgrade refused, database unchanged"
            )
    op.drop_table("events")
    op.drop_table("register_reads")
