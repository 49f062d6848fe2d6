"""collector/schedule.py: cron and every schedules, zones, DST, catch-up, windows, plan parsing."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.plan import PlanError, load_plan, parse_plan
from collector.schedule import (
    DEFAULT_SCHEDULES,
    Schedule,
    ScheduleError,
    due_runs,
    next_run,
    parse_every,
    window_end,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def runs(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    out, run = [], next_run(schedule, start)
    while run < end:
        out.append(run)
        run = next_run(schedule, run)
    return out


# --- cron -------------------------------------------------------------------------------


def test_daily_cron_runs_at_the_wall_clock_time_of_the_zone() -> None:
    s = Schedule(cron="5 0 * * *", timezone="Europe/Berlin")
    run = next_run(s, utc(2025, 1, 10, 12))
    assert run == datetime(2025, 1, 11, 0, 5, tzinfo=BERLIN)
    assert run.tzinfo is UTC and run == utc(2025, 1, 10, 23, 5)
    # Strictly after: a run instant itself gives the next day's.
    assert next_run(s, run) == datetime(2025, 1, 12, 0, 5, tzinfo=BERLIN)
    # Summer time: same wall clock, another UTC hour.
    assert next_run(s, utc(2025, 7, 1, 12)) == utc(2025, 7, 1, 22, 5)


def test_cron_in_utc_and_weekday_fields() -> None:
    s = Schedule(cron="0 3 * * 1")  # Mondays 03:00 UTC
    assert next_run(s, utc(2025, 1, 1)) == utc(2025, 1, 6, 3)


@pytest.mark.parametrize(
    ("tz", "day"), [("Europe/Berlin", (2025, 3, 30)), ("America/New_York", (2025, 3, 9))]
)
def test_cron_in_a_spring_forward_gap_runs_once(tz: str, day: tuple[int, int, int]) -> None:
    s = Schedule(cron="30 2 * * *", timezone=tz)
    zone = ZoneInfo(tz)
    start = datetime(*day, tzinfo=zone) - timedelta(days=1)
    got = runs(s, start, start + timedelta(days=3))
    local_days = [r.astimezone(zone).date() for r in got]
    assert len(got) == 3 and len(set(local_days)) == 3
    on_the_day = got[1].astimezone(zone)
    assert on_the_day.date() == datetime(*day).date()
    assert on_the_day.hour == 3 and on_the_day.minute == 0  # the first instant after the gap


@pytest.mark.parametrize(
    ("tz", "day"), [("Europe/Berlin", (2025, 10, 26)), ("America/New_York", (2025, 11, 2))]
)
def test_cron_in_a_fall_back_hour_runs_once_not_twice(tz: str, day: tuple[int, int, int]) -> None:
    zone = ZoneInfo(tz)
    cron_time = "30 2 * * *" if tz == "Europe/Berlin" else "30 1 * * *"
    s = Schedule(cron=cron_time, timezone=tz)
    start = datetime(*day, tzinfo=zone) - timedelta(days=1)
    got = runs(s, start, start + timedelta(days=3))
    assert len(got) == 3
    on_the_day = got[1].astimezone(zone)
    assert on_the_day.date() == datetime(*day).date() and on_the_day.fold == 0


def test_cron_started_inside_the_repeated_hour_does_not_go_back() -> None:
    s = Schedule(cron="*/15 * * * *", timezone="Europe/Berlin")
    inside = datetime(2025, 10, 26, 2, 20, tzinfo=BERLIN, fold=1)  # 01:20 UTC
    assert next_run(s, inside) > inside


# --- every ------------------------------------------------------------------------------


def test_every_is_aligned_to_local_midnight() -> None:
    s = Schedule(every=parse_every("15m"), timezone="Europe/Berlin")
    assert next_run(s, utc(2025, 1, 10, 12, 7)) == utc(2025, 1, 10, 12, 15)
    assert next_run(s, utc(2025, 1, 10, 12, 15)) == utc(2025, 1, 10, 12, 30)
    six = Schedule(every=parse_every("6h"), timezone="Europe/Berlin")
    assert next_run(six, utc(2025, 7, 1, 0)).astimezone(BERLIN).hour == 6
    kolkata = Schedule(every=parse_every("1h"), timezone="Asia/Kolkata")
    assert next_run(kolkata, utc(2025, 1, 1, 0, 0)) == utc(2025, 1, 1, 0, 30)


def test_every_follows_elapsed_time_across_dst() -> None:
    s = Schedule(every=parse_every("15m"), timezone="Europe/Berlin")
    fall = runs(s, utc(2025, 10, 25, 23), utc(2025, 10, 26, 3))
    assert len(fall) == 15 and all(b - a == timedelta(minutes=15) for a, b in pairwise(fall))
    spring = runs(s, utc(2025, 3, 29, 23), utc(2025, 3, 30, 3))
    assert len(spring) == 15
    hourly = Schedule(every=parse_every("1h"), timezone="Europe/Berlin")
    walls = [
        r.astimezone(BERLIN).hour for r in runs(hourly, utc(2025, 3, 29, 23), utc(2025, 3, 30, 3))
    ]
    assert walls == [1, 3, 4]  # 02:00 does not exist: it runs as 03:00, once


# --- window end -------------------------------------------------------------------------


def test_window_end_is_the_next_until_time_and_never_past_the_next_run() -> None:
    daily = Schedule(cron="5 0 * * *", until=time(6, 0), timezone="Europe/Berlin")
    run = next_run(daily, utc(2025, 1, 10, 12))
    assert window_end(daily, run) == datetime(2025, 1, 11, 6, 0, tzinfo=BERLIN)
    late = Schedule(cron="0 23 * * *", until=time(6, 0), timezone="Europe/Berlin")
    run = next_run(late, utc(2025, 1, 10, 12))
    assert window_end(late, run) == datetime(2025, 1, 11, 6, 0, tzinfo=BERLIN)
    quarter = Schedule(every=parse_every("15m"), until=time(6, 0))
    assert window_end(quarter, utc(2025, 1, 1, 1)) == utc(2025, 1, 1, 1, 15)
    plain = Schedule(every=parse_every("1h"))
    assert window_end(plain, utc(2025, 1, 1, 1)) == utc(2025, 1, 1, 2)


# --- catch-up ---------------------------------------------------------------------------


def test_downtime_over_midnight_is_caught_up() -> None:
    daily = Schedule(cron="5 0 * * *", timezone="Europe/Berlin")
    last = datetime(2025, 1, 10, 0, 5, tzinfo=BERLIN)
    due = due_runs(daily, last, datetime(2025, 1, 11, 8, 0, tzinfo=BERLIN), catch_up=3)
    assert due.runs == [datetime(2025, 1, 11, 0, 5, tzinfo=BERLIN)] and due.skipped == 0
    assert list(due) == due.runs and len(due) == 1
    assert due_runs(daily, last, datetime(2025, 1, 10, 8, tzinfo=BERLIN), 3).runs == []


def test_catch_up_after_a_month_is_bounded_and_counts_the_skipped() -> None:
    quarter = Schedule(every=parse_every("15m"))
    due = due_runs(quarter, utc(2025, 1, 1), utc(2025, 1, 31), catch_up=4)
    assert due.runs == [utc(2025, 1, 30, 23, 15) + timedelta(minutes=15 * i) for i in range(4)]
    assert due.skipped == 30 * 96 - 4
    by_time = due_runs(quarter, utc(2025, 1, 1), utc(2025, 1, 31), catch_up=timedelta(hours=1))
    assert len(by_time) == 5 and by_time.runs[0] == utc(2025, 1, 30, 23)  # now-1h..now
    assert by_time.skipped == 30 * 96 - 5
    none = due_runs(quarter, utc(2025, 1, 1), utc(2025, 1, 2), catch_up=0)
    assert none.runs == [] and none.skipped == 96


def test_never_run_gives_the_latest_run_only() -> None:
    daily = Schedule(cron="5 0 * * *")
    due = due_runs(daily, None, utc(2025, 1, 11, 8), catch_up=5)
    assert due.runs == [utc(2025, 1, 11, 0, 5)] and due.skipped == 0


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_run(Schedule(cron="5 0 * * *"), datetime(2025, 1, 1))


# --- checks of Schedule itself ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "exactly one of cron and every"),
        ({"cron": "5 0 * * *", "every": timedelta(hours=1)}, "exactly one"),
        ({"cron": "5 0 * *"}, "five fields"),
        ({"cron": "0 0 5 0 * *"}, "five fields"),
        ({"cron": "61 0 * * *"}, "not valid"),
        ({"cron": "0 0 30 2 *"}, "not valid"),
        ({"every": timedelta(seconds=90)}, "whole number of minutes"),
        ({"every": timedelta(minutes=7)}, "does not divide a day"),
        ({"cron": "5 0 * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
    ],
)
def test_bad_schedules_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Schedule(**kw)  # type: ignore[arg-type]


def test_default_schedules_state_what_hes_collect_does() -> None:
    group = load_plan(None).groups[0]
    assert group.schedules == {}
    profile = DEFAULT_SCHEDULES["profile"]
    assert profile.cron == "5 0 * * *" and profile.until == time(6, 0)
    assert set(DEFAULT_SCHEDULES) == {"profile", "registers"}


# --- hypothesis -------------------------------------------------------------------------

PERIODS = [m for m in range(1, 1441) if 1440 % m == 0]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Sydney"]


@settings(max_examples=300, deadline=None)
@given(
    minutes=st.sampled_from(PERIODS),
    zone=st.sampled_from(ZONES),
    after=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31), timezones=st.just(UTC)
    ),
)
def test_every_next_run_is_later_aligned_and_at_most_one_period_away(
    minutes: int, zone: str, after: datetime
) -> None:
    period = timedelta(minutes=minutes)
    s = Schedule(every=period, timezone=zone)
    tz = ZoneInfo(zone)
    run = next_run(s, after)
    assert run > after
    # Aligned on the zone's wall clock, or (a time a spring-forward gap skipped) on the wall
    # clock of the offset in force just before the run.
    walls = [run.astimezone(tz), (run - timedelta(microseconds=1)).astimezone(tz)]
    offsets = {w.utcoffset() for w in walls}
    assert any(
        (
            (run + off).replace(tzinfo=None)
            - (run + off).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
        )
        % period
        == timedelta(0)
        for off in offsets
        if off is not None
    )
    # At most one period away, stretched by a DST shift only where the offset changed.
    shift = abs(after.astimezone(tz).utcoffset() - run.astimezone(tz).utcoffset())  # type: ignore[operator]
    assert run - after <= period + shift
    if shift == timedelta(0) or minutes <= 60:
        assert run - after <= period


# --- plan parsing -----------------------------------------------------------------------

GROUP = """
[collector]
timezone = "Europe/Berlin"

[[group]]
name = "large"
[group.profile.channels]
2 = "1.0.1.8.0.255"
"""


def test_plan_schedules_parse_in_the_plan_zone() -> None:
    plan = parse_plan(
        GROUP
        + """
[group.schedule]
profile = { every = "15m" }
registers = { cron = "5 0 * * *", until = "06:00" }
events = { every = "1h" }
clock = { cron = "30 3 * * *" }
"""
    )
    schedules = plan.groups[0].schedules
    assert set(schedules) == {"profile", "registers", "events", "clock"}
    assert schedules["profile"] == Schedule(every=timedelta(minutes=15), timezone="Europe/Berlin")
    assert schedules["registers"].until == time(6, 0)
    assert schedules["registers"].timezone == "Europe/Berlin"
    assert next_run(schedules["registers"], utc(2025, 1, 1, 12)) == utc(2025, 1, 1, 23, 5)


def test_plan_with_some_tasks_scheduled_and_sub_tables() -> None:
    plan = parse_plan(GROUP + '[group.schedule.events]\nevery = "1h"\n')
    assert set(plan.groups[0].schedules) == {"events"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('profile = { cron = "5 0 * *" }', r"schedule\.profile\.cron: cron .* five fields"),
        ('profile = { cron = "99 0 * * *" }', r"schedule\.profile\.cron: cron .* not valid"),
        (
            'events = { cron = "0 * * * *", every = "1h" }',
            r"schedule\.events: give cron or every, not both",
        ),
        ("clock = {}", r"schedule\.clock: give cron .* or every"),
        ('profile = { every = "90s" }', r"schedule\.profile\.every: .*whole minutes"),
        ('profile = { every = "7m" }', r"schedule\.profile\.every: .*does not divide a day"),
        ('profile = { every = "15m", until = "25:00" }', r"schedule\.profile\.until: .*HH:MM"),
        ("profile = { every = 15 }", r"schedule\.profile\.every: expected a string"),
        ('profile = { every = "15m", at = "x" }', r"schedule\.profile\.at: unknown key"),
        ('billing = { every = "1h" }', r"schedule\.billing: unknown key"),
    ],
)
def test_plan_schedule_errors_name_group_task_and_problem(table: str, message: str) -> None:
    with pytest.raises(PlanError, match=message) as info:
        parse_plan(GROUP + "[group.schedule]\n" + table + "\n", "p.toml")
    text = str(info.value)
    assert text.startswith("p.toml: group[0].schedule.") and "(group 'large')" in text


def test_unknown_plan_time_zone_is_refused() -> None:
    with pytest.raises(PlanError, match=r"collector\.timezone: unknown time zone"):
        parse_plan(GROUP.replace("Europe/Berlin", "Europe/Atlantis"))


def test_plans_without_schedules_are_unchanged() -> None:
    plan = parse_plan(GROUP)
    assert plan.groups[0].schedules == {}
