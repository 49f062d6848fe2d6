"""The link scheduler: which meter's session starts when.

Why its own module: the rules of a collection run's timing (a global cap on sessions in
flight, one session at a time per line, retries at their backoff time, the window's deadline,
a stop with a grace period) are easy to get subtly wrong and slow to prove with real meters;
here they run against an injectable clock (``clock``, a monotonic time, and ``sleep``), so a
test drives them with a fake clock and no real waiting.

Links, not meters, are scheduled: a link with pending jobs waits in a ready heap ordered by
(when its next job may start, most pending jobs first), so long buses start early, get straight
back in line after each session and never sit idle behind thousands of TCP meters. An RS-485
bus or terminal-server port is one half-duplex line (``link_id``): one session at a time on it,
with a short turnaround after each, since a terminal server notices the previous client's
disconnect a moment later.

The scheduler knows nothing of DLMS: it runs ``attempt(job)``, which returns the clock time to
retry the job at, or None when the job is done (finished or given up).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Any, Generic, Protocol, TypeVar

from collector.plan import Group, RetryPolicy

#: A monotonic time in seconds (``loop.time``, or a test's fake clock).
Clock = Callable[[], float]
#: ``await sleep(seconds)`` on that clock.
Sleep = Callable[[float], Awaitable[None]]


class Job(Protocol):
    """What the scheduler needs of a job: its line, and where to note its retry time."""

    not_before: float

    @property
    def link_id(self) -> str: ...

    @property
    def shares_line(self) -> bool: ...

    @property
    def meter_id(self) -> str: ...


class FlightStats(Protocol):
    """The live figures the scheduler keeps (``RunStats`` has them)."""

    in_flight: int
    peak_in_flight: int


J = TypeVar("J", bound=Job)


@dataclass(slots=True)
class _Link(Generic[J]):
    link_id: str
    jobs: list[tuple[float, int, J]] = field(default_factory=list)
    busy: bool = False


def backoff_delay(rng: random.Random, attempt: int, base: float, cap: float) -> float:
    """Delay before retry ``attempt`` (1 = first retry): equal jitter on an exponential.

    Half the exponential step is fixed, half random, so retries of meters that failed together
    (a cell tower, a terminal server) spread out yet never retry at once.
    """
    step = min(cap, base * 2 ** (attempt - 1))
    return step / 2 + rng.random() * step / 2


def window_deadlines(
    groups: Iterable[Group], day: date, tz: tzinfo, now: datetime, clock_now: float
) -> dict[str, float]:
    """Per group: the clock time after which no attempt starts.

    Inside the window that is the window's deadline; a catch-up run after it (or a test
    collecting an old day) gets the window's length from now.
    """
    out: dict[str, float] = {}
    for group in groups:
        start, deadline = group.window.bounds(day, tz)
        if now >= deadline:
            deadline = now + (deadline - start)
        out[group.name] = clock_now + (deadline - now).total_seconds()
    return out


def window_delay(groups: Iterable[Group], day: date, tz: tzinfo, now: datetime) -> float:
    """Seconds until the first window opens (negative once it has)."""
    starts = [g.window.bounds(day, tz)[0] for g in groups]
    return (min(starts) - now).total_seconds()


class LinkScheduler(Generic[J]):
    """Runs ``attempt`` for every job: ``concurrency`` at a time, one per link."""

    def __init__(
        self,
        attempt: Callable[[J], Awaitable[float | None]],
        stats: FlightStats,
        *,
        concurrency: int,
        retry: RetryPolicy,
        seed: int | None = None,
        link_turnaround_s: float = 0.05,
        stop_grace_s: float = 5.0,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._attempt = attempt
        self.stats = stats
        self.concurrency = concurrency
        self.retry = retry
        self.rng = random.Random(seed)
        self.link_turnaround_s = link_turnaround_s
        self.stop_grace_s = stop_grace_s
        self._clock = clock
        self._sleep = sleep
        self._links: dict[str, _Link[J]] = {}
        self._ready: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._shared_links: set[str] = set()

    # -- time -----------------------------------------------------------------------------

    def now(self) -> float:
        """The scheduler's clock (the running loop's time unless one was given)."""
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def retry_time(self, attempts: int, deadline: float) -> tuple[float, float] | None:
        """(clock time, delay) of the retry after ``attempts`` sessions, or None: no attempts
        left, or the backoff would start it after ``deadline``."""
        if attempts >= self.retry.max_attempts:
            return None
        delay = backoff_delay(
            self.rng, attempts, self.retry.backoff_base_s, self.retry.backoff_max_s
        )
        at = self.now() + delay
        return (at, delay) if at <= deadline else None

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (the window to open), cut short by :meth:`stop`."""
        await self._sleep_until_woken(seconds)

    # -- jobs -----------------------------------------------------------------------------

    @property
    def link_count(self) -> int:
        return len(self._links)

    def enqueue(self, jobs: Iterable[J]) -> None:
        for job in jobs:
            link = self._links.get(job.link_id)
            if link is None:
                link = self._links[job.link_id] = _Link(job.link_id)
            heapq.heappush(link.jobs, (0.0, next(self._seq), job))
        for link in self._links.values():
            if len(link.jobs) > 1 or any(j.shares_line for _, _, j in link.jobs):
                self._shared_links.add(link.link_id)
            self._push_ready(link)

    def pending(self) -> Iterator[J]:
        """Jobs still queued (after a stop, or at their retry time)."""
        for link in self._links.values():
            for _, _, job in link.jobs:
                yield job

    def _push_ready(self, link: _Link[J]) -> None:
        ready_at = link.jobs[0][0]
        heapq.heappush(self._ready, (ready_at, -len(link.jobs), next(self._seq), link.link_id))

    # -- running --------------------------------------------------------------------------

    def stop(self) -> None:
        """Start no new session; in-flight ones get ``stop_grace_s`` to finish."""
        self._stopping = True
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def run(self) -> None:
        """Until every job is done, or after :meth:`stop` once in-flight sessions ended."""
        await self._dispatch()
        await self._drain()

    async def _within(self, waiting: Awaitable[Any], timeout: float | None) -> None:
        """Await ``waiting`` for at most ``timeout`` seconds of the scheduler's clock."""
        if timeout is None:
            await waiting
            return
        main = asyncio.ensure_future(waiting)
        timer = asyncio.ensure_future(self._sleep(timeout))
        try:
            await asyncio.wait({main, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            main.cancel()
            timer.cancel()

    async def _sleep_until_woken(self, timeout: float | None) -> None:
        self._wake.clear()
        await self._within(self._wake.wait(), timeout)

    async def _dispatch(self) -> None:
        while not self._stopping:
            if not self._ready:
                if not self._tasks:
                    return
                await self._sleep_until_woken(None)
                continue
            if self.stats.in_flight >= self.concurrency:
                await self._sleep_until_woken(None)
                continue
            delay = self._ready[0][0] - self.now()
            if delay > 0:
                await self._sleep_until_woken(delay)
                continue
            _, _, _, link_id = heapq.heappop(self._ready)
            link = self._links[link_id]
            assert not link.busy, f"link {link_id} dispatched twice"
            _, _, job = heapq.heappop(link.jobs)
            link.busy = True
            self.stats.in_flight += 1
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
            task = asyncio.create_task(self._run_job(link, job), name=f"meter {job.meter_id}")
            self._tasks.add(task)

    async def _drain(self) -> None:
        """After a stop: let in-flight sessions finish for a while, then cancel them."""
        if not self._tasks:
            return
        tasks = set(self._tasks)
        await self._within(asyncio.wait(tasks), self.stop_grace_s)
        pending = {t for t in tasks if not t.done()}
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _run_job(self, link: _Link[J], job: J) -> None:
        retry_at: float | None = None
        cancelled = False
        try:
            retry_at = await self._attempt(job)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self.stats.in_flight -= 1
            if retry_at is not None:
                job.not_before = retry_at
                heapq.heappush(link.jobs, (retry_at, next(self._seq), job))
            elif self._stopping and cancelled:
                # stays queued: reported as incomplete, read by the next run
                heapq.heappush(link.jobs, (self.now(), next(self._seq), job))
            if link.link_id in self._shared_links and self.link_turnaround_s > 0:
                # A terminal server notices the previous client's disconnect a moment later.
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sleep(self.link_turnaround_s)
            link.busy = False
            if link.jobs:
                self._push_ready(link)
            # Last: the dispatcher ends when no task runs and no link is ready.
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            self._wake.set()
