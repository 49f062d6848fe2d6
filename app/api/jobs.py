"""``/api/jobs``: submit, get, list and cancel jobs; and the one-meter commands
``POST /api/meters/{id}/disconnect | reconnect | clock-sync | read``, which submit a job.

A job is only queued here (``storage.jobs`` through the service's ``JobQueue``, which wakes
the runner); the service loop runs it. Submitting needs the operator role, reading jobs the
reader role. An ``Idempotency-Key`` header makes a submission safe to retry: the same key
with the same request answers the first job again (200 instead of 201), so a billing system
that retries a disconnect never toggles the relay twice; the same key with another request
is a 409.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Path, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.api.audit import Change, Changing
from app.api.auth import Context, Reader
from app.api.context import ServiceContext
from app.api.errors import ApiError
from app.api.meters import MeterId, unknown_meter
from app.api.params import Limit, Offset, iso
from storage import jobs as job_store
from storage import queries
from storage.jobs import ON_DEMAND, IdempotencyConflict, JobError, JobRecord, JobRequest

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
commands = APIRouter(prefix="/api/meters", tags=["commands"])

#: ``storage.jobs.KINDS`` and ``STATES`` (tests/test_api_jobs.py keeps them equal).
Kind = Literal[
    "collect",
    "read",
    "events",
    "clock_sync",
    "disconnect",
    "reconnect",
    "firmware",
    "push_setup",
]
State = Literal["queued", "running", "done", "failed", "cancelled"]
#: Meter ids an audit entry keeps of one submission (the count is kept too).
AUDITED_METERS = 50

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        description="The caller's request id: a retry with the same key returns the same job",
    ),
]
JobId = Annotated[int, Path(ge=1, description="The job's id")]


class JobSubmission(BaseModel):
    """What ``POST /api/jobs`` takes; ``params`` per kind as ``storage.jobs`` documents."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    meters: list[str] | None = Field(
        default=None, description="Meter ids (omitted: every enabled meter the plan reads)"
    )
    params: dict[str, Any] = Field(default_factory=dict)


class ProfileWindow(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: AwareDatetime = Field(alias="from")
    end: AwareDatetime = Field(alias="to")


class ReadNow(BaseModel):
    """What ``POST /api/meters/{id}/read`` reads (all optional: registers and clock)."""

    model_config = ConfigDict(extra="forbid")

    registers: bool | None = None
    clock: bool | None = None
    profile: ProfileWindow | None = None

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.registers is not None:
            out["registers"] = self.registers
        if self.clock is not None:
            out["clock"] = self.clock
        if self.profile is not None:
            out["profile"] = {"from": iso(self.profile.start), "to": iso(self.profile.end)}
        return out


def _field(field: str | None, params_at: str, meters_at: str) -> str:
    """Where a ``JobError``'s field is in this request."""
    if field is None:
        return "body"
    if field == "idempotency_key":
        return "header.Idempotency-Key"
    if field == "meters":
        return meters_at
    if field == "params" or field.startswith("params."):
        return params_at + field[len("params") :]
    return f"body.{field}"


async def _check_meters(ctx: ServiceContext, meters: Sequence[str]) -> None:
    known = await ctx.run(queries.known_meters, ctx.db, meters)
    unknown = [(i, m) for i, m in enumerate(meters) if m not in known]
    if unknown:
        named = ", ".join(repr(m) for _, m in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise ApiError(
            400,
            "unknown_meter",
            f"not in the inventory: {named}{more}",
            f"body.meters.{unknown[0][0]}",
        )


async def _submit(
    ctx: ServiceContext,
    change: Change,
    response: Response,
    *,
    kind: str,
    meters: Sequence[str] | None,
    params: Mapping[str, Any],
    key: str | None,
    params_at: str = "body.params",
    meters_at: str = "body.meters",
    meters_checked: bool = False,
) -> dict[str, Any]:
    """Queue one job for the token behind ``change``: 201 new, 200 the key's job again."""
    change.detail = {
        "kind": kind,
        "params": dict(params),
        "meters": list(meters[:AUDITED_METERS]) if meters is not None else None,
        "meter_count": len(meters) if meters is not None else None,
        "idempotency_key": key,
    }
    req = JobRequest(
        kind=kind,
        params=params,
        meters=meters,
        origin="api",
        requested_by=change.token.name,
        priority=ON_DEMAND,
        idempotency_key=key,
    )
    try:
        req.check()
        if meters is not None and not meters_checked:
            await _check_meters(ctx, meters)
        job, created = await ctx.queue.submit(req)
    except IdempotencyConflict as exc:
        raise ApiError(409, "idempotency_conflict", str(exc), "header.Idempotency-Key") from exc
    except JobError as exc:
        raise ApiError(400, "bad_job", str(exc), _field(exc.field, params_at, meters_at)) from exc
    change.status = response.status_code = 201 if created else 200
    change.detail["job"] = job.id
    change.detail["created"] = created
    if change.target is None:  # POST /api/jobs: the job is what changed (a command: its meter)
        change.target = str(job.id)
    response.headers["Location"] = f"/api/jobs/{job.id}"
    return job.as_dict()


@router.post("", name="jobs.submit", status_code=201)
async def submit_job(
    ctx: Context,
    change: Changing,
    response: Response,
    job: JobSubmission,
    key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Queue a job (operator role); 201 with the job, or 200 with the one its key names."""
    return await _submit(
        ctx, change, response, kind=job.kind, meters=job.meters, params=job.params, key=key
    )


@router.get("", name="jobs.list")
async def list_jobs(
    ctx: Context,
    _token: Reader,
    state: State | None = None,
    kind: Kind | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Jobs newest first, by state and kind."""
    total = await ctx.run(queries.count_jobs, ctx.db, state=state, kind=kind)
    page = await ctx.run(
        lambda: job_store.list_jobs(ctx.db, state=state, kind=kind, limit=limit, offset=offset)
    )
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "items": [j.as_dict() for j in page],
    }


def _unknown_job(job_id: int) -> ApiError:
    return ApiError(404, "unknown_job", f"no job {job_id}", "path.job_id")


@router.get("/{job_id}", name="jobs.get")
async def get_job(ctx: Context, _token: Reader, job_id: JobId) -> dict[str, Any]:
    """One job: state, meters, progress, result."""
    job = await ctx.queue.get(job_id)
    if job is None:
        raise _unknown_job(job_id)
    return job.as_dict()


@router.post("/{job_id}/cancel", name="jobs.cancel")
async def cancel_job(ctx: Context, change: Changing, job_id: JobId) -> dict[str, Any]:
    """Cancel a queued job at once, or ask a running one to stop (operator role)."""
    job: JobRecord | None = await ctx.queue.get(job_id)
    if job is None:
        raise _unknown_job(job_id)
    if job.final and job.state != "cancelled":
        raise ApiError(409, "job_finished", f"job {job_id} is {job.state} already", "path.job_id")
    cancelled = await ctx.queue.cancel(job_id)
    if cancelled is None:
        raise _unknown_job(job_id)
    change.detail = {"state": cancelled.state, "cancel_requested": cancelled.cancel_requested}
    return cancelled.as_dict()


async def _command(
    ctx: ServiceContext,
    change: Change,
    response: Response,
    meter_id: str,
    kind: str,
    key: str | None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    if not await ctx.run(queries.known_meters, ctx.db, [meter_id]):
        raise unknown_meter(meter_id)
    return await _submit(
        ctx,
        change,
        response,
        kind=kind,
        meters=[meter_id],
        params=params or {},
        key=key,
        params_at="body",
        meters_at="path.meter_id",
        meters_checked=True,
    )


@commands.post("/{meter_id}/disconnect", name="meters.disconnect", status_code=201)
async def disconnect(
    ctx: Context,
    change: Changing,
    response: Response,
    meter_id: MeterId,
    key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Queue opening the meter's relay (operator role); the job reads the state back."""
    return await _command(ctx, change, response, meter_id, "disconnect", key)


@commands.post("/{meter_id}/reconnect", name="meters.reconnect", status_code=201)
async def reconnect(
    ctx: Context,
    change: Changing,
    response: Response,
    meter_id: MeterId,
    key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Queue closing the meter's relay (operator role)."""
    return await _command(ctx, change, response, meter_id, "reconnect", key)


@commands.post("/{meter_id}/clock-sync", name="meters.clock_sync", status_code=201)
async def clock_sync(
    ctx: Context,
    change: Changing,
    response: Response,
    meter_id: MeterId,
    key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Queue a clock check, corrected past the threshold (operator role)."""
    return await _command(ctx, change, response, meter_id, "clock_sync", key)


@commands.post("/{meter_id}/read", name="meters.read", status_code=201)
async def read_now(
    ctx: Context,
    change: Changing,
    response: Response,
    meter_id: MeterId,
    what: Annotated[ReadNow | None, Body()] = None,
    key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Queue reading the meter now: registers and clock, and a profile range if given."""
    params = what.params() if what is not None else {}
    return await _command(ctx, change, response, meter_id, "read", key, params)
