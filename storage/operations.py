"""Tables and queries of meter operations: command audit, clock corrections, outages.

The tables live in a MetaData of their own and are created by :func:`migrate`, which the
Alembic revision 0003 (``storage/migrations/versions``) runs. Push alarms need no table:
they are events (``meter_events`` table) of the pseudo log :data:`PUSH_LOG`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    insert,
    select,
)

from storage import schema
from storage.handle import DatabaseHandle, insert_ignore
from storage.schema import UtcDateTime

#: ``log_obis`` of pushed alarms in the events (``meter_events``): the IDIS push setup object
#: (0-0:25.9.0.255) that sends them.
PUSH_LOG = "0.0.25.9.0.255"
COMMANDS = ("disconnect", "reconnect", "firmware")
COMMAND_OUTCOMES = ("ok", "failed")

metadata = MetaData()

command_audit = Table(
    "command_audit",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("meter_id", String(64), nullable=False),
    Column("command", String(32), nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("requested_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("error_class", String(64)),
    Column("error", Text),
    # Read back from the disconnect control after the method ran (None: not read).
    Column("output_state", Boolean),
    Column("control_state", Integer),
    CheckConstraint("outcome IN ('ok', 'failed')", name="ck_command_audit_outcome"),
)
Index("ix_command_audit_meter", command_audit.c.meter_id, command_audit.c.requested_at)

clock_corrections = Table(
    "clock_corrections",
    metadata,
    Column("meter_id", String(64), nullable=False),
    Column("corrected_at", UtcDateTime, nullable=False),
    # Meter clock minus head-end time before and after the correction (seconds); None:
    # the meter's time did not name an instant.
    Column("drift_s", Float),
    Column("residual_s", Float),
    Column("method", String(16), nullable=False),
    Column("threshold_s", Float, nullable=False),
    PrimaryKeyConstraint("meter_id", "corrected_at", name="pk_clock_corrections"),
)

outages = Table(
    "outages",
    metadata,
    Column("meter_id", String(64), nullable=False),
    Column("power_down", UtcDateTime, nullable=False),
    Column("power_up", UtcDateTime, nullable=False),
    Column("duration_s", Integer, nullable=False),
    PrimaryKeyConstraint("meter_id", "power_down", name="pk_outages"),
    sqlite_with_rowid=False,
)


def migrate(conn: Connection) -> None:
    """Migration step 2: the operations tables."""
    metadata.create_all(conn, checkfirst=True)


@dataclass(slots=True, frozen=True)
class CommandRecord:
    """One operator command on one meter, as audited."""

    meter_id: str
    command: str
    requested_by: str
    requested_at: datetime
    finished_at: datetime
    outcome: str
    error_class: str | None = None
    error: str | None = None
    output_state: bool | None = None
    control_state: int | None = None


@dataclass(slots=True, frozen=True)
class ClockCorrection:
    """A meter clock set back within the threshold (or an attempt that did not get there)."""

    meter_id: str
    corrected_at: datetime
    drift_s: float | None
    residual_s: float | None
    method: str
    threshold_s: float


@dataclass(slots=True, frozen=True)
class Outage:
    """A power-down/power-up pair of a meter's power-failure log."""

    meter_id: str
    power_down: datetime
    power_up: datetime

    @property
    def duration_s(self) -> int:
        return int((self.power_up - self.power_down).total_seconds())


def record_command(db: DatabaseHandle, record: CommandRecord) -> None:
    """Audit one command (who, what, when, result)."""
    if record.command not in COMMANDS:
        raise ValueError(f"command must be one of {COMMANDS}, not {record.command!r}")
    if record.outcome not in COMMAND_OUTCOMES:
        raise ValueError(f"outcome must be one of {COMMAND_OUTCOMES}, not {record.outcome!r}")
    values = {
        "meter_id": record.meter_id,
        "command": record.command,
        "requested_by": record.requested_by,
        "requested_at": record.requested_at,
        "finished_at": record.finished_at,
        "outcome": record.outcome,
        "error_class": record.error_class,
        "error": record.error[:2000] if record.error else None,
        "output_state": record.output_state,
        "control_state": record.control_state,
    }
    with db.transaction() as conn:
        conn.execute(insert(command_audit).values(**values))


def commands(db: DatabaseHandle, meter_id: str | None = None) -> list[CommandRecord]:
    """Audited commands, oldest first (of one meter, or all)."""
    t = command_audit
    stmt = select(
        t.c.meter_id,
        t.c.command,
        t.c.requested_by,
        t.c.requested_at,
        t.c.finished_at,
        t.c.outcome,
        t.c.error_class,
        t.c.error,
        t.c.output_state,
        t.c.control_state,
    ).order_by(t.c.id)
    if meter_id is not None:
        stmt = stmt.where(t.c.meter_id == meter_id)
    return [CommandRecord(*row) for row in db.execute_read(stmt)]


def record_clock_correction(db: DatabaseHandle, row: ClockCorrection) -> None:
    stmt = insert_ignore(db.dialect, clock_corrections)
    with db.transaction() as conn:
        conn.execute(
            stmt,
            {
                "meter_id": row.meter_id,
                "corrected_at": row.corrected_at,
                "drift_s": row.drift_s,
                "residual_s": row.residual_s,
                "method": row.method,
                "threshold_s": row.threshold_s,
            },
        )


def clock_corrections_of(db: DatabaseHandle, meter_id: str) -> list[ClockCorrection]:
    t = clock_corrections
    stmt = (
        select(
            t.c.meter_id, t.c.corrected_at, t.c.drift_s, t.c.residual_s, t.c.method, t.c.threshold_s
        )
        .where(t.c.meter_id == meter_id)
        .order_by(t.c.corrected_at)
    )
    return [ClockCorrection(*row) for row in db.execute_read(stmt)]


def insert_outages(db: DatabaseHandle, rows: Iterable[Outage]) -> int:
    """Store outages; one already stored (same meter and power-down) is left alone."""
    params = [
        {
            "meter_id": o.meter_id,
            "power_down": o.power_down,
            "power_up": o.power_up,
            "duration_s": o.duration_s,
        }
        for o in rows
    ]
    if not params:
        return 0
    stmt = insert_ignore(db.dialect, outages)
    if db.dialect == "postgresql":
        stmt = stmt.returning(outages.c.meter_id)
    with db.transaction() as conn:
        result = conn.execute(stmt, params)
        if db.dialect == "postgresql":
            return len(result.all())
        return max(result.rowcount, 0)


def outages_of(
    db: DatabaseHandle,
    meter_id: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[Outage]:
    """One meter's outages, oldest first; with ``start``/``end`` those that overlap it."""
    t = outages
    stmt = (
        select(t.c.meter_id, t.c.power_down, t.c.power_up)
        .where(t.c.meter_id == meter_id)
        .order_by(t.c.power_down)
    )
    if start is not None:
        stmt = stmt.where(t.c.power_up >= start)
    if end is not None:
        stmt = stmt.where(t.c.power_down < end)
    return [Outage(*row) for row in db.execute_read(stmt)]


def _log_entries(meter_id: str, log_obis: str) -> Any:
    """The entries of one meter's log (a range of ``meter_events``' key)."""
    e, m, o = schema.meter_events, schema.interval_meters, schema.obis_codes
    return (
        select(e.c.ts_us, e.c.code)
        .join(m, m.c.meter_key == e.c.meter_key)
        .join(o, o.c.obis_key == e.c.log_key)
        .where(m.c.meter_id == meter_id, o.c.obis == log_obis)
    )


def last_event_time(db: DatabaseHandle, meter_id: str, log_obis: str) -> datetime | None:
    """Time stamp of the newest stored entry of one meter's event log (None: none stored)."""
    newest = _log_entries(meter_id, log_obis).order_by(schema.meter_events.c.ts_us.desc())
    rows = db.execute_read(newest.limit(1))
    return rows[0][0] if rows else None


def event_codes_at(db: DatabaseHandle, meter_id: str, log_obis: str, ts: datetime) -> set[int]:
    """The codes stored for one meter's log at time stamp ``ts``."""
    stmt = _log_entries(meter_id, log_obis).where(schema.meter_events.c.ts_us == ts)
    return {int(row[1]) for row in db.execute_read(stmt)}


def pending_power_down(db: DatabaseHandle, meter_id: str, log_obis: str) -> datetime | None:
    """The stored power-down not yet followed by a power-up (an outage still open), if any."""
    e = schema.meter_events
    stmt = (
        _log_entries(meter_id, log_obis)
        .where(e.c.code.in_((1, 2)))
        .order_by(e.c.ts_us.desc(), e.c.code.desc())
        .limit(1)
    )
    rows = db.execute_read(stmt)
    if rows and rows[0][1] == 1:
        return rows[0][0]
    return None
