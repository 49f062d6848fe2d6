"""The job table of the service: every scheduled run and every on-demand request, durably.

Why a table and not an in-memory queue: ``hes serve`` must survive a SIGKILL with nothing
lost or duplicated. A job is written before anything acts on it; a runner claims it
(``queued`` → ``running``) in one conditional UPDATE, so two claims never win the same job;
a restart puts every ``running`` job back to ``queued`` (:func:`recover`), and the read path
below it is idempotent, so running a job twice stores nothing twice.

Two keys make submission idempotent:

* ``idempotency_key``: chosen by the caller (a billing system's request id). Submitting the
  same key again returns the first job instead of making a second, so a retried disconnect
  never toggles a relay twice; the same key with other parameters is refused
  (:class:`IdempotencyConflict`).
* ``(schedule, tick, link)``: a scheduled run is one job per schedule and tick (``link``
  is "" in the embedded service; a cluster stores a tick as one job per link,
  :mod:`storage.cluster`), so a tick caught up after downtime, or planned twice, is
  enqueued once; :func:`last_tick` tells the scheduler where it stopped.

On-demand jobs get :data:`ON_DEMAND` priority (lower runs first), scheduled ones
:data:`SCHEDULED`.

What each kind takes (``params``; ``meters`` None means every enabled meter the plan reads;
:meth:`JobRequest.check` refuses anything else, naming the field):

* ``collect`` ``{"day": "YYYY-MM-DD", "group": name?, "until": ISO instant?,
  "refresh": bool?}``: the day's profile and registers, and the gaps of the group's
  back-days (the scheduled daily run; on demand, "re-read a day"); ``until``: an intra-day
  run, intervals from then on are not expected yet; ``refresh``: contact complete meters
  too (their registers);
* ``read`` (meters required) ``{"registers": bool = true, "profile": {"from": ISO instant,
  "to": ISO instant}?}``: read now (clock, registers, the range's missing intervals) and
  store;
* ``events`` ``{"group": name?}``: the event logs since the last stored entry (outages);
* ``clock_sync`` ``{"group": name?}``: check each clock, correct it past the threshold;
* ``disconnect`` / ``reconnect`` (meters required) ``{}``: switch the relay, read it back;
* ``firmware`` (meters required) ``{"image": path, "identifier": str, "sessions"?: 1..10}``:
  upload the image file (a path on the service's host) through the image transfer object,
  activate it, confirm the new active firmware identifier.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    or_,
    select,
    update,
)

from contracts.meters import parse_host_port
from protocols import push_setup as ps
from storage.handle import DatabaseHandle, insert_ignore
from storage.schema import UtcDateTime

#: What a job can be asked to do.
KINDS = (
    "collect",
    "read",
    "events",
    "clock_sync",
    "disconnect",
    "reconnect",
    "firmware",
    "push_setup",
)
#: Kinds that change something on a meter: they need the operator role and an audit entry.
COMMAND_KINDS = ("disconnect", "reconnect", "clock_sync", "firmware", "push_setup")
STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
ORIGINS = ("schedule", "api", "cli")
ON_DEMAND = 0
SCHEDULED = 10

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("origin", String(16), nullable=False),
    Column("requested_by", String(128), nullable=False),
    # What to do (day, channels, range, ...) and to which meters (None: the plan's fleet).
    Column("params", JSON, nullable=False),
    Column("meters", JSON),
    Column("idempotency_key", String(128)),
    Column("schedule", String(128)),
    Column("tick", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    # Not started before this instant; no new session after ``deadline`` (the retry window).
    Column("not_before", UtcDateTime),
    Column("deadline", UtcDateTime),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("attempts", Integer, nullable=False, default=0),
    Column("progress_done", Integer, nullable=False, default=0),
    Column("progress_total", Integer, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("result", JSON),
    Column("error", Text),
    # Cluster mode (storage.cluster): the link (a bus, or a batch of GPRS meters) a
    # scheduled job of one tick reads ("" for the whole tick in one job, the embedded
    # mode), and the lease of the node running it.
    Column("link", String(128), nullable=False, default="", server_default=""),
    Column("owner", String(128)),
    Column("lease_until", UtcDateTime),
    CheckConstraint(
        "state IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="ck_jobs_state"
    ),
    UniqueConstraint("idempotency_key", name="uq_jobs_idempotency_key"),
    UniqueConstraint("schedule", "tick", "link", name="uq_jobs_schedule_tick_link"),
)
Index("ix_jobs_queue", jobs.c.state, jobs.c.priority, jobs.c.id)


class JobError(ValueError):
    """A job request that cannot be accepted; the message names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class IdempotencyConflict(JobError):
    """An idempotency key already used by a request with other parameters."""


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a caller asks for; see :data:`KINDS`."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    meters: Sequence[str] | None = None
    origin: str = "api"
    requested_by: str = "unknown"
    priority: int = ON_DEMAND
    idempotency_key: str | None = None
    schedule: str | None = None
    tick: datetime | None = None
    not_before: datetime | None = None
    deadline: datetime | None = None
    #: The link of a tick's job in cluster mode (one job per link and tick).
    link: str = ""

    def check(self) -> None:
        if self.kind not in KINDS:
            raise JobError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}", "kind")
        if self.origin not in ORIGINS:
            raise JobError(f"origin must be one of {', '.join(ORIGINS)}", "origin")
        if self.meters is not None and (
            not self.meters or not all(isinstance(m, str) and m for m in self.meters)
        ):
            raise JobError("meters must be a non-empty list of meter ids", "meters")
        if (self.schedule is None) != (self.tick is None):
            raise JobError("a scheduled job names both its schedule and its tick", "schedule")
        if self.idempotency_key is not None and not 0 < len(self.idempotency_key) <= 128:
            raise JobError("idempotency_key must be 1 to 128 characters", "idempotency_key")
        try:
            json.dumps(dict(self.params))
        except (TypeError, ValueError) as exc:
            raise JobError(f"params must be JSON: {exc}", "params") from exc
        check_params(self.kind, self.params, self.meters)


#: The parameters each kind accepts, and their JSON types.
PARAMS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "collect": {"day": str, "group": str, "until": str, "refresh": bool},
    "read": {"registers": bool, "profile": dict},
    "events": {"group": str},
    "clock_sync": {"group": str},
    "disconnect": {},
    "reconnect": {},
    # The image file on the service's host, the identifier it becomes, sessions per meter.
    "firmware": {"image": str, "identifier": str, "sessions": int},
    # The push setup (default the alarm push 0.0.25.9.0.255), what to SET (as ``hes push
    # set`` takes it: HOST:PORT, START/END windows, CLASS/OBIS/ATTRIBUTE objects; none: only
    # read it back and store it), and whether to invoke push.
    "push_setup": {
        "setup": str,
        "destination": str,
        "windows": list,
        "objects": list,
        "trigger": bool,
    },
}
#: Kinds that act on named meters only (never on the whole fleet by accident).
NEEDS_METERS = ("read", "disconnect", "reconnect", "firmware", "push_setup")


def _instant(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise JobError(f"{field} must be an ISO 8601 instant", field)
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise JobError(f"{field} {value!r} is not an ISO 8601 instant", field) from None
    if instant.tzinfo is None:
        raise JobError(f"{field} {value!r} needs a UTC offset (e.g. Z or +08:00)", field)
    return instant


def _check_push_setup(params: Mapping[str, Any]) -> None:
    setup = params.get("setup", ".".join(str(b) for b in ps.ALARM_PUSH_SETUP))
    parts = setup.split(".")
    if len(parts) != 6 or parts[2:4] != ["25", "9"] or not all(p.isdigit() for p in parts):
        raise JobError(f"params.setup {setup!r} is not a push setup 0.b.25.9.0.255", "params.setup")
    if "destination" in params:
        try:
            parse_host_port(params["destination"], default_port=4060)
        except ValueError as exc:
            raise JobError(f"params.destination: {exc}", "params.destination") from None
    for key, parse in (("windows", ps.parse_window), ("objects", ps.parse_object)):
        for item in params.get(key, []):
            try:
                parse(item if isinstance(item, str) else repr(item))
            except ValueError as exc:
                raise JobError(f"params.{key}: {exc}", f"params.{key}") from None


def check_params(kind: str, params: Mapping[str, Any], meters: Sequence[str] | None) -> None:
    """Refuse parameters a kind does not take (JobError names ``params.<key>``)."""
    allowed = PARAMS[kind]
    for key, value in params.items():
        if key not in allowed:
            known = ", ".join(allowed) or "none"
            raise JobError(
                f"{kind} takes no parameter {key!r} (it takes: {known})", f"params.{key}"
            )
        if not isinstance(value, allowed[key]):
            raise JobError(f"params.{key} has the wrong type", f"params.{key}")
    if kind in NEEDS_METERS and meters is None:
        raise JobError(f"{kind} needs the meters it acts on", "meters")
    if kind == "collect":
        if "day" not in params:
            raise JobError("collect needs params.day (YYYY-MM-DD)", "params.day")
        try:
            date.fromisoformat(params["day"])
        except ValueError:
            raise JobError(
                f"params.day {params['day']!r} is not a date (YYYY-MM-DD)", "params.day"
            ) from None
    if kind == "firmware":
        for key in ("image", "identifier"):
            if not str(params.get(key, "")).strip():
                raise JobError(f"firmware needs params.{key}", f"params.{key}")
        if not str(params["identifier"]).isascii():
            raise JobError("params.identifier must be ASCII", "params.identifier")
        sessions = params.get("sessions", 3)
        if isinstance(sessions, bool) or not 1 <= sessions <= 10:
            raise JobError("params.sessions must be 1 to 10", "params.sessions")
    if kind == "push_setup":
        _check_push_setup(params)
    if kind == "collect" and "until" in params:
        _instant(params["until"], "params.until")
    if kind == "read" and "profile" in params:
        window = params["profile"]
        unknown = set(window) - {"from", "to"}
        if unknown:
            name = sorted(unknown)[0]
            raise JobError(
                f"params.profile takes from and to, not {name!r}", f"params.profile.{name}"
            )
        start = _instant(window.get("from"), "params.profile.from")
        end = _instant(window.get("to"), "params.profile.to")
        if end <= start:
            raise JobError(
                "params.profile.to must be after params.profile.from", "params.profile.to"
            )


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as stored."""

    id: int
    kind: str
    state: str
    priority: int
    origin: str
    requested_by: str
    params: dict[str, Any]
    meters: list[str] | None
    idempotency_key: str | None
    schedule: str | None
    tick: datetime | None
    created_at: datetime
    not_before: datetime | None
    deadline: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    progress_done: int
    progress_total: int
    cancel_requested: bool
    result: Any
    error: str | None
    link: str
    owner: str | None
    lease_until: datetime | None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: instants as ISO 8601 UTC."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


COLUMNS = [jobs.c[name] for name in JobRecord.__slots__]


def to_record(row: Any) -> JobRecord:
    values = dict(zip(JobRecord.__slots__, row, strict=True))
    values["cancel_requested"] = bool(values["cancel_requested"])
    return JobRecord(**values)


def _now() -> datetime:
    return datetime.now(UTC)


def _same_request(job: JobRecord, req: JobRequest) -> bool:
    return (
        job.kind == req.kind
        and job.params == json.loads(json.dumps(dict(req.params)))
        and job.meters == (list(req.meters) if req.meters is not None else None)
    )


def row_values(req: JobRequest, now: datetime) -> dict[str, Any]:
    """The row a (checked) request is stored as: queued, not yet attempted."""
    return {
        "kind": req.kind,
        "state": "queued",
        "priority": req.priority,
        "origin": req.origin,
        "requested_by": req.requested_by[:128],
        "params": dict(req.params),
        "meters": list(req.meters) if req.meters is not None else None,
        "idempotency_key": req.idempotency_key,
        "schedule": req.schedule,
        "tick": req.tick,
        "created_at": now,
        "not_before": req.not_before,
        "deadline": req.deadline,
        "attempts": 0,
        "progress_done": 0,
        "progress_total": len(req.meters) if req.meters is not None else 0,
        "cancel_requested": False,
        "link": req.link,
    }


def submit(
    db: DatabaseHandle, req: JobRequest, now: datetime | None = None
) -> tuple[JobRecord, bool]:
    """Store ``req`` as a queued job; returns ``(job, created)``.

    With an idempotency key or a schedule tick already stored, returns that job and
    ``created=False``; a reused idempotency key with other parameters raises
    :class:`IdempotencyConflict`.
    """
    req.check()
    values = row_values(req, now or _now())
    with db.transaction() as conn:
        job_id = conn.execute(
            insert_ignore(db.dialect, jobs).values(**values).returning(jobs.c.id)
        ).scalar()
        created = job_id is not None
        if created:
            where = jobs.c.id == job_id
        elif req.idempotency_key is not None:
            where = jobs.c.idempotency_key == req.idempotency_key
        else:
            where = and_(
                jobs.c.schedule == req.schedule, jobs.c.tick == req.tick, jobs.c.link == req.link
            )
        row = conn.execute(select(*COLUMNS).where(where)).one()
    job = to_record(row)
    if not created and req.idempotency_key is not None and not _same_request(job, req):
        raise IdempotencyConflict(
            f"idempotency_key {req.idempotency_key!r} was used by job {job.id} "
            f"({job.kind} of other meters or parameters)",
            "idempotency_key",
        )
    return job, created


def get(db: DatabaseHandle, job_id: int) -> JobRecord | None:
    rows = db.execute_read(select(*COLUMNS).where(jobs.c.id == job_id))
    return to_record(rows[0]) if rows else None


def list_jobs(
    db: DatabaseHandle,
    *,
    state: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[JobRecord]:
    """Newest first."""
    stmt = select(*COLUMNS).order_by(jobs.c.id.desc()).limit(limit).offset(offset)
    if state is not None:
        stmt = stmt.where(jobs.c.state == state)
    if kind is not None:
        stmt = stmt.where(jobs.c.kind == kind)
    return [to_record(r) for r in db.execute_read(stmt)]


def queue_depth(db: DatabaseHandle) -> dict[str, int]:
    """Queued jobs per kind."""
    stmt = select(jobs.c.kind, func.count()).where(jobs.c.state == "queued").group_by(jobs.c.kind)
    return {kind: int(n) for kind, n in db.execute_read(stmt)}


def claim_next(
    db: DatabaseHandle,
    now: datetime | None = None,
    *,
    kinds: Sequence[str] | None = None,
    max_priority: int | None = None,
) -> JobRecord | None:
    """Take the most urgent queued job that may start (``running``), or None.

    Lowest priority number first, then oldest; ``max_priority`` leaves less urgent jobs
    queued (a runner keeps a slot for on-demand work). The UPDATE is conditional on the
    job still being queued, so a concurrent claim of the same job loses and tries the next.
    """
    at = now or _now()
    ready = and_(
        jobs.c.state == "queued", or_(jobs.c.not_before.is_(None), jobs.c.not_before <= at)
    )
    if kinds is not None:
        ready = and_(ready, jobs.c.kind.in_(list(kinds)))
    if max_priority is not None:
        ready = and_(ready, jobs.c.priority <= max_priority)
    for _ in range(10):
        with db.transaction() as conn:
            job_id = conn.execute(
                select(jobs.c.id).where(ready).order_by(jobs.c.priority, jobs.c.id).limit(1)
            ).scalar()
            if job_id is None:
                return None
            won = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == "queued")
                .values(state="running", started_at=at, attempts=jobs.c.attempts + 1)
            ).rowcount
            if won:
                return to_record(conn.execute(select(*COLUMNS).where(jobs.c.id == job_id)).one())
    return None


def next_start(db: DatabaseHandle) -> datetime | None:
    """The earliest ``not_before`` of the queued jobs that wait for one (None: none wait)."""
    stmt = select(func.min(jobs.c.not_before)).where(
        jobs.c.state == "queued", jobs.c.not_before.is_not(None)
    )
    rows = db.execute_read(stmt)
    value = rows[0][0] if rows else None
    if isinstance(value, str):  # SQLite aggregates lose the column type
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value


def progress(db: DatabaseHandle, job_id: int, done: int, total: int) -> None:
    with db.transaction() as conn:
        conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(progress_done=done, progress_total=total)
        )


def finish(
    db: DatabaseHandle,
    job_id: int,
    state: str,
    *,
    result: Any = None,
    error: str | None = None,
    now: datetime | None = None,
) -> JobRecord:
    """A running job ends (``done``, ``failed`` or ``cancelled``)."""
    if state not in FINAL_STATES:
        raise ValueError(f"a job finishes as one of {FINAL_STATES}, not {state!r}")
    with db.transaction() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(
                state=state,
                result=result,
                error=error[:4000] if error else None,
                finished_at=now or _now(),
            )
        )
        return to_record(conn.execute(select(*COLUMNS).where(jobs.c.id == job_id)).one())


def cancel(db: DatabaseHandle, job_id: int, now: datetime | None = None) -> JobRecord | None:
    """A queued job is cancelled at once; a running one is asked to stop (its runner ends it
    as ``cancelled``); a finished one is left as it is. None: no such job."""
    with db.transaction() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == "queued")
            .values(state="cancelled", finished_at=now or _now(), cancel_requested=True)
        )
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == "running")
            .values(cancel_requested=True)
        )
        row = conn.execute(select(*COLUMNS).where(jobs.c.id == job_id)).one_or_none()
    return to_record(row) if row is not None else None


def cancel_requested(db: DatabaseHandle, job_id: int) -> bool:
    rows = db.execute_read(select(jobs.c.cancel_requested).where(jobs.c.id == job_id))
    return bool(rows and rows[0][0])


def requeue(db: DatabaseHandle, job_id: int) -> None:
    """A running job that the service stopped before it ended goes back to the queue (it
    resumes on the next start; what it stored stays, the read path skips it)."""
    with db.transaction() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == "running")
            .values(state="queued")
        )


def recover(db: DatabaseHandle) -> list[int]:
    """After a crash: every ``running`` job goes back to ``queued``; returns their ids.

    Called once when the service starts, before any runner claims a job.
    """
    with db.transaction() as conn:
        ids = [int(r[0]) for r in conn.execute(select(jobs.c.id).where(jobs.c.state == "running"))]
        if ids:
            conn.execute(update(jobs).where(jobs.c.id.in_(ids)).values(state="queued"))
    return ids


def last_tick(db: DatabaseHandle, schedule: str) -> datetime | None:
    """The latest tick enqueued for ``schedule`` (None: never)."""
    rows = db.execute_read(select(func.max(jobs.c.tick)).where(jobs.c.schedule == schedule))
    value = rows[0][0] if rows else None
    if isinstance(value, str):  # SQLite aggregates lose the column type
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value
