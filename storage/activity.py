"""What happened lately, for the status page: the newest alarms, commands and command jobs.

Each read is bounded (``limit`` rows, newest first) however long the service has run, so a
page that polls every few seconds costs the same on the first day and after a year.
Alarms are the events of the pseudo log :data:`storage.operations.PUSH_LOG`; commands are
the audit of what was done to meters (:data:`storage.operations.command_audit`) and the jobs
of the command kinds (:data:`storage.jobs.COMMAND_KINDS`), queued and running ones included,
which the audit only gets once they ran.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from storage.handle import DatabaseHandle
from storage.jobs import COMMAND_KINDS, JobRecord, list_jobs
from storage.operations import command_audit
from storage.queries import alarms

#: The most rows any of these reads returns.
MAX_LIMIT = 200


def _check(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1 to {MAX_LIMIT}, not {limit}")
    return limit


def recent_alarms(db: DatabaseHandle, limit: int = 20) -> list[dict[str, Any]]:
    """The newest pushed alarms (by the alarm's time; :func:`storage.queries.alarms`, on
    the ``ix_meter_events_log_ts`` index), JSON-ready."""
    return [
        {"meter_id": a.meter_id, "ts": a.ts.isoformat(), "code": a.code, "name": a.name}
        for a in alarms(db, None, None, limit=_check(limit))
    ]


def recent_commands(db: DatabaseHandle, limit: int = 20) -> list[dict[str, Any]]:
    """The newest audited commands (disconnect, reconnect), JSON-ready."""
    t = command_audit
    stmt = (
        select(
            t.c.meter_id,
            t.c.command,
            t.c.requested_by,
            t.c.requested_at,
            t.c.finished_at,
            t.c.outcome,
            t.c.error_class,
            t.c.error,
            t.c.output_state,
        )
        .order_by(t.c.id.desc())
        .limit(_check(limit))
    )
    return [
        {
            "meter_id": meter,
            "command": command,
            "requested_by": by,
            "requested_at": requested.isoformat(),
            "finished_at": finished.isoformat(),
            "outcome": outcome,
            "error_class": cls,
            "error": error,
            "output_state": None if state is None else bool(state),
        }
        for meter, command, by, requested, finished, outcome, cls, error, state in (
            db.execute_read(stmt)
        )
    ]


def recent_command_jobs(db: DatabaseHandle, limit: int = 20) -> list[JobRecord]:
    """The newest jobs of the command kinds, whatever their state (newest first)."""
    _check(limit)
    found = [job for kind in COMMAND_KINDS for job in list_jobs(db, kind=kind, limit=limit)]
    return sorted(found, key=lambda job: -job.id)[:limit]
