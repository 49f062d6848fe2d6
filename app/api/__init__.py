"""The service's HTTP side: a FastAPI app over one :class:`~app.api.context.ServiceContext`.

Why FastAPI: an ASGI framework (Starlette underneath, served by uvicorn in the service's own
event loop), whose OpenAPI schema comes from the same type hints that validate each request,
so the schema cannot drift from what the handlers accept; MIT-licensed like pydantic, and
Starlette and uvicorn are BSD-3. Litestar was the other candidate (also MIT, also OpenAPI from
types); FastAPI's larger user base and documentation decided it.

Routers are added by the modules that own them (:data:`ROUTERS`).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from app.api import errors
from app.api.context import ServiceContext

__all__ = ["ServiceContext", "create_app"]


def create_app(ctx: ServiceContext, routers: list[APIRouter] | None = None) -> FastAPI:
    """The ASGI app of one service."""
    app = FastAPI(
        title="hes head-end API",
        version="1",
        description="Meters, reads, jobs and commands, reports and alarms of a hes head-end.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.ctx = ctx
    errors.install(app)
    for router in routers or []:
        app.include_router(router)
    return app
