"""Every error the API returns is JSON: ``{"error": class, "message": ..., "field": ...}``.

FastAPI's own validation errors (422, a list of pydantic errors) are rewritten to this shape
with status 400, naming the first bad field by its dotted location (``query.limit``,
``body.meters.0``), so a client reads one format whatever went wrong.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from storage.errors import StorageError


class ApiError(Exception):
    """An error answer: HTTP status, error class, message and (optionally) the field."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        field: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.field = field
        #: More of the answer (e.g. every problem of a rejected inventory, by line).
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        out.update(self.extra)
        return out


def _location(loc: Any) -> str:
    return ".".join(str(part) for part in loc)


def validation_body(exc: RequestValidationError) -> dict[str, Any]:
    """The 400 answer to a request FastAPI could not validate, naming the first bad field."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = _location(first.get("loc", ()))
    return {
        "error": "bad_request",
        "message": f"{field}: {first.get('msg', 'invalid')}",
        "field": field,
        "details": [
            {"field": _location(e.get("loc", ())), "message": e.get("msg")} for e in errors
        ],
    }


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON shape above."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(exc), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = "not_found" if exc.status_code == 404 else "http_error"
        return JSONResponse(
            {"error": error, "message": str(exc.detail)}, status_code=exc.status_code
        )

    @app.exception_handler(StorageError)
    async def storage_error(_request: Request, exc: StorageError) -> JSONResponse:
        return JSONResponse(
            {"error": "storage_unavailable", "message": str(exc)},
            status_code=503,
            headers={"Retry-After": "5"},
        )
