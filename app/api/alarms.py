"""``GET /api/alarms``: what meters pushed (DataNotifications the push listener stored as
events of ``storage.operations.PUSH_LOG``), newest first, across the fleet or of one meter.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.api.auth import Context, Reader
from app.api.params import From, Limit, To, iso, ordered
from storage import queries

router = APIRouter(prefix="/api/alarms", tags=["alarms"])


@router.get("", name="alarms.list")
async def list_alarms(
    ctx: Context,
    _token: Reader,
    start: From = None,
    end: To = None,
    meter: Annotated[str | None, Query(description="One meter's alarms only")] = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Pushed alarms in [from, to) (either open), newest first."""
    ordered(start, end)
    rows = await ctx.run(queries.alarms, ctx.db, start, end, meter_id=meter, limit=limit)
    return {
        "limit": limit,
        "items": [
            {"meter_id": e.meter_id, "ts": iso(e.ts), "code": e.code, "name": e.name} for e in rows
        ],
    }
