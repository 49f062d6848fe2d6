"""The web status page: ``GET /`` (the page), its script and style, and ``GET /api/status``.

The page (``app/web/``: plain HTML, one small script, one style sheet, all served from here,
nothing from a CDN) polls ``/api/status`` every few seconds and re-renders, so it stays live
without a reload. ``/api/status`` is one JSON document with everything the page shows, each
part bounded however large the fleet or long the uptime: the service's start and uptime; the
current collection day's final and first-pass rates and counts, the last 14 days, the areas
(worst first) and the failing meters with their last error (from :class:`app.api.kpi.KpiCache`,
at most 30 s old); the sessions in flight per link; what the service loop reports of itself
(``ServiceContext.live``); the job queue; the cluster's nodes (:mod:`app.api.nodes`); the
newest alarms, commands and command jobs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, Response

from app.api.auth import Context
from app.api.errors import ApiError
from app.api.kpi import Kpi
from app.api.nodes import nodes_of
from app.api.public import StatusAccess
from collector.telemetry import LiveSession
from storage import activity, jobs
from storage.database import Database

router = APIRouter(tags=["status"])

#: The most sessions in flight listed (the total is always given).
MAX_SESSIONS = 100
#: The most areas listed, worst first.
MAX_AREAS = 50
#: Alarms, commands and command jobs listed, newest first.
RECENT = 20
#: The page's files (package data of ``app.web``) and their media types.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "status.js": "text/javascript; charset=utf-8",
    "status.css": "text/css; charset=utf-8",
}
_NO_CACHE = {"Cache-Control": "no-cache"}


@functools.cache
def _asset(name: str) -> bytes:
    return resources.files("app.web").joinpath(name).read_bytes()


@router.get("/", include_in_schema=False)
async def page() -> HTMLResponse:
    """The status page (it holds no data: the script fetches ``/api/status``)."""
    return HTMLResponse(_asset("index.html"), headers=_NO_CACHE)


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in ASSETS or name == "index.html":
        raise ApiError(404, "not_found", f"no static file {name!r}", "path.name")
    return Response(_asset(name), media_type=ASSETS[name], headers=_NO_CACHE)


def sessions_by_link(
    sessions: Sequence[LiveSession], now: datetime, limit: int = MAX_SESSIONS
) -> dict[str, Any]:
    """The sessions in flight grouped by link (busiest link first), at most ``limit``
    sessions listed (oldest first within the bound); ``total`` and ``links`` count all."""
    oldest = sorted(sessions, key=lambda s: s.started)
    listed = oldest[:limit]
    per_link: dict[str, int] = {}
    for s in sessions:
        per_link[s.link_id] = per_link.get(s.link_id, 0) + 1
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in listed:
        groups.setdefault(s.link_id, []).append(
            {
                "meter_id": s.meter_id,
                "job": s.job,
                "started": s.started.isoformat(),
                "age_s": round(max(0.0, (now - s.started).total_seconds()), 1),
            }
        )
    return {
        "total": len(sessions),
        "links": len(per_link),
        "listed": len(listed),
        "by_link": [
            {"link_id": link, "sessions": per_link[link], "listed": groups[link]}
            for link in sorted(groups, key=lambda k: (-per_link[k], k))
        ],
    }


def _areas(by_area: dict[str, dict[str, Any]], limit: int = MAX_AREAS) -> list[dict[str, Any]]:
    """Areas worst first (lowest final rate; areas with no expected meter last)."""

    def key(item: tuple[str, dict[str, Any]]) -> tuple[bool, float, str]:
        rate = item[1]["success_rate"]
        return (rate is None, rate if rate is not None else 0.0, item[0])

    return [{"area": area or None, **g} for area, g in sorted(by_area.items(), key=key)[:limit]]


def _activity(db: Database) -> dict[str, Any]:
    """The database part of the status that is never cached (cheap, bounded reads)."""
    depth = jobs.queue_depth(db)
    return {
        "nodes": nodes_of(db),
        "queue": {"depth": depth, "total": sum(depth.values())},
        "alarms": activity.recent_alarms(db, RECENT),
        "commands": activity.recent_commands(db, RECENT),
        "command_jobs": [
            {
                "id": job.id,
                "kind": job.kind,
                "state": job.state,
                "meters": job.meters[:5] if job.meters else job.meters,
                "meter_count": len(job.meters) if job.meters else None,
                "requested_by": job.requested_by,
                "created_at": job.created_at.isoformat(),
                "finished_at": job.finished_at.isoformat() if job.finished_at else None,
                "error": job.error,
            }
            for job in activity.recent_command_jobs(db, RECENT)
        ],
    }


@router.get("/api/status", summary="Everything the status page shows")
async def status(ctx: Context, _access: StatusAccess, kpi: Kpi) -> dict[str, Any]:
    """Service, the collection day's KPI and the last 14 days, areas, failing meters,
    sessions in flight per link, the service loop's own report, queue, alarms, commands."""
    today = await kpi.today(ctx)
    history = await kpi.history(ctx)
    recent = await ctx.run(_activity, ctx.db)
    now = datetime.now(UTC)
    report = today.value
    return {
        "generated_at": now.isoformat(),
        "service": {
            "started": ctx.started.isoformat(),
            "uptime_s": round((now - ctx.started).total_seconds(), 1),
            "timezone": ctx.plan.timezone,
            "plan": ctx.plan.source,
        },
        "collection_day": {
            "day": report["day"],
            "computed_at": today.computed_at.isoformat(),
            "success_rate": report["success_rate"],
            "first_pass_rate": report["first_pass_rate"],
            "expected": report["expected_meters"],
            "complete": report["complete_meters"],
            "failed": report["failed_meters"],
            "not_collected": report["not_collected_meters"],
            "not_expected": report["not_expected_meters"],
            "first_pass": report["first_pass_meters"],
            "intervals_missing": report["intervals_missing"],
        },
        "history": [row.as_dict() for row in history],
        "areas": _areas(report["by_area"]),
        "area_count": len(report["by_area"]),
        "failing_meters": report["worst_meters"],
        "failing_total": report["incomplete_meters"],
        "in_flight": sessions_by_link(ctx.telemetry.in_flight(), now),
        "live": jsonable_encoder(ctx.live()),
        **recent,
    }
