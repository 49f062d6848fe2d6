"""Query parameters the routers share: paging, time ranges, and how instants are written.

Instants come in as ISO 8601 with an offset (``2026-03-10T00:00:00Z``; a naive one is a 400
naming the parameter, as a meter-reading API that guessed a zone would be wrong twice a
year) and go out as ISO 8601 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Query
from pydantic import AwareDatetime

from app.api.errors import ApiError

#: The longest range one interval or register request may span.
MAX_RANGE = timedelta(days=31)

Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page (1 to 1000)")]
Offset = Annotated[int, Query(ge=0, description="Items to skip")]
From = Annotated[
    AwareDatetime | None,
    Query(alias="from", description="Start (inclusive), ISO 8601 with an offset"),
]
To = Annotated[
    AwareDatetime | None,
    Query(alias="to", description="End (exclusive), ISO 8601 with an offset"),
]


def iso(instant: datetime) -> str:
    """An instant as ISO 8601 UTC."""
    return instant.astimezone(UTC).isoformat()


def ordered(start: datetime | None, end: datetime | None) -> None:
    """Refuse ``to`` not after ``from`` (when both are given)."""
    if start is not None and end is not None and end <= start:
        raise ApiError(400, "bad_request", "to must be after from", "query.to")


def bounded(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """A required range of at most :data:`MAX_RANGE`, so no request reads without bound."""
    if start is None:
        raise ApiError(400, "bad_request", "from is required (ISO 8601)", "query.from")
    if end is None:
        raise ApiError(400, "bad_request", "to is required (ISO 8601)", "query.to")
    ordered(start, end)
    if end - start > MAX_RANGE:
        raise ApiError(
            400,
            "bad_request",
            f"to is {end - start} after from; one request spans at most {MAX_RANGE.days} days",
            "query.to",
        )
    return start, end
