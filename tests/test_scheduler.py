"""The link scheduler on a fake clock: no real sleeping, exact times.

Sessions are fake (``await clock.sleep(duration)``); the clock only moves when every task is
waiting on it, to the earliest timer, so start and end times are exact and orderings are the
scheduler's own.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pytest

from collector.plan import Group, ProfilePlan, RetryPolicy, Window
from collector.scheduler import LinkScheduler, backoff_delay, window_deadlines, window_delay

T = TypeVar("T")


class FakeClock:
    """A monotonic clock and an async sleep that only advance when everything is waiting."""

    def __init__(self) -> None:
        self.t = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.sleeps: list[float] = []
        self.closed = False

    def __call__(self) -> float:
        return self.t

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        if self.closed:  # the test is over (a failed one leaves tasks to wind down)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.t + max(delay, 0.0), next(self._seq), fut))
        await fut

    async def run(self, coro: Coroutine[Any, Any, T], limit: int = 10_000) -> T:
        task = asyncio.ensure_future(coro)
        try:
            for _ in range(limit):
                for _ in range(30):  # let every runnable task reach its next wait
                    await asyncio.sleep(0)
                if task.done():
                    return task.result()
                while self._timers and self._timers[0][2].done():  # cancelled sleeps
                    heapq.heappop(self._timers)
                assert self._timers, "deadlock: no task runs and no timer is set"
                at, _, fut = heapq.heappop(self._timers)
                self.t = max(self.t, at)
                fut.set_result(None)
            raise AssertionError("the scheduler did not finish")
        finally:
            task.cancel()
            self.closed = True
            for _, _, fut in self._timers:
                if not fut.done():
                    fut.set_result(None)


@dataclass
class FakeJob:
    meter_id: str
    link_id: str
    shares_line: bool = False
    not_before: float = 0.0
    attempts: int = 0
    #: per attempt: session seconds and whether it fails (transiently)
    script: list[tuple[float, bool]] = field(default_factory=lambda: [(1.0, False)])


@dataclass
class Stats:
    in_flight: int = 0
    peak_in_flight: int = 0


@dataclass
class Run:
    clock: FakeClock
    scheduler: LinkScheduler[FakeJob]
    stats: Stats
    #: (meter, start, end) of every session
    sessions: list[tuple[str, float, float]] = field(default_factory=list)
    retries: list[tuple[str, float, float]] = field(default_factory=list)  # meter, at, delay


def make_run(
    *,
    concurrency: int = 10,
    retry: RetryPolicy | None = None,
    deadline: float = 1e9,
    turnaround: float = 0.0,
    grace: float = 5.0,
    seed: int = 7,
) -> Run:
    clock = FakeClock()
    stats = Stats()
    holder: list[Run] = []

    async def attempt(job: FakeJob) -> float | None:
        run = holder[0]
        start = clock()
        duration, fails = job.script[min(job.attempts, len(job.script) - 1)]
        job.attempts += 1
        try:
            await clock.sleep(duration)
        finally:
            run.sessions.append((job.meter_id, start, clock()))
        if not fails:
            return None
        got = run.scheduler.retry_time(job.attempts, deadline)
        if got is None:
            return None
        run.retries.append((job.meter_id, *got))
        return got[0]

    scheduler: LinkScheduler[FakeJob] = LinkScheduler(
        attempt,
        stats,
        concurrency=concurrency,
        retry=retry or RetryPolicy(max_attempts=1),
        seed=seed,
        link_turnaround_s=turnaround,
        stop_grace_s=grace,
        clock=clock,
        sleep=clock.sleep,
    )
    run = Run(clock, scheduler, stats)
    holder.append(run)
    return run


def overlaps(a: tuple[str, float, float], b: tuple[str, float, float]) -> bool:
    return a[1] < b[2] and b[1] < a[2]


async def test_one_session_at_a_time_per_bus_with_turnaround() -> None:
    run = make_run(concurrency=10, turnaround=0.5)
    bus = [FakeJob(f"B{i}", "bus-1", shares_line=True, script=[(5.0, False)]) for i in range(3)]
    tcp = [FakeJob(f"T{i}", f"tcp-{i}", script=[(5.0, False)]) for i in range(2)]
    run.scheduler.enqueue([*bus, *tcp])
    await run.clock.run(run.scheduler.run())

    starts = {m: s for m, s, _ in run.sessions}
    # the bus: strictly one after the other, each after the previous one's turnaround
    assert sorted(starts[j.meter_id] for j in bus) == [0.0, 5.5, 11.0]
    bus_sessions = [s for s in run.sessions if s[0].startswith("B")]
    assert not any(overlaps(a, b) for a, b in itertools.combinations(bus_sessions, 2))
    # TCP meters are links of their own: they start at once, in parallel with the bus
    assert starts["T0"] == starts["T1"] == 0.0
    assert run.stats.peak_in_flight == 3
    assert run.stats.in_flight == 0
    assert list(run.scheduler.pending()) == []


async def test_a_tcp_link_with_one_meter_gets_no_turnaround() -> None:
    run = make_run(turnaround=0.5)
    run.scheduler.enqueue([FakeJob("T0", "tcp-0"), FakeJob("T1", "tcp-1")])
    await run.clock.run(run.scheduler.run())
    assert 0.5 not in run.clock.sleeps
    run = make_run(turnaround=0.5)
    run.scheduler.enqueue([FakeJob("A", "shared"), FakeJob("B", "shared")])
    await run.clock.run(run.scheduler.run())
    assert run.clock.sleeps.count(0.5) == 2


async def test_concurrency_cap_holds_and_is_used_in_full() -> None:
    run = make_run(concurrency=3)
    run.scheduler.enqueue([FakeJob(f"T{i}", f"tcp-{i}") for i in range(10)])
    await run.clock.run(run.scheduler.run())

    starts = sorted(s for _, s, _ in run.sessions)
    assert starts == [0.0] * 3 + [1.0] * 3 + [2.0] * 3 + [3.0]
    for t in (0.5, 1.5, 2.5, 3.5):
        running = [s for s in run.sessions if s[1] <= t < s[2]]
        assert len(running) == (3 if t < 3 else 1)
    assert run.stats.peak_in_flight == 3


async def test_links_with_most_pending_meters_start_first() -> None:
    run = make_run(concurrency=1)
    run.scheduler.enqueue(
        [FakeJob("lone", "tcp-0"), *(FakeJob(f"B{i}", "bus", shares_line=True) for i in range(3))]
    )
    await run.clock.run(run.scheduler.run())
    # all ready at once: the bus (3 pending, then 2) goes ahead of the lone meter (1), which
    # was queued first and wins the tie at one pending each
    assert [m for m, _, _ in run.sessions] == ["B0", "B1", "lone", "B2"]
    assert [s for _, s, _ in run.sessions] == [0.0, 1.0, 2.0, 3.0]


async def test_backoff_delays_order_the_retries() -> None:
    policy = RetryPolicy(max_attempts=4, backoff_base_s=10.0, backoff_max_s=300.0)
    run = make_run(concurrency=1, retry=policy, seed=3)
    # A fails three times, then succeeds; B, one session, runs while A waits for its backoff
    a = FakeJob("A", "tcp-a", script=[(1.0, True), (1.0, True), (1.0, True), (1.0, False)])
    b = FakeJob("B", "tcp-b", script=[(1.0, False)])
    run.scheduler.enqueue([a, b])
    await run.clock.run(run.scheduler.run())

    rng = random.Random(3)
    expected = [backoff_delay(rng, n, 10.0, 300.0) for n in (1, 2, 3)]
    assert [d for _, _, d in run.retries] == expected
    # equal jitter: each delay within [step/2, step], steps doubling
    for n, d in enumerate(expected, start=1):
        step = 10.0 * 2 ** (n - 1)
        assert step / 2 <= d <= step
    a_sessions = [s for s in run.sessions if s[0] == "A"]
    assert len(a_sessions) == 4
    for (_, _, end), (_, start, _), delay in zip(
        a_sessions[:-1], a_sessions[1:], expected, strict=True
    ):
        assert start == pytest.approx(end + delay)
    # B did not wait behind A's backoff: it ran at once after A's first session
    assert [m for m, _, _ in run.sessions][:2] == ["A", "B"]
    assert a.not_before == pytest.approx(a_sessions[-1][1])


@pytest.mark.parametrize("seed", [1, 4])  # seed 4: the meter queued second retries first
async def test_retries_run_in_the_order_they_fall_due(seed: int) -> None:
    policy = RetryPolicy(max_attempts=2, backoff_base_s=100.0, backoff_max_s=100.0)
    run = make_run(concurrency=1, retry=policy, seed=seed)
    x = FakeJob("X", "tcp-1", script=[(1.0, True), (1.0, False)])
    z = FakeJob("Z", "tcp-2", script=[(1.0, True), (1.0, False)])
    busy = FakeJob("busy", "tcp-3", script=[(500.0, False)])  # both retries fall due meanwhile
    run.scheduler.enqueue([x, z, busy])
    await run.clock.run(run.scheduler.run())

    retry_at = {m: at for m, at, _ in run.retries}
    assert max(retry_at.values()) < 502.0
    later = [m for m, start, _ in run.sessions if start >= 502.0]
    assert later == sorted(retry_at, key=retry_at.__getitem__)
    assert later == (["Z", "X"] if seed == 4 else ["X", "Z"])


async def test_retries_stop_at_max_attempts_and_at_the_deadline() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_base_s=10.0, backoff_max_s=10.0)
    run = make_run(retry=policy)
    always = FakeJob("A", "tcp-a", script=[(1.0, True)])
    run.scheduler.enqueue([always])
    await run.clock.run(run.scheduler.run())
    assert always.attempts == 3

    policy = RetryPolicy(max_attempts=100, backoff_base_s=10.0, backoff_max_s=10.0)
    run = make_run(retry=policy, deadline=40.0, seed=5)
    job = FakeJob("A", "tcp-a", script=[(1.0, True)])
    run.scheduler.enqueue([job])
    await run.clock.run(run.scheduler.run())
    # the same sessions, replayed: a retry is scheduled while it starts by the deadline
    rng, t, expected = random.Random(5), 0.0, [0.0]
    for n in itertools.count(1):
        at = t + 1.0 + backoff_delay(rng, n, 10.0, 10.0)
        if at > 40.0:
            break
        expected.append(at)
        t = at
    assert len(expected) >= 3
    assert [s for _, s, _ in run.sessions] == pytest.approx(expected)


async def test_retry_time_refuses_a_start_after_the_deadline() -> None:
    run = make_run(retry=RetryPolicy(max_attempts=5, backoff_base_s=4.0, backoff_max_s=4.0))
    run.clock.t = 100.0
    got = run.scheduler.retry_time(1, deadline=200.0)
    assert got is not None
    at, delay = got
    assert 2.0 <= delay <= 4.0 and at == 100.0 + delay
    assert run.scheduler.retry_time(1, deadline=101.9) is None  # even the shortest is too late
    assert run.scheduler.retry_time(5, deadline=1e9) is None  # no attempts left


async def test_stop_starts_nothing_new_and_cancels_after_the_grace() -> None:
    run = make_run(concurrency=2, grace=5.0)
    long = FakeJob("long", "tcp-1", script=[(100.0, False)])
    short = FakeJob("short", "tcp-2", script=[(3.0, False)])
    waiting = [FakeJob(f"W{i}", f"tcp-w{i}", script=[(1.0, False)]) for i in range(2)]
    run.scheduler.enqueue([long, short, *waiting])

    async def stop_at(t: float) -> None:
        await run.clock.sleep(t)
        run.scheduler.stop()

    async def both() -> None:
        await asyncio.gather(run.scheduler.run(), stop_at(2.0))

    await run.clock.run(both())
    ends = {m: e for m, _, e in run.sessions}
    assert ends["short"] == 3.0  # finished within the grace
    assert ends["long"] == 7.0  # cancelled when the grace ran out: stop at 2 + 5
    assert {m for m, _, _ in run.sessions} == {"long", "short"}  # nothing new after the stop
    # the cancelled job stays queued (reported incomplete), so do the never-started ones
    assert sorted(j.meter_id for j in run.scheduler.pending()) == ["W0", "W1", "long"]
    assert run.stats.in_flight == 0


async def test_pause_waits_for_the_window_unless_stopped() -> None:
    run = make_run()

    async def paused() -> float:
        await run.scheduler.pause(300.0)
        return run.clock()

    assert await run.clock.run(paused()) == 300.0

    run = make_run()

    async def stopped() -> float:
        async def stop_soon() -> None:
            await run.clock.sleep(10.0)
            run.scheduler.stop()

        await asyncio.gather(run.scheduler.pause(300.0), stop_soon())
        return run.clock()

    assert await run.clock.run(stopped()) == 10.0


def _group(name: str, start: timedelta, deadline: timedelta) -> Group:
    return Group(
        name, {}, ProfilePlan("1.0.99.1.0.255", 900, {2: "x"}), (), Window(start, deadline), 0
    )


def test_window_deadlines_and_delay() -> None:
    day = date(2024, 3, 1)
    groups = [
        _group("early", timedelta(minutes=5), timedelta(hours=6)),
        _group("late", timedelta(hours=1), timedelta(hours=8)),
    ]
    midnight = datetime(2024, 3, 2, tzinfo=UTC)
    # before the windows: deadlines on the clock, and the wait until the first opens
    now = midnight - timedelta(minutes=10)
    assert window_delay(groups, day, UTC, now) == 15 * 60
    got = window_deadlines(groups, day, UTC, now, clock_now=1000.0)
    assert got == {"early": 1000.0 + 10 * 60 + 6 * 3600, "late": 1000.0 + 10 * 60 + 8 * 3600}
    # after a window's deadline (catch-up run): the window's length from now
    now = midnight + timedelta(hours=7)
    assert window_delay(groups, day, UTC, now) < 0
    got = window_deadlines(groups, day, UTC, now, clock_now=50.0)
    assert got["early"] == 50.0 + (6 * 3600 - 5 * 60)
    assert got["late"] == 50.0 + 3600  # still inside: its own deadline, one hour away


async def test_the_default_clock_is_the_loop_time() -> None:
    async def never(job: FakeJob) -> float | None:
        raise AssertionError("not run")

    scheduler: LinkScheduler[FakeJob] = LinkScheduler(
        never, Stats(), concurrency=1, retry=RetryPolicy()
    )
    loop = asyncio.get_running_loop()
    before = loop.time()
    assert before <= scheduler.now() <= loop.time()
