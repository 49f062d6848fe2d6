"""What each schedule of a plan enqueues: one job per schedule and tick.

Pure functions (no loop, no clock of their own), so the service's ticker stays a thin loop
and every decision here is tested with plain instants:

* each group's schedules come from its ``[group.schedule]``; a group without one gets the
  schedule ``hes collect`` follows, from its ``window`` (daily at the window's start,
  retried until its deadline), in the plan's zone;
* a ``registers`` schedule equal to the ``profile`` one adds no job: the profile's sessions
  read the registers;
* a tick of a daily (or rarer) profile/registers schedule collects the day before the
  tick, in the plan's zone; an intra-day tick (every 15 minutes, hourly) collects the
  tick's own day up to the tick (``until``): later intervals are not expected yet. Either
  way the group's back-days' gaps are re-read (补抄) by the same job;
* the job may start new sessions until the schedule's retry window ends (``until``, or the
  next tick); a tick caught up after the service was down gets a window of the same length
  from now instead of one already over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta

from collector.plan import Group, Plan
from collector.schedule import DEFAULT_SCHEDULES, Schedule, next_run, window_end
from storage.jobs import SCHEDULED, JobRequest

#: A schedule whose next run is at least this long after a run reads whole past days.
_DAILY = timedelta(hours=23)


@dataclass(frozen=True, slots=True)
class PlannedSchedule:
    """One task of one group, with the name its jobs carry (``group/task``)."""

    name: str
    group: Group
    task: str
    schedule: Schedule


def window_schedule(group: Group, timezone: str) -> Schedule:
    """The daily schedule of a group's collection window (what ``hes collect`` does)."""
    start = int(group.window.start.total_seconds() // 60)
    deadline = group.window.deadline
    until = None
    if deadline < timedelta(days=1):
        minutes = int(deadline.total_seconds() // 60)
        until = time(minutes // 60, minutes % 60)
    start %= 24 * 60  # a window opening a day or more after midnight: at its hour
    return Schedule(cron=f"{start % 60} {start // 60} * * *", until=until, timezone=timezone)


def planned_schedules(plan: Plan) -> list[PlannedSchedule]:
    """Every schedule the service runs, group by group."""
    out: list[PlannedSchedule] = []
    for group in plan.groups:
        schedules = dict(group.schedules)
        if not schedules:
            daily = window_schedule(group, plan.timezone)
            schedules = {task: replace(daily) for task in DEFAULT_SCHEDULES}
        if schedules.get("registers") == schedules.get("profile"):
            schedules.pop("registers", None)
        for task, schedule in schedules.items():
            out.append(PlannedSchedule(f"{group.name}/{task}", group, task, schedule))
    return out


def is_daily(schedule: Schedule, tick: datetime) -> bool:
    return next_run(schedule, tick) - tick >= _DAILY


def collection_day(schedule: Schedule, tick: datetime) -> tuple[date, datetime | None]:
    """The day a profile tick collects, and ``until`` (None: the whole day)."""
    local = tick.astimezone(schedule.tz)
    if is_daily(schedule, tick):
        return local.date() - timedelta(days=1), None
    return local.date(), tick


def job_for_tick(planned: PlannedSchedule, tick: datetime, now: datetime) -> JobRequest:
    """The job of one tick."""
    schedule = planned.schedule
    deadline = window_end(schedule, tick)
    if deadline <= now:  # caught up after downtime: the same window length from now
        deadline = now + (deadline - tick)
    params: dict[str, object] = {"group": planned.group.name}
    if planned.task in ("profile", "registers"):
        kind = "collect"
        day, until = collection_day(schedule, tick)
        params["day"] = day.isoformat()
        if until is not None:
            params["until"] = until.isoformat()
        if planned.task == "registers":
            params["refresh"] = True
    elif planned.task == "events":
        kind = "events"
    else:
        kind = "clock_sync"
    return JobRequest(
        kind,
        params,
        origin="schedule",
        requested_by="schedule",
        priority=SCHEDULED,
        schedule=planned.name,
        tick=tick,
        deadline=deadline,
    )
