"""``/api/meters``: the inventory, listed and paged, one meter with its channels, a CSV import,
and the operator's enable/disable switch.

The import is ``collector.inventory``'s, whole file or nothing: a bad upload imports no row
and answers 400 with every problem by line, as ``hes meters import`` prints them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request

from app.api.audit import Changing
from app.api.auth import Context, Reader
from app.api.context import ServiceContext
from app.api.errors import ApiError
from app.api.params import Limit, Offset
from collector.inventory import InventoryError, import_inventory_text
from protocols.cosem import unit_text
from storage import queries
from storage.push_setups import load_push_setups
from storage.queries import MeterFilter
from storage.records import Channel

router = APIRouter(prefix="/api/meters", tags=["meters"])

#: The largest inventory upload (a 200,000-meter file is about 20 MB).
MAX_IMPORT_BYTES = 64 * 1024 * 1024
CSV = "text/csv"

MeterId = Annotated[str, Path(min_length=1, max_length=64, description="The meter's id")]


def channel_dict(channel: Channel) -> dict[str, Any]:
    return {
        "channel": channel.channel,
        "unit": unit_text(channel.unit),
        "unit_code": channel.unit,
        "scaler": channel.scaler,
        "period_s": channel.period_s,
    }


def unknown_meter(meter_id: str) -> ApiError:
    return ApiError(
        404, "unknown_meter", f"no meter {meter_id!r} in the inventory", "path.meter_id"
    )


async def meter_or_404(ctx: ServiceContext, meter_id: str) -> queries.MeterInfo:
    info = await ctx.run(queries.meter_info, ctx.db, meter_id)
    if info is None:
        raise unknown_meter(meter_id)
    return info


async def _meter_dict(ctx: ServiceContext, meter_id: str) -> dict[str, Any]:
    info = await meter_or_404(ctx, meter_id)
    channels = await ctx.run(ctx.db.meter_channels, meter_id)
    return {**info.as_dict(), "channels": [channel_dict(c) for c in channels]}


@router.get("", name="meters.list")
async def list_meters(
    ctx: Context,
    _token: Reader,
    area: str | None = None,
    station: str | None = None,
    link_id: str | None = None,
    transport: Literal["tcp", "hdlc-tcp", "serial"] | None = None,
    enabled: bool | None = None,
    q: Annotated[str | None, Query(description="The start of the meter id")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Meters by id, filtered (every filter must match; ``q`` is an id prefix) and paged."""
    where = MeterFilter(area, station, link_id, transport, enabled, q)
    total, page = await ctx.run(queries.meter_page, ctx.db, where, limit, offset)
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "items": [m.as_dict() for m in page],
    }


@router.post(
    "/import",
    name="meters.import",
    openapi_extra={
        "requestBody": {"required": True, "content": {CSV: {"schema": {"type": "string"}}}}
    },
)
async def import_meters(request: Request, ctx: Context, change: Changing) -> dict[str, Any]:
    """Import an inventory CSV (the body, ``text/csv``): every row valid, or none imported."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != CSV:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the inventory is sent as {CSV}, not {media or 'no content type'}",
            "header.Content-Type",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_IMPORT_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_IMPORT_BYTES:
            raise _too_large()
    try:
        result = await ctx.run(
            import_inventory_text, ctx.db, bytes(body), "upload", ctx.plan.profiles
        )
    except InventoryError as exc:
        change.detail = {"problems": exc.total}
        raise ApiError(
            400,
            "bad_inventory",
            f"inventory rejected ({exc.total} problem{'s' if exc.total != 1 else ''}), "
            "nothing imported",
            "body",
            {
                "problems": [{"line": line, "message": reason} for line, reason in exc.problems],
                "problems_total": exc.total,
            },
        ) from exc
    out = {"rows": result.rows, "inserted": result.inserted, "updated": result.updated}
    change.detail = out
    return {**out, "seconds": round(result.seconds, 3)}


def _too_large() -> ApiError:
    return ApiError(
        413, "too_large", f"an inventory upload is at most {MAX_IMPORT_BYTES} bytes", "body"
    )


@router.get("/{meter_id}", name="meters.get")
async def get_meter(ctx: Context, _token: Reader, meter_id: MeterId) -> dict[str, Any]:
    """One meter: how it is reached, its switch, and its profile channels (unit, scaler)."""
    return await _meter_dict(ctx, meter_id)


@router.get("/{meter_id}/push-setups", name="meters.push_setups")
async def get_push_setups(ctx: Context, _token: Reader, meter_id: MeterId) -> dict[str, Any]:
    """The meter's push setups (class 40) as last read back from it (``hes push show|set``,
    the ``push_setup`` job): what the push listener decodes its values-only pushes by."""
    await meter_or_404(ctx, meter_id)
    records = await ctx.run(load_push_setups, ctx.db, [meter_id])
    return {"meter_id": meter_id, "push_setups": [r.as_dict() for r in records]}


async def _switch(ctx: ServiceContext, meter_id: str, enabled: bool) -> dict[str, Any]:
    if not await ctx.run(ctx.db.set_enabled, [meter_id], enabled):
        raise unknown_meter(meter_id)
    return await _meter_dict(ctx, meter_id)


@router.post("/{meter_id}/enable", name="meters.enable")
async def enable_meter(ctx: Context, change: Changing, meter_id: MeterId) -> dict[str, Any]:
    """Read the meter again, and count it in the success rate (operator role)."""
    change.detail = {"enabled": True}
    return await _switch(ctx, meter_id, True)


@router.post("/{meter_id}/disable", name="meters.disable")
async def disable_meter(ctx: Context, change: Changing, meter_id: MeterId) -> dict[str, Any]:
    """Stop reading the meter; it is not expected in the success rate (operator role)."""
    change.detail = {"enabled": False}
    return await _switch(ctx, meter_id, False)
