"""The audit trail of the API: every request that changes something, and ``GET /api/audit``.

One dependency, :data:`Changing`, does it for every changing endpoint, so none can forget:
it authenticates the token, refuses one without the operator role (403, audited), hands the
handler a :class:`Change` to fill in (target, detail, status), and writes one
``storage.access`` entry when the request ends, however it ends: done, refused by the
handler (400/404/409), invalid (FastAPI's 400) or failed. A request without a live token
(401) is not audited: there is no one to name.

Not audited either: a body that is not JSON at all, which FastAPI refuses before it looks
at any dependency (so before the token is known).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError

from app.api.auth import Context, Operator, Reader, forbidden
from app.api.context import ServiceContext
from app.api.errors import ApiError, validation_body
from app.api.params import Limit, Offset
from storage import access, queries
from storage.access import Token
from storage.errors import StorageError

CHANGE_ROLE = "operator"


@dataclass
class Change:
    """One changing request as it will be audited; the handler fills in what it learns."""

    token: Token
    action: str
    target: str | None
    status: int = 200
    detail: Any = None


async def _record(ctx: ServiceContext, change: Change, status: int, error: str | None) -> None:
    await ctx.run(
        access.audit,
        ctx.db,
        change.token.name,
        change.action,
        target=change.target,
        status=status,
        detail=change.detail,
        error=error,
    )


async def _change(request: Request, ctx: Context, token: Reader) -> AsyncIterator[Change]:
    route = request.scope.get("route")
    action = str(getattr(route, "name", None) or request.url.path)
    target = ",".join(str(v) for v in request.path_params.values()) or None
    entry = Change(token, action, target)
    if not token.may(CHANGE_ROLE):
        refused = forbidden(token, CHANGE_ROLE)
        await _record(ctx, entry, refused.status, refused.message)
        raise refused
    try:
        yield entry
    except ApiError as exc:
        await _record(ctx, entry, exc.status, exc.message)
        raise
    except RequestValidationError as exc:
        await _record(ctx, entry, 400, validation_body(exc)["message"])
        raise
    except StorageError as exc:
        await _record(ctx, entry, 503, str(exc))
        raise
    except Exception as exc:
        await _record(ctx, entry, 500, f"{type(exc).__name__}: {exc}")
        raise
    await _record(ctx, entry, entry.status, None)


#: ``change: Changing`` in a changing endpoint: the operator role, and one audit entry
#: named by the route's ``name`` (``meters.enable``), ended before the answer is sent.
Changing = Annotated[Change, Depends(_change, scope="function")]


router = APIRouter(prefix="/api/audit", tags=["audit"])


@router.get("")
async def audit_trail(
    ctx: Context,
    _token: Operator,
    actor: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Who changed what through the API, newest first (operator role)."""
    total = await ctx.run(queries.count_audit, ctx.db, actor=actor)
    entries = await ctx.run(access.audit_entries, ctx.db, actor=actor, limit=limit, offset=offset)
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "items": [e.as_dict() for e in entries],
    }
