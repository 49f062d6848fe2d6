"""Bearer-token authentication and roles for the API (tokens live in storage.access).

``Authorization: Bearer hes_...``; a missing or unknown token is 401, a token without the
role an endpoint needs is 403, each with a JSON body that says which.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.context import ServiceContext
from app.api.errors import ApiError
from storage import access
from storage.access import Token

_bearer = HTTPBearer(auto_error=False, description="An API token made by `hes token create`")


def context(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


Context = Annotated[ServiceContext, Depends(context)]


def require(role: str) -> Callable[..., Awaitable[Token]]:
    """A dependency: the request's token, which must grant ``role``."""

    async def check(
        ctx: Context,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Token:
        if credentials is None:
            raise ApiError(401, "unauthenticated", "an Authorization: Bearer <token> header")
        token = await ctx.run(access.authenticate, ctx.db, credentials.credentials)
        if token is None:
            raise ApiError(401, "unauthenticated", "the token is unknown or revoked")
        if not token.may(role):
            raise forbidden(token, role)
        return token

    return check


def forbidden(token: Token, role: str) -> ApiError:
    """The 403 answer to ``token`` asking for what needs ``role``."""
    return ApiError(
        403, "forbidden", f"token {token.name!r} has role {token.role!r}; this needs {role!r}"
    )


Reader = Annotated[Token, Depends(require("reader"))]
Operator = Annotated[Token, Depends(require("operator"))]
