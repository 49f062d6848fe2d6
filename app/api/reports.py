"""``/api/reports``: the collection KPI of a day and the history of days (reader role).

Judged on the plan's channels (:func:`app.report.judged_on`, the same function as
``hes report``), never on what happens to be stored. Computed per request, not cached:
a client that asks for a report wants it as of now (the status page and ``/metrics`` use the
cache of :mod:`app.api.kpi`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.api.auth import Context, Reader
from app.api.context import ServiceContext
from app.api.errors import ApiError
from app.report import collection_day, judged_on, plan_daily_report, plan_success_rates

router = APIRouter(prefix="/api/reports", tags=["reports"])

#: The longest history one request may ask for (each day is a daily report's queries).
MAX_HISTORY_DAYS = 92
MAX_WORST = 1000


def _not_future(ctx: ServiceContext, day: date | None, field: str) -> date:
    """``day``, or the current collection day; a day after today (plan zone) is refused."""
    if day is None:
        return collection_day(ctx.plan)
    today = datetime.now(UTC).astimezone(ctx.plan.tz).date()
    if day > today:
        raise ApiError(
            400,
            "bad_request",
            f"{field}: {day.isoformat()} is after today ({today.isoformat()}, "
            f"{ctx.plan.timezone}): nothing to report yet",
            field,
        )
    return day


@router.get("/daily", summary="Collection figures of one day")
async def daily(
    ctx: Context,
    _token: Reader,
    day: Annotated[
        date | None,
        Query(description="collection day, YYYY-MM-DD (default: yesterday, plan zone)"),
    ] = None,
    worst: Annotated[
        int, Query(ge=0, le=MAX_WORST, description="how many worst meters to list")
    ] = 10,
) -> dict[str, Any]:
    """Expected, not expected, complete, failed and not-collected meters; the final and
    first-pass success rates; failures by error class; by area and by link (links with an
    incomplete meter); the worst meters with their last error."""
    the_day = _not_future(ctx, day, "query.day")
    return await ctx.run(plan_daily_report, ctx.db, ctx.plan, the_day, worst)


@router.get("/history", summary="Final and first-pass success rate per day")
async def history(
    ctx: Context,
    _token: Reader,
    days: Annotated[
        int, Query(ge=1, le=MAX_HISTORY_DAYS, description="how many days, ending with `to`")
    ] = 14,
    to: Annotated[
        date | None,
        Query(description="last day, YYYY-MM-DD (default: yesterday, plan zone)"),
    ] = None,
) -> dict[str, Any]:
    """One row per day, oldest first: final and first-pass rate (None: no meter expected),
    complete, expected, failed, not collected and not expected meters."""
    last = _not_future(ctx, to, "query.to")
    rows = await ctx.run(plan_success_rates, ctx.db, ctx.plan, last, days)
    channels, period_s = judged_on(ctx.plan)
    return {
        "to": last.isoformat(),
        "days": days,
        "channels": channels,
        "period_s": period_s,
        "timezone": ctx.plan.timezone,
        "history": [r.as_dict() for r in rows],
    }
