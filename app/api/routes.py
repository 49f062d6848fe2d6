"""Every router of the service's HTTP side, in the order they are mounted."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import alarms, audit, jobs, meters, reads

ROUTERS: list[APIRouter] = [
    meters.router,
    reads.router,
    jobs.commands,
    jobs.router,
    alarms.router,
    audit.router,
]
