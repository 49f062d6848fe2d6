"""``GET /metrics``: the service's Prometheus metrics, in the text exposition format.

Most metrics are kept up to date by the code that does the work (sessions, bytes, round
trips, link busy time, jobs ended, schedule lag, MQTT spool). Two are refreshed here, on
scrape, because they are questions to the database rather than events: the job queue depth
per kind (one grouped count) and the current collection day's success ratio (a daily report,
from :class:`app.api.kpi.KpiCache`, so at most one every 30 s however often Prometheus
scrapes). A database that does not answer leaves those two at their last values and the
scrape still succeeds: the metrics matter most when something is down.
"""

from __future__ import annotations

import logging
import math

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder

from app.api.auth import Context
from app.api.kpi import Kpi
from app.api.public import StatusAccess
from storage import jobs
from storage.errors import StorageError

log = logging.getLogger("hes.api")

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_PLAIN_0_0_4: {}, "application/openmetrics-text": {}},
            "description": "Prometheus text format, or OpenMetrics when the Accept header asks",
        }
    },
)
async def metrics(request: Request, ctx: Context, _access: StatusAccess, kpi: Kpi) -> Response:
    """Sessions in flight and by outcome and error class, round trips, bytes, per-link busy
    time, job queue depth, schedule lag, the collection day's success ratio, MQTT spool.

    The format follows the Accept header as Prometheus sends it (prometheus-client's
    ``choose_encoder``): OpenMetrics when asked for, else the text format 0.0.4."""
    telemetry = ctx.telemetry
    try:
        telemetry.set_queue_depth(await ctx.run(jobs.queue_depth, ctx.db))
        rate = (await kpi.today(ctx)).value["success_rate"]
        telemetry.success_ratio.set(math.nan if rate is None else rate)
    except StorageError as exc:
        log.warning("metrics: database figures not refreshed: %s", exc)
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(telemetry.registry), headers={"Content-Type": content_type})
