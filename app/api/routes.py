"""Every router of the service's HTTP side, in the order they are mounted."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import audit, meters

ROUTERS: list[APIRouter] = [meters.router, audit.router]
