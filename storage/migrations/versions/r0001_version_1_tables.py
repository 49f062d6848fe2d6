"""Version 1: meters, channels, interval and register reads, coverage, events, attempts.

The tables as version 1 defined them, frozen here rather than taken from
``storage.schema`` (which holds the newest shape): a fresh database goes through every
revision, so revision 0005's ``ADD COLUMN`` and 0006's indexes must meet version-1 tables.

Revision ID: 0001
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

UTC_TIME = DateTime(timezone=True)


def _version_1() -> MetaData:
    metadata = MetaData()
    Table("schema_version", metadata, Column("version", Integer, nullable=False))
    meters = Table(
        "meters",
        metadata,
        Column("meter_id", String(64), primary_key=True),
        Column("transport", String(16), nullable=False),
        Column("host", String(255)),
        Column("port", Integer),
        Column("device", String(255)),
        Column("physical_address", Integer),
        Column("logical_address", Integer, nullable=False),
        Column("client_sap", Integer, nullable=False),
        Column("authentication", String(16), nullable=False),
        Column("security_profile", String(64)),
        Column("password_ref", String(128)),
        Column("link_id", String(128), nullable=False),
        Column("area", String(128)),
        Column("station", String(128)),
        Column("extra", JSON),
        Column("created_at", UTC_TIME, nullable=False),
        Column("updated_at", UTC_TIME, nullable=False),
        CheckConstraint("transport IN ('tcp', 'hdlc-tcp', 'serial')", name="ck_meters_transport"),
        CheckConstraint(
            "authentication IN ('none', 'lls', 'hls-gmac')", name="ck_meters_authentication"
        ),
    )
    Index("ix_meters_link", meters.c.link_id)
    Index("ix_meters_area", meters.c.area)
    Table(
        "channels",
        metadata,
        Column(
            "meter_id",
            String(64),
            ForeignKey("meters.meter_id", ondelete="CASCADE"),
            nullable=False,
        ),
        Column("channel", String(64), nullable=False),
        Column("unit", SmallInteger),
        Column("scaler", SmallInteger, nullable=False),
        Column("period_s", Integer),
        PrimaryKeyConstraint("meter_id", "channel", name="pk_channels"),
    )
    interval_reads = Table(
        "interval_reads",
        metadata,
        Column("meter_id", String(64), nullable=False),
        Column("channel", String(64), nullable=False),
        Column("ts", UTC_TIME, nullable=False),
        Column("value", BigInteger),
        Column("scaler", SmallInteger, nullable=False),
        Column("status", Integer),
        PrimaryKeyConstraint("meter_id", "channel", "ts", name="pk_interval_reads"),
        sqlite_with_rowid=False,
    )
    Index("ix_interval_reads_ts", interval_reads.c.ts)
    read_coverage = Table(
        "read_coverage",
        metadata,
        Column("meter_id", String(64), nullable=False),
        Column("channel", String(64), nullable=False),
        Column("first_ts", UTC_TIME, nullable=False),
        Column("last_ts", UTC_TIME, nullable=False),
        Column("recorded_at", UTC_TIME, nullable=False),
        PrimaryKeyConstraint("meter_id", "channel", "first_ts", "last_ts", name="pk_read_coverage"),
        sqlite_with_rowid=False,
    )
    Index("ix_read_coverage_last", read_coverage.c.last_ts)
    Table(
        "register_reads",
        metadata,
        Column("meter_id", String(64), nullable=False),
        Column("obis", String(32), nullable=False),
        Column("ts", UTC_TIME, nullable=False),
        Column("value", BigInteger),
        Column("scaler", SmallInteger, nullable=False),
        Column("unit", SmallInteger),
        Column("capture_time", UTC_TIME),
        PrimaryKeyConstraint("meter_id", "obis", "ts", name="pk_register_reads"),
        sqlite_with_rowid=False,
    )
    Table(
        "events",
        metadata,
        Column("meter_id", String(64), nullable=False),
        Column("log_obis", String(32), nullable=False),
        Column("ts", UTC_TIME, nullable=False),
        Column("code", Integer, nullable=False),
        Column("name", String(128)),
        PrimaryKeyConstraint("meter_id", "log_obis", "ts", "code", name="pk_events"),
        sqlite_with_rowid=False,
    )
    read_attempts = Table(
        "read_attempts",
        metadata,
        Column(
            "id",
            BigInteger().with_variant(Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("meter_id", String(64), nullable=False),
        Column("run_id", String(64), nullable=False),
        Column("day", Date, nullable=False),
        Column("started", UTC_TIME, nullable=False),
        Column("finished", UTC_TIME),
        Column("outcome", String(16), nullable=False),
        Column("error_class", String(64)),
        Column("error", Text),
        Column("bytes_tx", BigInteger, nullable=False),
        Column("bytes_rx", BigInteger, nullable=False),
        Column("round_trips", Integer, nullable=False),
        CheckConstraint("outcome IN ('ok', 'partial', 'failed')", name="ck_read_attempts_outcome"),
        UniqueConstraint("meter_id", "run_id", "started", name="uq_read_attempts"),
    )
    Index("ix_read_attempts_day_meter", read_attempts.c.day, read_attempts.c.meter_id)
    return metadata


def upgrade() -> None:
    _version_1().create_all(op.get_bind())
