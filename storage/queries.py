"""The service API's reads: meters filtered and paged, registers, events, alarms, counts.

Each is one set-based statement on indexed columns (the primary keys, which start with the
meter or its key, ``ix_meters_*`` and ``ix_meter_events_log_ts``) and returns a bounded page,
never a whole table: a 200,000-meter inventory answers a page of 100 without loading the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select

from storage import access, jobs, schema
from storage.handle import DatabaseHandle
from storage.operations import PUSH_LOG
from storage.records import Event, MeterRecord, RegisterRead
from storage.register_events import event_select, register_select

#: Ids per ``IN (...)`` list: well under SQLite's 32,766 bound variables.
_IDS_PER_QUERY = 10_000


@dataclass(frozen=True, slots=True)
class MeterFilter:
    """What a meter list is narrowed to (None: any); ``prefix`` matches the start of the id."""

    area: str | None = None
    station: str | None = None
    link_id: str | None = None
    transport: str | None = None
    enabled: bool | None = None
    prefix: str | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        t = schema.meters
        out: list[ColumnElement[bool]] = []
        for column, value in (
            (t.c.area, self.area),
            (t.c.station, self.station),
            (t.c.link_id, self.link_id),
            (t.c.transport, self.transport),
        ):
            if value is not None:
                out.append(column == value)
        if self.enabled is not None:
            out.append(t.c.enabled.is_(self.enabled))
        if self.prefix:
            out.append(t.c.meter_id.startswith(self.prefix, autoescape=True))
        return out


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """A meter of the inventory with the operator's switch and when it was written."""

    record: MeterRecord
    enabled: bool
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: dates and instants as ISO 8601."""
        out: dict[str, Any] = {}
        for name, value in self.record._asdict().items():
            out[name] = value.isoformat() if isinstance(value, date) else value
        out["enabled"] = self.enabled
        out["created_at"] = self.created_at.isoformat()
        out["updated_at"] = self.updated_at.isoformat()
        return out


_METER_COLUMNS = [
    *(schema.meters.c[f] for f in MeterRecord._fields),
    schema.meters.c.enabled,
    schema.meters.c.created_at,
    schema.meters.c.updated_at,
]
_N_RECORD = len(MeterRecord._fields)


def _meter_info(row: Any) -> MeterInfo:
    return MeterInfo(MeterRecord(*row[:_N_RECORD]), bool(row[_N_RECORD]), *row[_N_RECORD + 1 :])


def meter_page(
    db: DatabaseHandle, where: MeterFilter, limit: int, offset: int = 0
) -> tuple[int, list[MeterInfo]]:
    """``(total matching, one page of them by id)``."""
    t = schema.meters
    clauses = where.clauses()
    total = db.execute_read(select(func.count()).select_from(t).where(*clauses))[0][0]
    rows = db.execute_read(
        select(*_METER_COLUMNS).where(*clauses).order_by(t.c.meter_id).limit(limit).offset(offset)
    )
    return int(total), [_meter_info(r) for r in rows]


def meter_info(db: DatabaseHandle, meter_id: str) -> MeterInfo | None:
    rows = db.execute_read(select(*_METER_COLUMNS).where(schema.meters.c.meter_id == meter_id))
    return _meter_info(rows[0]) if rows else None


def known_meters(db: DatabaseHandle, meter_ids: Iterable[str]) -> set[str]:
    """Which of ``meter_ids`` are in the inventory."""
    t = schema.meters
    ids = list(dict.fromkeys(meter_ids))
    known: set[str] = set()
    for i in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[i : i + _IDS_PER_QUERY]
        known.update(
            str(r[0]) for r in db.execute_read(select(t.c.meter_id).where(t.c.meter_id.in_(chunk)))
        )
    return known


def register_reads(
    db: DatabaseHandle,
    meter_id: str,
    start: datetime,
    end: datetime,
    obis: str | None = None,
) -> list[RegisterRead]:
    """One meter's register values read in ``[start, end)``, by OBIS then time."""
    r, m, o = schema.register_values, schema.interval_meters, schema.obis_codes
    stmt = register_select().where(m.c.meter_id == meter_id, r.c.ts_us >= start, r.c.ts_us < end)
    if obis is not None:
        stmt = stmt.where(o.c.obis == obis)
    return [RegisterRead(*row) for row in db.execute_read(stmt.order_by(o.c.obis, r.c.ts_us))]


def latest_registers(
    db: DatabaseHandle, meter_id: str, obis: str | None = None
) -> list[RegisterRead]:
    """The newest value of each register of one meter, by OBIS."""
    r, m, o = schema.register_values, schema.interval_meters, schema.obis_codes
    newest = (
        select(r.c.obis_key, func.max(r.c.ts_us).label("ts_us"))
        .join(m, m.c.meter_key == r.c.meter_key)
        .where(m.c.meter_id == meter_id)
    )
    if obis is not None:
        newest = newest.join(o, o.c.obis_key == r.c.obis_key).where(o.c.obis == obis)
    sub = newest.group_by(r.c.obis_key).subquery()
    stmt = (
        register_select()
        .join(sub, and_(r.c.obis_key == sub.c.obis_key, r.c.ts_us == sub.c.ts_us))
        .where(m.c.meter_id == meter_id)
        .order_by(o.c.obis)
    )
    return [RegisterRead(*row) for row in db.execute_read(stmt)]


def events_of(
    db: DatabaseHandle,
    meter_id: str,
    start: datetime | None,
    end: datetime | None,
    *,
    log_obis: str | None = None,
    limit: int = 1000,
) -> list[Event]:
    """One meter's event-log entries in ``[start, end)`` (None: open), oldest first."""
    e, m, o = schema.meter_events, schema.interval_meters, schema.obis_codes
    stmt = event_select().where(m.c.meter_id == meter_id)
    if log_obis is not None:
        stmt = stmt.where(o.c.obis == log_obis)
    if start is not None:
        stmt = stmt.where(e.c.ts_us >= start)
    if end is not None:
        stmt = stmt.where(e.c.ts_us < end)
    stmt = stmt.order_by(e.c.ts_us, o.c.obis, e.c.code).limit(limit)
    return [Event(*row) for row in db.execute_read(stmt)]


def alarms(
    db: DatabaseHandle,
    start: datetime | None,
    end: datetime | None,
    *,
    meter_id: str | None = None,
    limit: int = 100,
) -> list[Event]:
    """Pushed alarms (events of :data:`~storage.operations.PUSH_LOG`), newest first."""
    e, m, o = schema.meter_events, schema.interval_meters, schema.obis_codes
    stmt = event_select().where(o.c.obis == PUSH_LOG)
    if meter_id is not None:
        stmt = stmt.where(m.c.meter_id == meter_id)
    if start is not None:
        stmt = stmt.where(e.c.ts_us >= start)
    if end is not None:
        stmt = stmt.where(e.c.ts_us < end)
    stmt = stmt.order_by(e.c.ts_us.desc(), m.c.meter_id, e.c.code).limit(limit)
    return [Event(*row) for row in db.execute_read(stmt)]


def count_jobs(db: DatabaseHandle, *, state: str | None = None, kind: str | None = None) -> int:
    """How many jobs :func:`storage.jobs.list_jobs` pages through with the same filters."""
    j = jobs.jobs
    stmt = select(func.count()).select_from(j)
    if state is not None:
        stmt = stmt.where(j.c.state == state)
    if kind is not None:
        stmt = stmt.where(j.c.kind == kind)
    return int(db.execute_read(stmt)[0][0])


def count_audit(db: DatabaseHandle, *, actor: str | None = None) -> int:
    """How many entries :func:`storage.access.audit_entries` pages through."""
    a = access.audit_log
    stmt = select(func.count()).select_from(a)
    if actor is not None:
        stmt = stmt.where(a.c.actor == actor)
    return int(db.execute_read(stmt)[0][0])
