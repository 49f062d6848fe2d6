"""Who may read the status page, ``/api/status`` and ``/metrics``.

A head-end usually sits on an internal network where the monitoring (Prometheus, a wall
screen) has no token: with ``ServiceContext.public_status`` (the default) these read-only
views need none. Otherwise they need a reader token like the rest of the API. Nothing that
changes anything, and no reading of a meter, is ever public.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.auth import Context, require
from storage.access import Token

_bearer = HTTPBearer(
    auto_error=False, description="A reader token, unless the service's status is public"
)
_reader = require("reader")


async def status_access(
    ctx: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Token | None:
    """None when the status is public, else the request's reader token (401/403 without)."""
    if ctx.public_status:
        return None
    return await _reader(ctx, credentials)


StatusAccess = Annotated[Token | None, Depends(status_access)]
