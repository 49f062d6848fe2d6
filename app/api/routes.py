"""Every router of the service's HTTP side, in the order they are mounted."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import alarms, audit, jobs, meters, nodes, reads
from app.api.metrics import router as metrics_router
from app.api.reports import router as reports_router
from app.api.status import router as status_router

ROUTERS: list[APIRouter] = [
    meters.router,
    reads.router,
    jobs.commands,
    jobs.router,
    alarms.router,
    audit.router,
    nodes.router,
]

# The KPI: reports (reader role), Prometheus metrics, the status page and its JSON.
ROUTERS += [reports_router, metrics_router, status_router]
