"""When each task of a plan group runs: cron expressions or fixed periods, in the plan's zone.

Pure functions over instants that the caller passes in: no event loop, no clock. A
:class:`Schedule` is one task kind of one group (``profile``, ``registers``, ``events``,
``clock``), either ``cron = "5 0 * * *"`` or ``every = "15m"``, evaluated in an IANA time
zone, with an optional ``until = "06:00"`` end of its retry window.

Cron expressions are parsed and stepped by `cronsim <https://github.com/cuu508/cronsim>`_
rather than by code of our own. Why cronsim: BSD-3-Clause (open, Apache-2.0 compatible, and
``make lint``'s licence check accepts it), no dependencies of its own, typed (``py.typed``),
and maintained by healthchecks.io, which evaluates its users' cron checks with it, so it is
kept in step with Debian cron's semantics (day-of-month/day-of-week OR rule, ``L``, ``#``)
and has explicit DST handling. croniter (MIT) was the other candidate: its author declared
it abandoned early in 2025 and it was since taken over by pallets-eco, so it is maintained
again, but cronsim's record is the steadier one and its surface (one iterator) the smaller.
Only five-field expressions
are accepted (cronsim also takes a seconds field; meters are not read by the second).

DST, for cron schedules (cronsim's rules, the same as Debian cron's): a wall-clock time that
a spring-forward night skips runs once, at the first instant after the gap (``30 2 * * *``
runs at 03:00 CEST on the last Sunday of March); a wall-clock time that a fall-back night
repeats runs once, at its first occurrence. So a daily cron schedule runs once a day, every
day.

``every`` schedules run at the wall-clock times of the zone that are whole multiples of the
period after local midnight (``every = "6h"``: 00:00, 06:00, 12:00, 18:00 local time), so
the period must divide a day. Across DST they follow elapsed time instead of the wall
clock: a repeated wall-clock time runs at both of its instants (the 15-minute profile of a
fall-back night is read five times an hour for two hours, as the meter records it), and
a skipped one runs at the instant it would have had before the change (02:00 of a
spring-forward night in Berlin runs at 01:00 UTC, which is 03:00 CEST). Two consecutive
runs are therefore at most one period apart, plus the DST shift when the period is longer
than the shift.

``hes serve`` runs these (:mod:`collector.schedule_jobs`). Without a ``[group.schedule]``
it runs the group's ``window`` daily (00:05 to 06:00 after midnight by default), which is
what ``hes collect`` does once per run and :data:`DEFAULT_SCHEDULES` states as schedules.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

#: The task kinds a group can schedule.
TASKS = ("profile", "registers", "events", "clock")
#: A cron expression has to match within this many years (a cron that names 29 February
#: matches once in four; one that never matches is refused).
_CRON_SEARCH_YEARS = 8
_EVERY = re.compile(r"^\s*(\d+)\s*(m|min|h|d)\s*$")
_UNIT_MIN = {"m": 1, "min": 1, "h": 60, "d": 1440}
_DAY = timedelta(days=1)


class ScheduleError(ValueError):
    """A schedule setting was rejected; the message says what was wrong with it."""


@dataclass(slots=True, frozen=True)
class Schedule:
    """When one task runs: exactly one of ``cron`` and ``every``, in ``timezone``."""

    cron: str | None = None
    every: timedelta | None = None
    until: time | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ScheduleError("give exactly one of cron and every")
        tz_of(self.timezone)
        if self.cron is not None:
            check_cron(self.cron)
        if self.every is not None:
            check_every(self.every)

    @property
    def tz(self) -> tzinfo:
        return tz_of(self.timezone)


@dataclass(slots=True, frozen=True)
class DueRuns:
    """What :func:`due_runs` found: the runs to do now, oldest first, and how many it dropped."""

    runs: list[datetime]
    skipped: int

    def __iter__(self) -> Iterator[datetime]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)


@lru_cache(maxsize=64)
def tz_of(name: str) -> tzinfo:
    """The zone called ``name`` (an IANA name, or "UTC"); ScheduleError if there is none."""
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}") from None


def check_cron(expr: str) -> None:
    """ScheduleError unless ``expr`` is a five-field cron expression that ever matches."""
    if len(expr.split()) != 5:
        raise ScheduleError(
            f"cron {expr!r} must have five fields (minute hour day-of-month month day-of-week)"
        )
    start = datetime(2000, 1, 1, tzinfo=UTC)
    try:
        first = next(CronSim(expr, start))
    except (CronSimError, StopIteration) as exc:
        raise ScheduleError(f"cron {expr!r} is not valid: {exc or 'never matches'}") from None
    if first - start > timedelta(days=366 * _CRON_SEARCH_YEARS):
        raise ScheduleError(f"cron {expr!r} never matches")


def check_every(period: timedelta) -> None:
    """ScheduleError unless ``period`` is a whole number of minutes that divides a day."""
    minutes, rest = divmod(period, timedelta(minutes=1))
    if rest or minutes < 1:
        raise ScheduleError(f"every {period} is not a whole number of minutes")
    if 1440 % minutes:
        raise ScheduleError(f"every {minutes} minutes does not divide a day (1440 minutes)")


def parse_every(text: str) -> timedelta:
    """``"15m"``, ``"1h"``, ``"1d"`` (``min`` also reads as minutes) as a checked period."""
    found = _EVERY.match(text)
    if found is None:
        raise ScheduleError(
            f"every {text!r} is not a period such as '15m', '1h' or '1d' (whole minutes)"
        )
    period = timedelta(minutes=int(found.group(1)) * _UNIT_MIN[found.group(2)])
    check_every(period)
    return period


def parse_until(text: str) -> time:
    """``"06:00"`` as a time of day (00:00..23:59)."""
    hours, sep, minutes = text.partition(":")
    try:
        h, m = int(hours), int(minutes)
    except ValueError:
        h = m = -1
    if not sep or len(minutes) != 2 or not 0 <= h <= 23 or not 0 <= m <= 59:
        raise ScheduleError(f"until {text!r} is not a time of day HH:MM (00:00..23:59)")
    return time(h, m)


def _aware(instant: datetime, what: str) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, got {instant!r}")


def next_run(schedule: Schedule, after: datetime) -> datetime:
    """The first run strictly after ``after`` (aware), as a UTC instant.

    Every instant this module returns is in UTC: aware datetimes of one ZoneInfo compare by
    wall clock, fold ignored, which is wrong in a fall-back hour. ``.astimezone(schedule.tz)``
    gives the wall-clock time.
    """
    _aware(after, "after")
    after = after.astimezone(UTC)
    if schedule.cron is not None:
        return _next_cron(schedule.cron, schedule.tz, after)
    assert schedule.every is not None
    return _next_every(schedule.every, schedule.tz, after)


def _next_cron(expr: str, tz: tzinfo, after: datetime) -> datetime:
    # cronsim steps wall-clock fields; inside a repeated (fall-back) hour it can hand back
    # an instant that is not later than `after`, so step until one is.
    local = after.astimezone(tz)
    for run in CronSim(expr, local):
        if run.astimezone(UTC) > after:
            return run.astimezone(UTC)
    raise AssertionError("unreachable: check_cron refused expressions that never match")


def _localise(wall: datetime, tz: tzinfo) -> list[datetime]:
    """The instants of a naive wall-clock time: one, two (repeated) or the pre-gap one."""
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    one, two = first.astimezone(UTC), second.astimezone(UTC)
    if one == two:
        return [one]
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall:
        return [one]  # skipped by a spring-forward gap: the offset before the change
    return [one, two]


def _next_every(period: timedelta, tz: tzinfo, after: datetime) -> datetime:
    offset = after.astimezone(tz).utcoffset()
    assert offset is not None
    naive_utc = after.astimezone(UTC).replace(tzinfo=None)
    # Fast path: the first aligned wall-clock time, when no DST change is near.
    wall = _ceil_strict(naive_utc + offset, period)
    run = (wall - offset).replace(tzinfo=UTC)
    horizon = after + period + timedelta(hours=3)
    if (
        run.astimezone(tz).utcoffset() == offset
        and horizon.astimezone(tz).utcoffset() == offset
        and (after - timedelta(hours=3)).astimezone(tz).utcoffset() == offset
    ):
        return run
    # Near a change: every aligned wall-clock time a few hours either side, all instants.
    wall = _ceil_strict(naive_utc + offset - timedelta(hours=4), period)
    best: datetime | None = None
    while best is None or wall <= naive_utc + offset + period + timedelta(hours=4):
        for instant in _localise(wall, tz):
            if instant > after and (best is None or instant < best):
                best = instant
        wall += period
    return best


def _ceil_strict(wall: datetime, period: timedelta) -> datetime:
    """The first multiple of ``period`` (counted from midnight) strictly after naive ``wall``."""
    since = wall - datetime.combine(wall.date(), time(0))
    return datetime.combine(wall.date(), time(0)) + (since // period + 1) * period


def window_end(schedule: Schedule, run: datetime) -> datetime:
    """Until when the run at ``run`` may be retried.

    The first ``until`` wall-clock time after the run (the same day or the next), but never
    past the next run, which takes over; without ``until``, the next run.
    """
    _aware(run, "run")
    run = run.astimezone(UTC)
    following = next_run(schedule, run)
    if schedule.until is None:
        return following
    tz = schedule.tz
    day: date = run.astimezone(tz).date()
    end = datetime.combine(day, schedule.until, tz).astimezone(UTC)
    if end <= run:
        end = datetime.combine(day + _DAY, schedule.until, tz).astimezone(UTC)
    return min(end, following)


def due_runs(
    schedule: Schedule,
    last_run: datetime | None,
    now: datetime,
    catch_up: int | timedelta,
) -> DueRuns:
    """The runs after ``last_run`` and at or before ``now``, oldest first, bounded.

    ``catch_up`` bounds them: an int keeps the most recent that many runs, a timedelta the
    runs in the last that long before ``now``; the older ones are dropped and counted in
    :attr:`DueRuns.skipped` (a month's outage of a 15-minute schedule with ``catch_up=4``
    gives four runs and 2,876 skipped). ``last_run=None`` (never ran) gives the latest run at
    or before ``now`` alone, skipping nothing: there is nothing to catch up on yet.
    """
    _aware(now, "now")
    now = now.astimezone(UTC)
    if isinstance(catch_up, int):
        if catch_up < 0:
            raise ValueError(f"catch_up {catch_up} is negative")
        keep: int | None = catch_up
        since: datetime | None = None
    else:
        if catch_up < timedelta(0):
            raise ValueError(f"catch_up {catch_up} is negative")
        keep = None
        since = now - catch_up
    if last_run is None:
        latest = _latest_at_or_before(schedule, now)
        runs = (
            []
            if latest is None or keep == 0 or (since is not None and latest < since)
            else [latest]
        )
        return DueRuns(runs, 0)
    _aware(last_run, "last_run")
    last_run = last_run.astimezone(UTC)
    kept: deque[datetime] = deque(maxlen=keep)
    skipped = 0
    run = next_run(schedule, last_run)
    while run <= now:
        if since is not None and run < since:
            skipped += 1
        else:
            if keep is not None and len(kept) == keep:
                skipped += 1
            kept.append(run)
        run = next_run(schedule, run)
    return DueRuns(list(kept), skipped)


def _latest_at_or_before(schedule: Schedule, now: datetime) -> datetime | None:
    """The last run at or before ``now`` (None if none in the last eight years)."""
    step = schedule.every if schedule.every is not None else _DAY
    start = now - step - timedelta(hours=3)
    limit = now - timedelta(days=366 * _CRON_SEARCH_YEARS)
    while start > limit:
        latest = None
        run = next_run(schedule, start)
        while run <= now:
            latest = run
            run = next_run(schedule, run)
        if latest is not None:
            return latest
        start -= step * 4
        step *= 4
    return None


#: What ``hes collect`` does for a group without a ``[group.schedule]`` (with the default
#: ``window``): the collected day's profile and registers from 00:05 after midnight,
#: retried until 06:00. No events or clock task. Stated here, not applied by the plan.
DEFAULT_SCHEDULES: dict[str, Schedule] = {
    "profile": Schedule(cron="5 0 * * *", until=time(6, 0)),
    "registers": Schedule(cron="5 0 * * *", until=time(6, 0)),
}
