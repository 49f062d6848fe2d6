"""Version 7: interval values in day rows (one per meter, channel and UTC day) with integer keys.

Replaces ``interval_reads`` (a row per value: text meter id, channel and timestamp) and
``read_coverage`` (answered ranges) by ``interval_meters``, ``interval_channels``, ``interval_days``
(values packed, present/complete bitmaps, partitioned by month on PostgreSQL) and
``interval_extra`` (entries off the grid). Every stored value is carried over through the
same merge the collector's writes use (:func:`storage.interval_write.store_intervals`), one
meter at a time, and counted: if the new tables do not hold as many values as the old one
did, the upgrade fails and its transaction leaves the database as it was.

Revision ID: 0007
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
    func,
    select,
)

from storage.errors import StorageError
from storage.interval_read import count_values
from storage.interval_write import KeyCache, store_intervals
from storage.records import Coverage, IntervalRead
from storage.schema import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _version_6() -> tuple[Table, Table]:
    """``interval_reads`` and ``read_coverage`` as version 6 had them (read once, dropped)."""
    md = MetaData()
    reads = Table(
        "interval_reads",
        md,
        Column("meter_id", String(64), nullable=False),
        Column("channel", String(64), nullable=False),
        Column("ts", UtcDateTime, nullable=False),
        Column("value", BigInteger),
        Column("scaler", SmallInteger, nullable=False),
        Column("status", Integer),
        PrimaryKeyConstraint("meter_id", "channel", "ts"),
    )
    coverage = Table(
        "read_coverage",
        md,
        Column("meter_id", String(64), nullable=False),
        Column("channel", String(64), nullable=False),
        Column("first_ts", UtcDateTime, nullable=False),
        Column("last_ts", UtcDateTime, nullable=False),
        PrimaryKeyConstraint("meter_id", "channel", "first_ts", "last_ts"),
    )
    return reads, coverage


def _create_tables() -> None:
    op.create_table(
        "interval_meters",
        Column("meter_key", Integer, primary_key=True, autoincrement=True),
        Column("meter_id", String(64), nullable=False),
        UniqueConstraint("meter_id", name="uq_interval_meters_meter_id"),
    )
    op.create_table(
        "interval_channels",
        Column("channel_key", Integer, primary_key=True, autoincrement=True),
        Column("channel", String(64), nullable=False),
        UniqueConstraint("channel", name="uq_interval_channels_channel"),
    )
    op.create_table(
        "interval_days",
        Column("day", Integer, nullable=False),
        Column("meter_key", Integer, nullable=False),
        Column("channel_key", Integer, nullable=False),
        Column("period_s", Integer, nullable=False),
        Column("scaler", SmallInteger, nullable=False),
        Column("missing", SmallInteger, nullable=False),
        Column("n_values", SmallInteger, nullable=False),
        Column("present", LargeBinary, nullable=False),
        Column("complete", LargeBinary, nullable=False),
        Column("vals", LargeBinary, nullable=False),
        Column("nulls", LargeBinary),
        Column("status", LargeBinary),
        PrimaryKeyConstraint("day", "meter_key", "channel_key", name="pk_interval_days"),
        sqlite_with_rowid=False,
        postgresql_partition_by="RANGE (day)",
    )
    op.create_index("ix_interval_days_series", "interval_days", ["meter_key", "channel_key", "day"])
    op.create_table(
        "interval_extra",
        Column("meter_key", Integer, nullable=False),
        Column("channel_key", Integer, nullable=False),
        Column("ts_us", BigInteger, nullable=False),
        Column("value", BigInteger),
        Column("scaler", SmallInteger, nullable=False),
        Column("status", Integer),
        PrimaryKeyConstraint("meter_key", "channel_key", "ts_us", name="pk_interval_extra"),
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    _create_tables()
    conn = op.get_bind()
    reads, coverage = _version_6()
    old_values = int(conn.execute(select(func.count()).select_from(reads)).scalar_one())
    meters = sorted(
        {str(m) for (m,) in conn.execute(select(reads.c.meter_id).distinct())}
        | {str(m) for (m,) in conn.execute(select(coverage.c.meter_id).distinct())}
    )
    keys = KeyCache()
    for meter in meters:
        rows = [
            IntervalRead(*r)
            for r in conn.execute(
                select(
                    reads.c.meter_id,
                    reads.c.channel,
                    reads.c.ts,
                    reads.c.value,
                    reads.c.scaler,
                    reads.c.status,
                )
                .where(reads.c.meter_id == meter)
                .order_by(reads.c.channel, reads.c.ts)
            )
        ]
        covered = [
            Coverage(*r)
            for r in conn.execute(
                select(
                    coverage.c.meter_id,
                    coverage.c.channel,
                    coverage.c.first_ts,
                    coverage.c.last_ts,
                ).where(coverage.c.meter_id == meter)
            )
        ]
        store_intervals(conn, keys, [rows], covered)
        keys.committed()
    new_values = count_values(conn)
    if new_values != old_values:
        raise StorageError(
            f"moving interval reads into day rows kept {new_values} of {old_values} values: "
            "upgrade refused, database unchanged"
        )
    op.drop_table("read_coverage")
    op.drop_table("interval_reads")
