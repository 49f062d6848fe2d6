"""The service loop (collector.daemon.HeadEnd) against the real simulator, in one process.

The simulator's clock and the service's clock are one settable clock, so "the next night"
is a step of it: two scheduled daily runs, an hourly event-log schedule, an on-demand read
and a disconnect/reconnect pair happen in seconds, and every stored interval is compared
with the simulator's ground truth and every relay with the simulated meter's own state.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from serve_harness import online_run, stored_vs_truth, truth_count
from test_collector_fleet import CHANNELS, plan_text
from test_operations import SEED, SimClock, management_fleet, relay, sim_secret

from collector.daemon import HeadEnd
from collector.job_queue import JobQueue
from collector.operations import CONNECTED, DISCONNECTED
from collector.plan import parse_plan
from storage import jobs, queries
from storage.database import Database, open_database
from storage.jobs import JobRecord, JobRequest

#: The first night: ten past midnight after 10 March (UTC), the daily run's tick at 00:05.
START = datetime(2026, 3, 11, 0, 10, tzinfo=UTC)
#: Every register read of the run lies in this window.
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
SCHEDULES = """
[group.schedule.profile]
cron = "5 0 * * *"
until = "06:00"

[group.schedule.events]
cron = "30 * * * *"
"""


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "hes.db")
    yield database
    database.close()


async def until_final(db: Database, job_id: int, timeout: float = 60.0) -> JobRecord:
    job = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                job = await asyncio.to_thread(jobs.get, db, job_id)
                assert job is not None
                if job.final:
                    return job
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"job {job_id} did not end: {job} {all_jobs(db)}") from None


def all_jobs(db: Database) -> list[tuple[int, str, str, str | None]]:
    return [(j.id, j.kind, j.state, j.schedule) for j in jobs.list_jobs(db, limit=200)]


async def scheduled_job(db: Database, schedule: str, tick: datetime) -> JobRecord:
    try:
        async with asyncio.timeout(30):
            while True:
                for job in await asyncio.to_thread(jobs.list_jobs, db, limit=200):
                    if job.schedule == schedule and job.tick == tick:
                        return await until_final(db, job.id)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"no job of {schedule} at {tick}: {all_jobs(db)}") from None


async def test_two_nights_an_on_demand_read_and_a_relay_pair(tmp_path: Path, db: Database) -> None:
    clock = SimClock(START.timestamp())
    second_night = START + timedelta(days=1)
    first = online_run(4, 900, [START.timestamp(), second_night.timestamp()], SEED)
    plan = parse_plan(plan_text() + SCHEDULES)
    async with management_fleet(
        tmp_path, db, tcp=2, bus=2, first_meter=first, clock=clock, first_address="127.7.9.1"
    ) as fleet:
        ids = [m.meter_id for m in db.meters()]
        service = HeadEnd(
            db,
            plan,
            now=lambda: datetime.fromtimestamp(clock.t, UTC),
            secrets=sim_secret,
            poll_s=0.05,
            drain_s=5.0,
        )
        loop = asyncio.create_task(service.run())
        await service.wait_ready()

        # First night: the latest tick (00:05) is enqueued on start and collects 10 March.
        night1 = await scheduled_job(db, "all/profile", START - timedelta(minutes=5))
        assert night1.state == "done", night1.result
        assert night1.result["complete"] == 4 and night1.params["day"] == "2026-03-10"
        for meter_id in ids:
            assert stored_vs_truth(db, meter_id, date(2026, 3, 10), seed=SEED) == []
        events1 = await scheduled_job(db, "all/events", START - timedelta(minutes=40))
        assert events1.state == "done" and events1.result["failed_count"] == 0, events1.result
        stored_events = db.count_rows("meter_events")
        assert stored_events > 0

        # On demand, between the nights: a bus meter's registers now, ten minutes later.
        clock.t += 600
        read, _ = await service.queue.submit(JobRequest("read", {}, [ids[-1]], requested_by="op"))
        read = await until_final(db, read.id)
        assert read.state == "done" and read.result["complete"] == 1, read.result
        regs = queries.register_reads(db, ids[-1], *EVER)
        n_regs = len(regs)
        assert n_regs == 2 * len(CHANNELS)  # the night's and the on-demand read's

        # Prepayment: disconnect (retried by the billing system: one job), then reconnect.
        req = JobRequest("disconnect", {}, [ids[0]], requested_by="billing", idempotency_key="b-1")
        cut, created = await service.queue.submit(req)
        again, created_again = await service.queue.submit(req)
        assert created and not created_again and again.id == cut.id
        cut = await until_final(db, cut.id)
        assert cut.state == "done", cut.error
        assert relay(fleet, ids[0]) == DISCONNECTED
        back, _ = await service.queue.submit(
            JobRequest("reconnect", {}, [ids[0]], requested_by="billing", idempotency_key="b-2")
        )
        back = await until_final(db, back.id)
        assert back.state == "done" and relay(fleet, ids[0]) == CONNECTED

        # The second night: a day later the next tick collects 11 March.
        clock.t = second_night.timestamp()
        night2 = await scheduled_job(db, "all/profile", second_night - timedelta(minutes=5))
        assert night2.state == "done" and night2.params["day"] == "2026-03-11", night2.result
        for meter_id in ids:
            assert stored_vs_truth(db, meter_id, date(2026, 3, 11), seed=SEED) == []
        # events: the hourly ticks missed over the day were caught up, three at most
        event_jobs = [j for j in jobs.list_jobs(db, kind="events", limit=100)]
        assert 2 <= len(event_jobs) <= 1 + 3

        service.stop()
        await asyncio.wait_for(loop, 30)
        # one session at a time on the bus, whichever job it was; none turned away
        bus = fleet.stats()["buses"]
        assert bus["peak_sessions_in_flight"] == 1 and bus["refused"] == 0
    assert service.telemetry.sessions_in_flight._value.get() == 0


async def test_stop_mid_job_requeues_and_a_restart_finishes_it_once(
    tmp_path: Path, db: Database
) -> None:
    clock = SimClock(START.timestamp())
    first = online_run(10, 1300, [START.timestamp()], SEED)
    plan = parse_plan(plan_text(concurrency=1))
    # one bus: its meters are read one after the other, so the stop lands mid-job
    async with management_fleet(
        tmp_path, db, tcp=0, bus=10, first_meter=first, clock=clock, first_address="127.7.10.1"
    ):
        ids = [m.meter_id for m in db.meters()]

        def service() -> HeadEnd:
            return HeadEnd(
                db,
                plan,
                now=lambda: datetime.fromtimestamp(clock.t, UTC),
                secrets=sim_secret,
                poll_s=0.05,
                drain_s=5.0,
            )

        job, _ = jobs.submit(db, JobRequest("collect", {"day": "2026-03-10"}, requested_by="op"))
        one = service()
        loop = asyncio.create_task(one.run())
        async with asyncio.timeout(30):  # the first meter is in, the run is not over
            while db.count_rows("read_attempts") < 1:
                await asyncio.sleep(0.01)
        one.stop()
        await asyncio.wait_for(loop, 30)
        stopped = jobs.get(db, job.id)
        assert stopped is not None and stopped.state == "queued"
        rows_before = db.count_interval_values()
        assert 0 < rows_before

        two = service()
        loop = asyncio.create_task(two.run())
        done = await until_final(db, job.id)
        two.stop()
        await asyncio.wait_for(loop, 30)
    assert done.state == "done" and done.attempts == 2, done.result
    for meter_id in ids:
        assert stored_vs_truth(db, meter_id, date(2026, 3, 10), seed=SEED) == []
    # the restart skipped the meters already complete: nothing stored twice
    assert done.result["skipped_complete"] >= 1
    assert db.count_interval_values() == sum(
        truth_count(m, date(2026, 3, 10), seed=SEED) for m in ids
    )


class SlowClaims(JobQueue):
    """A queue whose claim sits in the database call a while (a slow or busy database)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.claiming = threading.Event()

    async def claim(
        self, kinds: Sequence[str] | None = None, max_priority: int | None = None
    ) -> JobRecord | None:
        def slow() -> JobRecord | None:
            self.claiming.set()
            time.sleep(0.3)
            return jobs.claim_next(self.db, kinds=kinds, max_priority=max_priority)

        return await asyncio.get_running_loop().run_in_executor(None, slow)


async def test_a_stop_during_a_claim_leaves_the_job_queued(db: Database) -> None:
    job, _ = jobs.submit(db, JobRequest("collect", {"day": "2026-03-10"}, requested_by="op"))
    queue = SlowClaims(db)
    service = HeadEnd(db, parse_plan(plan_text()), queue=queue, poll_s=0.05)
    loop = asyncio.create_task(service.run())
    await asyncio.to_thread(queue.claiming.wait, 10)
    service.stop()  # while the claim's database call is still running
    await asyncio.wait_for(loop, 30)
    await asyncio.sleep(0.5)  # a claim cut loose from the loop would land by now
    after = jobs.get(db, job.id)
    assert after is not None and after.state == "queued", after


async def test_the_service_applies_the_retention_policy_once_a_day(db: Database) -> None:
    from storage.records import IntervalRead

    old, kept = datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)
    q = timedelta(minutes=15)
    db.insert_interval_reads(
        IntervalRead("A", CHANNELS[0], t + k * q, k) for t in (old, kept) for k in range(96)
    )
    clock = {"now": START}
    service = HeadEnd(
        db, parse_plan(plan_text()), poll_s=0.05, retention_days=30, now=lambda: clock["now"]
    )
    loop = asyncio.create_task(service.run())
    await service.wait_ready()
    async with asyncio.timeout(30):
        while db.count_interval_values() != 96:
            await asyncio.sleep(0.05)
    db.insert_interval_reads(IntervalRead("A", CHANNELS[0], old + k * q, k) for k in range(96))
    await asyncio.sleep(0.5)  # the same day: not applied again
    assert db.count_interval_values() == 2 * 96
    service.stop()
    await asyncio.wait_for(loop, 30)
    assert [
        len(db.interval_reads("A", CHANNELS[0], t, t + timedelta(days=1))) for t in (old, kept)
    ] == [96, 96]
