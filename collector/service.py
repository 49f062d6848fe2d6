"""The collection service: read every meter of the inventory for one day, and prove it.

One asyncio process drives many sessions at once, under two rules:

* a global limit of sessions in flight (``concurrency``);
* exactly one session at a time per link (``link_id``: an RS-485 bus or terminal-server port is
  one half-duplex line; a TCP meter is its own link).

Links, not meters, are scheduled: a link with pending meters waits in a ready heap ordered by
(when its next meter may start, most pending meters first), so long buses start early and get
straight back in line after each session and never sit idle behind thousands of TCP meters.

For each meter the service asks storage which load-profile intervals are still missing (the
collected day and ``back_days`` before it, per channel) and reads only those ranges by selective
access; a meter whose days are complete is not contacted. What a session reads is stored as soon
as it arrives (idempotent inserts), with a coverage range for each range the meter answered in
full, clipped to the meter's own clock, so a day with an outage gap still counts as complete and
an interval the meter had not yet closed is asked again later. Every session is recorded as a
read attempt. Transient failures (``exc.transient``) are retried with exponential backoff and
jitter until the window deadline or ``max_attempts``; permanent ones are recorded and not
retried.

Meters whose ``security_profile`` is ``hls-gmac-suite0`` are read over HLS-GMAC with suite-0
ciphering: their keys come from the encrypted key store (opened once per run, with the master
key), and each session gets a fresh :class:`~protocols.security.SecurityContext` whose
invocation counters are reserved in the database before the session starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from collector import gap_planner
from collector.batching import Batcher
from collector.jobs import MeterJob, log, log_event
from collector.plan import Group, Plan
from collector.profile_reader import PlanMismatch, Readout, read_meter
from collector.recorder import Outcome, Publish, Recorder, SessionResult, link_figures
from collector.session import Session
from collector.transport import open_transport
from contracts.meters import SECURE_PROFILE, MeterTarget
from protocols.errors import DlmsError
from protocols.security import SecurityContext
from storage.database import Database
from storage.errors import StorageError
from storage.gaps import day_window, expected_epochs
from storage.keystore import (
    DatabaseCounterStore,
    KeyStore,
    KeyStoreError,
    MasterKey,
    load_master_key,
    reserve_counter_blocks,
    security_context,
)
from storage.records import (
    MeterRecord,
)

T = TypeVar("T")


class NoSecret(DlmsError):
    """An LLS meter whose password reference resolves to no secret."""

    error_class = "no_secret"


class NoKeys(DlmsError):
    """A secured meter whose keys are not in the key store (or do not open with this master
    key): importing keys, not retrying, fixes it."""

    error_class = "no_keys"


class SessionTimeout(DlmsError):
    """A whole session ran past the per-session limit."""

    transient = True
    error_class = "session_timeout"


class Incomplete(DlmsError):
    """The session worked but intervals are still missing (meter clock not yet past them)."""

    transient = True
    error_class = "incomplete"


def env_secret(ref: str) -> bytes | None:
    """LLS secret of a key-store reference from ``HES_PASSWORD_<REF>`` (REF upper-cased,
    every character other than a letter or digit turned into ``_``)."""
    name = "HES_PASSWORD_" + re.sub(r"[^A-Za-z0-9]", "_", ref).upper()
    value = os.environ.get(name)
    return value.encode() if value is not None else None


@dataclass(slots=True)
class _Link:
    link_id: str
    jobs: list[tuple[float, int, MeterJob]] = field(default_factory=list)
    busy: bool = False


@dataclass(slots=True)
class RunStats:
    """Live figures of a run (read by the progress display)."""

    total: int = 0
    skipped_complete: int = 0
    not_planned: int = 0
    done: int = 0
    complete: int = 0
    failed: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    attempts: int = 0
    retries: int = 0
    intervals_stored: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    final_errors: Counter[str] = field(default_factory=Counter)

    @property
    def success_rate(self) -> float | None:
        """Complete meters among those finished (skipped complete ones count as complete)."""
        finished = self.done + self.skipped_complete
        return (self.complete + self.skipped_complete) / finished if finished else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "skipped_complete": self.skipped_complete,
            "not_planned": self.not_planned,
            "done": self.done,
            "complete": self.complete,
            "failed": self.failed,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "attempts": self.attempts,
            "retries": self.retries,
            "intervals_stored": self.intervals_stored,
            "errors": dict(self.errors),
            "final_errors": dict(self.final_errors),
        }


@dataclass(slots=True)
class RunSummary:
    """What a run did; ``incomplete`` maps unfinished meters to their last error class."""

    run_id: str
    day: date
    stats: RunStats
    incomplete: dict[str, str]
    interrupted: bool
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        rate = self.stats.success_rate
        return {
            "run_id": self.run_id,
            "day": self.day.isoformat(),
            **self.stats.as_dict(),
            "success_rate": rate,
            "incomplete": dict(sorted(self.incomplete.items())),
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
        }


#: ``after_read(session, meter)``: more work in the meter's session once its read succeeded
#: (clock sync, event logs: ``collector.meter_tasks.MeterTasks``).
AfterRead = Callable[[Session, MeterRecord], Awaitable[None]]


def backoff_delay(rng: random.Random, attempt: int, base: float, cap: float) -> float:
    """Delay before retry ``attempt`` (1 = first retry): equal jitter on an exponential.

    Half the exponential step is fixed, half random, so retries of meters that failed together
    (a cell tower, a terminal server) spread out yet never retry at once.
    """
    step = min(cap, base * 2 ** (attempt - 1))
    return step / 2 + rng.random() * step / 2


def target_of(meter: MeterRecord, plan: Plan) -> MeterTarget:
    """How to reach an inventory meter, with the plan's HDLC timers."""
    return MeterTarget(
        meter.transport,
        host=meter.host,
        port=meter.port,
        device=meter.device,
        physical_address=meter.physical_address,
        logical_address=meter.logical_address,
        client_sap=meter.client_sap,
        authentication="lls" if meter.authentication == "lls" else "none",
        frame_timeout=plan.timeouts.hdlc_frame_s,
        retries=plan.timeouts.hdlc_retries,
    )


class Collector:
    """One collection run over a set of meters for one day (plus back-days)."""

    def __init__(
        self,
        db: Database,
        plan: Plan,
        day: date,
        *,
        run_id: str | None = None,
        concurrency: int | None = None,
        once: bool = False,
        seed: int | None = None,
        secrets: Callable[[str], bytes | None] = env_secret,
        publish: Publish | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        stop_grace_s: float = 5.0,
        db_threads: int = 4,
        link_turnaround_s: float = 0.05,
        wait_for_window: bool = True,
        after_read: AfterRead | None = None,
        master_key: Callable[[], MasterKey] = load_master_key,
    ) -> None:
        self.db = db
        self.master_key = master_key
        self._keystore: KeyStore | None = None
        self.after_read = after_read
        self.plan = plan
        self.day = day
        self.run_id = run_id or f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency or plan.concurrency
        self.once = once
        self.rng = random.Random(seed)
        self.secrets = secrets
        self.publish = publish
        self.now = now
        self.stop_grace_s = stop_grace_s
        self.link_turnaround_s = link_turnaround_s
        self.wait_for_window = wait_for_window
        self.stats = RunStats()
        self.tz = plan.tz
        self._executor = ThreadPoolExecutor(max_workers=db_threads, thread_name_prefix="hes-db")
        self._links: dict[str, _Link] = {}
        self._ready: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._recorder = Recorder(
            db.store_sessions,
            self._executor,
            run_id=self.run_id,
            day=day,
            publish=publish,
            on_stored=self._count_stored,
        )
        self._contexts: Batcher[str, SecurityContext | NoKeys] = Batcher(
            self._security_batch, self._executor
        )
        self._stopping = False
        self._fatal: BaseException | None = None
        self._incomplete: dict[str, str] = {}
        self._shared_links: set[str] = set()

    # -- public ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Start no new session; in-flight ones get ``stop_grace_s`` to finish."""
        if not self._stopping:
            log_event(logging.WARNING, "stop_requested", run_id=self.run_id)
        self._stopping = True
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def run(self, meters: Sequence[MeterRecord] | None = None) -> RunSummary:
        """Collect; returns when every meter is complete or given up, or after :meth:`stop`."""
        started = time.monotonic()
        try:
            if meters is None:
                meters = await self._db(self.db.meters)
            if any(m.security_profile == SECURE_PROFILE for m in meters):
                # Raises KeyStoreError (no/bad master key) before any session starts.
                self._keystore = KeyStore(self.db, await self._db(self.master_key))
            jobs = await self._db(self._plan_jobs, list(meters), self._deadline())
            await self._wait_window()
            self._enqueue(jobs)
            log_event(
                logging.INFO,
                "run_start",
                run_id=self.run_id,
                day=self.day.isoformat(),
                meters=self.stats.total,
                to_read=len(jobs),
                skipped_complete=self.stats.skipped_complete,
                links=len(self._links),
                concurrency=self.concurrency,
            )
            self._recorder.start()
            self._contexts.start()
            await self._dispatch()
            await self._drain()
        finally:
            await self._contexts.close()
            await self._recorder.close()
            await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(self._executor.shutdown, wait=True)
            )
        if self._fatal is not None:
            raise self._fatal
        for link in self._links.values():
            for _, _, job in link.jobs:
                self._incomplete.setdefault(
                    job.meter.meter_id, job.last_error_class or "not_attempted"
                )
        summary = RunSummary(
            self.run_id,
            self.day,
            self.stats,
            self._incomplete,
            self._stopping,
            time.monotonic() - started,
        )
        log_event(logging.INFO, "run_end", **summary.as_dict())
        return summary

    # -- planning -------------------------------------------------------------------------

    def _days(self, group: Group) -> list[date]:
        return [self.day - timedelta(days=k) for k in range(group.back_days, -1, -1)]

    def _plan_jobs(
        self, meters: list[MeterRecord], loop_deadline: dict[str, float]
    ) -> list[MeterJob]:
        """Which meters need reading, from storage: one grouped count per group and day."""
        by_group: dict[str, tuple[Group, list[MeterRecord]]] = {}
        self.stats.total = len(meters)
        for meter in meters:
            group = self.plan.group_for(meter)
            if group is None:
                self.stats.not_planned += 1
                self._incomplete[meter.meter_id] = "not_planned"
                continue
            by_group.setdefault(group.name, (group, []))[1].append(meter)
        jobs: list[MeterJob] = []
        for group, members in by_group.values():
            ids = [m.meter_id for m in members]
            period = group.profile.period_s
            counts: dict[date, Mapping[str, int]] = {}
            for d in self._days(group):
                start, end = day_window(d, self.tz)
                counts[d] = self.db.missing_counts(
                    start, end, group.channels, period, meter_ids=ids
                )
            hints = gap_planner.days_to_read(ids, counts)
            for meter in members:
                hint = hints.get(meter.meter_id)
                if not hint:
                    self.stats.skipped_complete += 1
                    continue
                jobs.append(MeterJob(meter, group, sorted(hint), loop_deadline[group.name], hint))
        return jobs

    def _deadline(self) -> dict[str, float]:
        """Per group: the loop time after which no attempt starts.

        Inside the window that is the window's deadline; a catch-up run after it (or a test
        collecting an old day) gets the window's length from now.
        """
        loop = asyncio.get_running_loop()
        now = self.now()
        out: dict[str, float] = {}
        for group in self.plan.groups:
            start, deadline = group.window.bounds(self.day, self.tz)
            if now >= deadline:
                deadline = now + (deadline - start)
            out[group.name] = loop.time() + (deadline - now).total_seconds()
        return out

    async def _wait_window(self) -> None:
        """Before the window opens the meters may not have closed the day's last interval."""
        if not self.wait_for_window:
            return
        starts = [g.window.bounds(self.day, self.tz)[0] for g in self.plan.groups]
        delay = (min(starts) - self.now()).total_seconds()
        if delay > 0:
            log_event(logging.INFO, "waiting_for_window", seconds=round(delay, 1))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _enqueue(self, jobs: list[MeterJob]) -> None:
        for job in jobs:
            link = self._links.get(job.meter.link_id)
            if link is None:
                link = self._links[job.meter.link_id] = _Link(job.meter.link_id)
            heapq.heappush(link.jobs, (0.0, next(self._seq), job))
        for link in self._links.values():
            if len(link.jobs) > 1 or any(j.meter.transport != "tcp" for _, _, j in link.jobs):
                self._shared_links.add(link.link_id)
            self._push_ready(link)

    def _push_ready(self, link: _Link) -> None:
        ready_at = link.jobs[0][0]
        heapq.heappush(self._ready, (ready_at, -len(link.jobs), next(self._seq), link.link_id))

    # -- scheduling -----------------------------------------------------------------------

    async def _sleep_until_woken(self, timeout: float | None) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if not self._ready:
                if not self._tasks:
                    return
                await self._sleep_until_woken(None)
                continue
            if self.stats.in_flight >= self.concurrency:
                await self._sleep_until_woken(None)
                continue
            delay = self._ready[0][0] - loop.time()
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
            task = asyncio.create_task(self._run_job(link, job), name=f"meter {job.meter.meter_id}")
            self._tasks.add(task)

    async def _drain(self) -> None:
        """After a stop: let in-flight sessions finish for a while, then cancel them."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.stop_grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _run_job(self, link: _Link, job: MeterJob) -> None:
        loop = asyncio.get_running_loop()
        retry_at: float | None = None
        try:
            retry_at = await self._attempt(job)
        except asyncio.CancelledError:
            job.last_error_class = "cancelled"
            raise
        except StorageError as exc:
            self._fatal = exc
            self.stop()
        except Exception as exc:  # a bug: keep the run going, say what happened
            log.exception("internal error reading %s", job.meter.meter_id)
            job.last_error_class, job.last_error = "internal", repr(exc)
            self._finish(job, complete=False)
        finally:
            self.stats.in_flight -= 1
            if retry_at is not None:
                job.not_before = retry_at
                heapq.heappush(link.jobs, (retry_at, next(self._seq), job))
            elif self._stopping and job.last_error_class == "cancelled":
                heapq.heappush(link.jobs, (loop.time(), next(self._seq), job))
            if link.link_id in self._shared_links and self.link_turnaround_s > 0:
                # A terminal server notices the previous client's disconnect a moment later.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(self.link_turnaround_s)
            link.busy = False
            if link.jobs:
                self._push_ready(link)
            # Last: the dispatcher ends when no task runs and no link is ready.
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            self._wake.set()

    def _finish(self, job: MeterJob, complete: bool) -> None:
        self.stats.done += 1
        if complete:
            self.stats.complete += 1
            self._incomplete.pop(job.meter.meter_id, None)
        else:
            self.stats.failed += 1
            cls = job.last_error_class or "unknown"
            self.stats.final_errors[cls] += 1
            self._incomplete[job.meter.meter_id] = cls

    # -- one session ----------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def _security_batch(self, meter_ids: Sequence[str]) -> list[SecurityContext | NoKeys]:
        """Fresh contexts for a batch of secured sessions, their counter blocks reserved in
        one committed transaction (blocking IO: runs on a storage thread). Key store
        problems become :class:`NoKeys`, whose message names the meter, never a key."""
        out: list[SecurityContext | NoKeys] = []
        blocks: list[tuple[DatabaseCounterStore, int]] = []
        held: list[SecurityContext] = []
        for meter_id in meter_ids:
            if self._keystore is None:
                out.append(NoKeys(f"meter {meter_id} is secured but the run opened no key store"))
                continue
            try:
                ctx = security_context(self._keystore, meter_id)
            except KeyStoreError as exc:
                out.append(NoKeys(str(exc)))
                continue
            assert isinstance(ctx.counters, DatabaseCounterStore)
            blocks.append((ctx.counters, ctx.counter_block))
            held.append(ctx)
            out.append(ctx)
        for ctx, start in zip(held, reserve_counter_blocks(self.db, blocks), strict=True):
            ctx.hold_block(start)
        return out

    def _missing(self, job: MeterJob) -> list[tuple[int, int]]:
        """Epoch (first, last) ranges to ask for, over every channel and day of the job."""
        meter_id = job.meter.meter_id
        period = job.group.profile.period_s

        def expected(d: date) -> Sequence[int]:
            return expected_epochs(*day_window(d, self.tz), period)

        def missing(channel: str, d: date) -> list[tuple[datetime, datetime]]:
            return self.db.missing_intervals(meter_id, channel, *day_window(d, self.tz), period)

        return gap_planner.ranges_to_read(
            job.days,
            expected,
            job.group.channels,
            period,
            missing,
            job.missing_hint if job.attempts == 0 else None,
        )

    async def _attempt(self, job: MeterJob) -> float | None:
        """One session with the meter; returns the loop time to retry at, or None (done)."""
        loop = asyncio.get_running_loop()
        meter = job.meter
        ranges = await self._db(self._missing, job)
        if not ranges and (job.registers_done or not job.group.registers):
            self._finish(job, complete=True)
            return None
        started = self.now()
        job.attempts += 1
        self.stats.attempts += 1
        if job.attempts > 1:
            self.stats.retries += 1
        transport = None
        error: DlmsError | None = None
        out = Readout()
        try:
            password: bytes | None = None
            if meter.authentication == "lls":
                ref = meter.password_ref or ""
                password = self.secrets(ref) if ref else None
                if password is None:
                    raise NoSecret(f"no secret for ref {ref!r} (set HES_PASSWORD_<REF>)")
            security = None
            if meter.security_profile == SECURE_PROFILE:
                got = await self._contexts.submit(meter.meter_id)
                if isinstance(got, NoKeys):
                    raise got
                security = got
            transport = open_transport(target_of(meter, self.plan))
            try:
                async with asyncio.timeout(self.plan.timeouts.session_s):
                    async with Session(
                        transport,
                        authentication="hls-gmac"
                        if security is not None
                        else "lls"
                        if meter.authentication == "lls"
                        else "none",
                        password=password,
                        request_timeout=self.plan.timeouts.request_s,
                        security=security,
                    ) as session:
                        await read_meter(
                            session,
                            meter.meter_id,
                            job.group,
                            ranges,
                            out,
                            registers_done=job.registers_done,
                            tz=self.tz,
                            now=self.now,
                        )
                        if self.after_read is not None:
                            await self.after_read(session, meter)
            except TimeoutError:
                raise SessionTimeout(
                    f"session longer than {self.plan.timeouts.session_s:g} s"
                ) from None
        except DlmsError as exc:
            error = exc
        except ValueError as exc:  # an inventory row the target cannot use
            error = PlanMismatch(f"cannot reach meter: {exc}")
        except asyncio.CancelledError:
            # what the session read so far is stored all the same
            await self._emit(job, out, started, transport, "failed", "cancelled", "run stopped")
            raise
        if error is None and out.register_errors:
            first = out.register_errors[0]
            await self._emit(
                job,
                out,
                started,
                transport,
                "partial",
                first.error_class,
                "; ".join(str(e) for e in out.register_errors),
                read_through=True,
            )
        elif error is None:
            await self._emit(job, out, started, transport, "ok", None, None, read_through=True)
        else:
            self.stats.errors[error.error_class] += 1
            outcome: Outcome = "partial" if out.intervals or out.registers else "failed"
            await self._emit(job, out, started, transport, outcome, error.error_class, str(error))
        if out.registers and not any(e.transient for e in out.register_errors):
            job.registers_done = True
        if error is None:
            if not out.remaining:
                self._finish(job, complete=True)
                return None
            error = Incomplete(f"{len(out.remaining)} range(s) still missing after the read")
        job.last_error_class, job.last_error = error.error_class, str(error)
        retryable = error.transient
        if retryable and not self.once and not self._stopping:
            if job.attempts < self.plan.retry.max_attempts:
                delay = backoff_delay(
                    self.rng,
                    job.attempts,
                    self.plan.retry.backoff_base_s,
                    self.plan.retry.backoff_max_s,
                )
                at = loop.time() + delay
                if at <= job.deadline:
                    log_event(
                        logging.INFO,
                        "retry_scheduled",
                        meter=meter.meter_id,
                        attempt=job.attempts,
                        error_class=error.error_class,
                        delay_s=round(delay, 3),
                    )
                    return at
        if retryable and self._stopping:
            return loop.time()  # stays queued: reported as incomplete, read by the next run
        self._finish(job, complete=False)
        return None

    async def _emit(
        self,
        job: MeterJob,
        out: Readout,
        started: datetime,
        transport: Any,
        outcome: Outcome,
        error_class: str | None,
        error: str | None,
        *,
        read_through: bool = False,
    ) -> None:
        """The session is over: hand its result to the recorder (storage, then MQTT)."""
        await self._recorder.record(
            SessionResult(
                job,
                out,
                outcome,
                error_class,
                error,
                read_through=read_through,
                complete=read_through and not out.remaining,
                started=started,
                finished=self.now(),
                **link_figures(transport),
            )
        )

    def _count_stored(self, rows: int) -> None:
        self.stats.intervals_stored += rows
