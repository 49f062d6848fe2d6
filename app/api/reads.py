"""What was read from a meter: ``/api/meters/{id}/reads`` (interval values of one channel over
a range, JSON or CSV), ``/registers``, ``/events`` and ``/outages``.

Values go out scaled (``value * 10**scaler``, the scaler stored with each row) with the
channel's unit as text; instants as ISO 8601 UTC. An interval or register range spans at
most 31 days, so no request reads without bound. Each handler makes one trip to the
executor, and asks whether the meter exists only when the answer would otherwise be empty.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from app.api.auth import Context, Reader
from app.api.context import ServiceContext
from app.api.errors import ApiError
from app.api.meters import MeterId, unknown_meter
from app.api.params import From, Limit, To, bounded, iso, ordered
from protocols.cosem import Obis, scaled_text, unit_text
from storage import operations, queries
from storage.database import Database
from storage.records import Channel, IntervalRead

router = APIRouter(prefix="/api/meters", tags=["reads"])

T = TypeVar("T")


def _obis(text: str | None, field: str) -> str | None:
    """``1-0:1.8.0.255`` or ``1.0.1.8.0.255`` as stored (``1.0.1.8.0.255``)."""
    if text is None:
        return None
    try:
        return str(Obis.parse(text))
    except ValueError:
        raise ApiError(400, "bad_request", f"{text!r} is not an OBIS code", field) from None


def scaled(raw: int | None, scaler: int) -> int | float | None:
    """The physical value; positive scalers stay exact ints."""
    if raw is None:
        return None
    return raw * 10**scaler if scaler >= 0 else raw / 10 ** (-scaler)


async def _or_404(ctx: ServiceContext, meter_id: str, fetch: Callable[[Database], T]) -> T:
    """``fetch(db)``; an empty answer for a meter not in the inventory is its 404."""

    def run(db: Database) -> tuple[T, bool]:
        found = fetch(db)
        return found, bool(found) or queries.meter_info(db, meter_id) is not None

    found, known = await ctx.run(run, ctx.db)
    if not known:
        raise unknown_meter(meter_id)
    return found


@dataclass(frozen=True, slots=True)
class _Intervals:
    channels: list[Channel]
    rows: list[IntervalRead]
    known: bool


def _intervals(
    db: Database, meter_id: str, channel: str, start: datetime, end: datetime
) -> _Intervals:
    channels = db.meter_channels(meter_id)
    if not any(c.channel == channel for c in channels):
        return _Intervals(
            channels, [], bool(channels) or queries.meter_info(db, meter_id) is not None
        )
    return _Intervals(channels, db.interval_reads(meter_id, channel, start, end), True)


@router.get("/{meter_id}/reads", name="reads.intervals")
async def interval_reads(
    ctx: Context,
    _token: Reader,
    meter_id: MeterId,
    channel: Annotated[str, Query(description="A profile channel, e.g. 1.0.1.8.0.255")],
    start: From = None,
    end: To = None,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
) -> Response:
    """Interval values of one channel in [from, to) (at most 31 days), scaled, with the unit."""
    start, end = bounded(start, end)
    found = await ctx.run(_intervals, ctx.db, meter_id, channel, start, end)
    if not found.known:
        raise unknown_meter(meter_id)
    chan = next((c for c in found.channels if c.channel == channel), None)
    if chan is None:
        known = ", ".join(c.channel for c in found.channels) or "none recorded"
        raise ApiError(
            400,
            "unknown_channel",
            f"meter {meter_id!r} has no channel {channel!r} (it has: {known})",
            "query.channel",
        )
    unit = unit_text(chan.unit)
    if format == "csv":
        return _csv(meter_id, channel, unit, found.rows)
    return JSONResponse(
        {
            "meter_id": meter_id,
            "channel": channel,
            "unit": unit,
            "unit_code": chan.unit,
            "from": iso(start),
            "to": iso(end),
            "count": len(found.rows),
            "items": [
                {"ts": iso(r.ts), "value": scaled(r.value, r.scaler), "status": r.status}
                for r in found.rows
            ],
        }
    )


def _csv(meter_id: str, channel: str, unit: str | None, rows: list[IntervalRead]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("meter_id", "channel", "ts", "value", "unit", "status"))
    for r in rows:
        writer.writerow(
            (
                meter_id,
                channel,
                iso(r.ts),
                scaled_text(r.value, r.scaler),
                unit or "",
                "" if r.status is None else r.status,
            )
        )
    name = f"{meter_id}_{channel}.csv".replace('"', "")
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'inline; filename="{name}"'},
    )


@router.get("/{meter_id}/registers", name="reads.registers")
async def register_reads(
    ctx: Context,
    _token: Reader,
    meter_id: MeterId,
    obis: Annotated[str | None, Query(description="One register, e.g. 1.0.1.8.0.255")] = None,
    start: From = None,
    end: To = None,
) -> dict[str, Any]:
    """The newest value of each register, or with from and to every value read in that range."""
    code = _obis(obis, "query.obis")
    if start is None and end is None:
        rows = await _or_404(ctx, meter_id, lambda db: queries.latest_registers(db, meter_id, code))
    else:
        first, last = bounded(start, end)
        rows = await _or_404(
            ctx, meter_id, lambda db: queries.register_reads(db, meter_id, first, last, code)
        )
    return {
        "meter_id": meter_id,
        "items": [
            {
                "obis": r.obis,
                "ts": iso(r.ts),
                "value": scaled(r.value, r.scaler),
                "unit": unit_text(r.unit),
                "unit_code": r.unit,
                "capture_time": iso(r.capture_time) if r.capture_time else None,
            }
            for r in rows
        ],
    }


@router.get("/{meter_id}/events", name="reads.events")
async def meter_events(
    ctx: Context,
    _token: Reader,
    meter_id: MeterId,
    start: From = None,
    end: To = None,
    log: Annotated[str | None, Query(description="One event log, e.g. 0.0.99.98.0.255")] = None,
    limit: Limit = 1000,
) -> dict[str, Any]:
    """Event-log entries (pushed alarms included) in [from, to), oldest first."""
    ordered(start, end)
    log_obis = _obis(log, "query.log")
    rows = await _or_404(
        ctx,
        meter_id,
        lambda db: queries.events_of(db, meter_id, start, end, log_obis=log_obis, limit=limit),
    )
    return {
        "meter_id": meter_id,
        "items": [
            {"log": e.log_obis, "ts": iso(e.ts), "code": e.code, "name": e.name} for e in rows
        ],
    }


@router.get("/{meter_id}/outages", name="reads.outages")
async def meter_outages(
    ctx: Context, _token: Reader, meter_id: MeterId, start: From = None, end: To = None
) -> dict[str, Any]:
    """Power outages (from the power-failure log) that overlap [from, to), oldest first."""
    ordered(start, end)
    rows = await _or_404(ctx, meter_id, lambda db: operations.outages_of(db, meter_id, start, end))
    return {
        "meter_id": meter_id,
        "items": [
            {
                "power_down": iso(o.power_down),
                "power_up": iso(o.power_up),
                "duration_s": o.duration_s,
            }
            for o in rows
        ],
    }
