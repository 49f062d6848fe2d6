"""What a schedule tick enqueues (collector.schedule_jobs): pure functions, plain instants."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from test_collector_fleet import plan_text

from collector.plan import parse_plan
from collector.schedule import Schedule
from collector.schedule_jobs import job_for_tick, planned_schedules, window_schedule
from storage.jobs import SCHEDULED

SHANGHAI = """
[collector]
timezone = "Asia/Shanghai"
"""


def test_a_group_without_schedules_runs_its_window_daily_once() -> None:
    plan = parse_plan(plan_text())
    (only,) = planned_schedules(plan)  # registers ride in the profile's sessions
    assert only.name == "all/profile"
    assert only.schedule == Schedule(cron="5 0 * * *", until=time(6, 0), timezone="UTC")
    assert window_schedule(plan.groups[0], "UTC") == only.schedule


def test_daily_tick_collects_the_previous_local_day_until_the_window_ends() -> None:
    text = plan_text().replace("[collector]", SHANGHAI.strip(), 1)
    plan = parse_plan(text)
    (planned,) = planned_schedules(plan)
    tick = datetime(2026, 3, 10, 16, 5, tzinfo=UTC)  # 00:05 on 11 March in Shanghai
    req = job_for_tick(planned, tick, now=tick + timedelta(minutes=1))
    assert req.kind == "collect" and req.params == {"group": "all", "day": "2026-03-10"}
    assert req.schedule == "all/profile" and req.tick == tick and req.priority == SCHEDULED
    assert req.deadline == datetime(2026, 3, 10, 22, 0, tzinfo=UTC)  # 06:00 local
    req.check()


def test_a_caught_up_tick_gets_its_window_length_from_now() -> None:
    (planned,) = planned_schedules(parse_plan(plan_text()))
    tick = datetime(2026, 3, 10, 0, 5, tzinfo=UTC)
    now = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)  # the service was down all night
    req = job_for_tick(planned, tick, now)
    assert req.deadline == now + timedelta(hours=5, minutes=55)


def test_intra_day_ticks_expect_intervals_up_to_the_tick_and_other_tasks() -> None:
    text = plan_text() + (
        '\n[group.schedule.profile]\nevery = "1h"\n'
        '[group.schedule.registers]\ncron = "5 0 * * *"\n'
        '[group.schedule.events]\nevery = "6h"\n'
        '[group.schedule.clock]\ncron = "0 3 * * *"\n'
    )
    by_task = {p.task: p for p in planned_schedules(parse_plan(text))}
    assert set(by_task) == {"profile", "registers", "events", "clock"}
    tick = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
    hourly = job_for_tick(by_task["profile"], tick, tick)
    assert hourly.params == {"group": "all", "day": "2026-03-10", "until": tick.isoformat()}
    assert hourly.deadline == tick + timedelta(hours=1)
    midnight = datetime(2026, 3, 10, 0, 5, tzinfo=UTC)
    registers = job_for_tick(by_task["registers"], midnight, midnight)
    assert registers.params["refresh"] is True and registers.params["day"] == "2026-03-09"
    assert job_for_tick(by_task["events"], tick, tick).kind == "events"
    clock = job_for_tick(by_task["clock"], tick, tick)
    assert clock.kind == "clock_sync" and clock.params == {"group": "all"}
    for req in (hourly, registers, clock):
        req.check()
