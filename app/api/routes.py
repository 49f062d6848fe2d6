"""Every router of the service's HTTP side, in the order they are mounted."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.reports import router as reports_router

ROUTERS: list[APIRouter] = []

# The KPI: reports (reader role).
ROUTERS += [reports_router]
