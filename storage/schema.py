"""Table definitions of the hes database (SQLAlchemy Core).

One metadata for both dialects. Timestamps are stored in UTC: ``timestamptz`` on
PostgreSQL, ISO text on SQLite (SQLAlchemy's default), always handed back as aware
UTC datetimes by :class:`UtcDateTime`, so callers never meet a naive timestamp; the
high-volume tables keep integer epoch microseconds instead (:class:`EpochMicros`).

The high-volume tables (interval_days, register_values, meter_events, read_attempts) have
no foreign key to meters on purpose: a key check per row costs insert speed, and the
collector only ever writes reads for meters it took from the inventory.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

TRANSPORTS = ("tcp", "hdlc-tcp", "serial")
AUTHENTICATIONS = ("none", "lls", "hls-gmac")
OUTCOMES = ("ok", "partial", "failed")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetime in, aware UTC datetime out; naive datetimes are refused.

    A naive timestamp in a meter-reading database is a bug waiting for the next
    daylight-saving change, so binding one raises ``ValueError`` at once.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: hes stores aware (UTC) timestamps only")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

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
    # Name of the secret in the key store, never the secret itself.
    Column("password_ref", String(128)),
    Column("link_id", String(128), nullable=False),
    Column("area", String(128)),
    Column("station", String(128)),
    Column("extra", JSON),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Version 5: the day the meter was installed (days before it are not expected), and the
    # operator's switch (a disabled meter is neither read nor expected; an inventory
    # re-import leaves it as the operator set it).
    Column("installed_on", Date),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    # Version 7: the meter's role in its area (line loss): customer, transformer, NULL (customer).
    Column("role", String(16)),
    # Version 11: the name of the meter's profile (collector/meter_profiles.py), NULL: none.
    Column("profile", String(64)),
    CheckConstraint("transport IN ('tcp', 'hdlc-tcp', 'serial')", name="ck_meters_transport"),
    CheckConstraint(
        "authentication IN ('none', 'lls', 'hls-gmac')", name="ck_meters_authentication"
    ),
)
Index("ix_meters_link", meters.c.link_id)
Index("ix_meters_area", meters.c.area)
#: Version 6 (the API's meter list filters by station).
METERS_BY_STATION = Index("ix_meters_station", meters.c.station)

channels = Table(
    "channels",
    metadata,
    Column(
        "meter_id",
        String(64),
        ForeignKey("meters.meter_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # e.g. "1.0.1.8.0.255:2" (OBIS and attribute of the captured object).
    Column("channel", String(64), nullable=False),
    Column("unit", SmallInteger),
    Column("scaler", SmallInteger, nullable=False, default=0),
    Column("period_s", Integer),
    PrimaryKeyConstraint("meter_id", "channel", name="pk_channels"),
)

#: Version 7: integer surrogate keys, so the day rows below carry three small integers as
#: their key instead of a meter id, a channel name and a text timestamp. A meter's key is
#: made when its first value, register, event or read attempt is stored (reads may precede
#: the inventory), never reused; version 9's register and event rows and version 10's
#: attempts use it too.
interval_meters = Table(
    "interval_meters",
    metadata,
    Column("meter_key", Integer, primary_key=True, autoincrement=True),
    Column("meter_id", String(64), nullable=False),
    UniqueConstraint("meter_id", name="uq_interval_meters_meter_id"),
)

interval_channels = Table(
    "interval_channels",
    metadata,
    Column("channel_key", Integer, primary_key=True, autoincrement=True),
    # e.g. "1.0.1.8.0.255:2" (OBIS and attribute of the captured object).
    Column("channel", String(64), nullable=False),
    UniqueConstraint("channel", name="uq_interval_channels_channel"),
)

#: Version 7: a meter channel's day (UTC, days since 1970-01-01) in one row, its values
#: packed as :mod:`storage.interval_codec` describes, on the grid of ``period_s`` (86,400 /
#: period_s slots; slot i is the entry stamped day start + i * period_s). ``present`` marks
#: the slots holding a value, ``complete`` those inside a range the meter answered in full
#: (an entry it did not return does not exist), ``missing`` counts the slots in neither
#: (kept at write time: a day's completeness is a SUM), ``n_values`` the values held.
#: ``nulls`` marks values the meter sent as null-data, ``status`` packs the status of each
#: present slot (-1: none); both NULL when no slot has one. Physical value = value *
#: 10**scaler, one scaler a row. The key leads with the day, so a day's rows are one range
#: (the report's scan, the night's inserts); ``ix_interval_days_series`` serves one meter's
#: history. Partitioned by month on PostgreSQL (:mod:`storage.partitions`): retention drops
#: partitions.
interval_days = Table(
    "interval_days",
    metadata,
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
Index(
    "ix_interval_days_series",
    interval_days.c.meter_key,
    interval_days.c.channel_key,
    interval_days.c.day,
)

#: Version 7: entries off their day row's grid (a stamp that is not a multiple of the
#: period, as some meters capture on a power event, or of a period that does not divide a
#: day), kept exactly: rare, so a row per value. ``ts_us``: microseconds since the epoch.
interval_extra = Table(
    "interval_extra",
    metadata,
    Column("meter_key", Integer, nullable=False),
    Column("channel_key", Integer, nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("value", BigInteger),
    Column("scaler", SmallInteger, nullable=False),
    Column("status", Integer),
    PrimaryKeyConstraint("meter_key", "channel_key", "ts_us", name="pk_interval_extra"),
    sqlite_with_rowid=False,
)


class EpochMicros(TypeDecorator[datetime]):
    """An aware datetime stored as integer microseconds since the epoch (UTC).

    Why: SQLite keeps SQLAlchemy's DateTime as 26 characters of text, in the row and again in
    every index holding it; an integer takes at most 8 bytes and sorts the same. Sub-second
    stamps are kept (meter clocks send hundredths, a read's own time has microseconds).
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: hes stores aware (UTC) timestamps only")
        delta = value - EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return EPOCH + timedelta(microseconds=int(value))


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Version 9: the OBIS codes of registers and event logs (``1.0.1.8.0.255``,
#: ``0.0.99.98.0.255``, the push pseudo log), so their rows carry a small integer. A key is
#: made when its first row is stored, never reused. Not ``interval_channels``: a channel is
#: an OBIS code *and attribute* of a captured object, and that table lists what has values.
obis_codes = Table(
    "obis_codes",
    metadata,
    Column("obis_key", Integer, primary_key=True, autoincrement=True),
    Column("obis", String(32), nullable=False),
    UniqueConstraint("obis", name="uq_obis_codes_obis"),
)

#: Version 9: register values (billing, instantaneous), keyed by the meter's key (shared with
#: the interval tables), the register's key and the read's time (``ts_us``, epoch
#: microseconds). The key serves every query: one meter's history by register and time,
#: each register's newest value, the insert-or-ignore of re-reads. Retention's delete by
#: time scans the table once a day instead of keeping a time index on every row.
register_values = Table(
    "register_values",
    metadata,
    Column("meter_key", Integer, nullable=False),
    Column("obis_key", Integer, nullable=False),
    Column("ts_us", EpochMicros, nullable=False),
    Column("value", BigInteger),
    Column("scaler", SmallInteger, nullable=False),
    Column("unit", SmallInteger),
    Column("capture_us", EpochMicros),
    PrimaryKeyConstraint("meter_key", "obis_key", "ts_us", name="pk_register_values"),
    sqlite_with_rowid=False,
)

#: Version 9: event-log entries, keyed by meter key, log key (``obis_codes``), time
#: (``ts_us``, epoch microseconds) and code: one meter's log, its newest entry, the open
#: power-down and the entries at one time stamp are ranges of the key.
meter_events = Table(
    "meter_events",
    metadata,
    Column("meter_key", Integer, nullable=False),
    Column("log_key", Integer, nullable=False),
    Column("ts_us", EpochMicros, nullable=False),
    Column("code", Integer, nullable=False),
    Column("name", String(128)),
    PrimaryKeyConstraint("meter_key", "log_key", "ts_us", "code", name="pk_meter_events"),
    sqlite_with_rowid=False,
)
#: One log of every meter over a time range (the API's alarms, newest first), which the
#: primary key (meter first) cannot answer without reading every event.
EVENTS_BY_LOG = Index("ix_meter_events_log_ts", meter_events.c.log_key, meter_events.c.ts_us)

#: Version 10: the collection runs attempts were made in (``20260310T000500-1a2b3c4d``,
#: ``job-7``), so an attempt carries a small integer instead of the run id. A key is made when
#: the run's first attempt is stored, never reused; keys grow with time, so they order the
#: attempts of one stamp as the rows' insertion did.
collection_runs = Table(
    "collection_runs",
    metadata,
    Column("run_key", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    UniqueConstraint("run_id", name="uq_collection_runs_run_id"),
)


class OutcomeCode(TypeDecorator[str]):
    """An attempt's outcome (``ok``, ``partial``, ``failed``) stored as its index in
    :data:`OUTCOMES`: 0 and 1 take no byte in a SQLite record, 2 one byte."""

    impl = SmallInteger
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if value not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {value!r}")
        return OUTCOMES.index(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else OUTCOMES[int(value)]


#: Version 10: one session with a meter for a collection day, whatever its outcome, keyed by
#: the day (days since 1970-01-01, as ``interval_days``), the meter's key (``interval_meters``,
#: made by its first attempt if nothing else made it), the start (``started_us``, epoch
#: microseconds) and the run's key (``collection_runs``). The key leads with the day, so the
#: daily report's scan and retention's delete are one range, and one meter's attempts of a
#: day, by start, are the next level of it (its latest attempt is the last entry of that
#: range); nothing else reads attempts, so no other index. A run collects one day, so the
#: key is the natural key of old (meter, run, start) and re-recording an attempt stores
#: nothing. ``error_class`` is a short code (``timeout``) and NULL on success, as is ``error``.
read_attempts = Table(
    "read_attempts",
    metadata,
    # 8-byte columns first, then 4, 2 and text: no alignment padding in a PostgreSQL row
    Column("started_us", EpochMicros, nullable=False),
    Column("finished_us", EpochMicros),
    Column("bytes_tx", BigInteger, nullable=False, default=0),
    Column("bytes_rx", BigInteger, nullable=False, default=0),
    Column("day", Integer, nullable=False),
    Column("meter_key", Integer, nullable=False),
    Column("run_key", Integer, nullable=False),
    Column("round_trips", Integer, nullable=False, default=0),
    Column("outcome", OutcomeCode, nullable=False),
    Column("error_class", String(64)),
    Column("error", Text),
    CheckConstraint("outcome IN (0, 1, 2)", name="ck_read_attempts_outcome"),
    PrimaryKeyConstraint("day", "meter_key", "started_us", "run_key", name="pk_read_attempts"),
    sqlite_with_rowid=False,
)
