"""The collection service: read every meter of the inventory for one day, and prove it.

One asyncio process drives many sessions at once; :class:`Collector` plans a run and runs one
session per meter job, and leaves each concern to its module:

* :mod:`collector.gap_planner`: which intervals are still missing (the collected day and
  ``back_days`` before it, per channel); a meter whose days are complete is not contacted;
* :mod:`collector.scheduler`: when each session starts (concurrency cap, one session at a time
  per link, backoff retries, the window's deadline, stop and grace);
* :mod:`collector.profile_reader`: what a session reads (clock, registers, scalers and the
  missing profile ranges by selective access);
* :mod:`collector.recorder`: what becomes of it (stored as soon as the session ends, with a
  coverage range for each range the meter answered in full, clipped to the meter's own clock,
  and a read attempt; then published to MQTT).

Transient failures (``exc.transient``) are retried until the window deadline or
``max_attempts``; permanent ones are recorded and not retried.

Meters whose ``security_profile`` is ``hls-gmac-suite0`` are read over HLS-GMAC with suite-0
ciphering: their keys come from the encrypted key store (opened once per run, with the master
key), and each session gets a fresh :class:`~protocols.security.SecurityContext` whose
invocation counters are reserved in the database before the session starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from collector import gap_planner
from collector.batching import Batcher
from collector.credentials import with_stored_secrets
from collector.jobs import MeterJob, RunStats, RunSummary, log, log_event
from collector.link_locks import LinkArbiter
from collector.plan import Group, Plan
from collector.profile_reader import PlanMismatch, Readout, read_meter
from collector.recorder import Outcome, Publish, Recorder, SessionResult, link_figures
from collector.scheduler import Clock, LinkScheduler, Sleep, window_deadlines, window_delay
from collector.session import Session
from collector.telemetry import Telemetry
from collector.transport import open_transport
from contracts.meters import SECURE_PROFILE, MeterTarget
from protocols.errors import DlmsError, InvocationCounterRejected
from protocols.iec62056_21 import SignOnRequest
from protocols.security import SecurityContext
from storage.database import Database
from storage.errors import StorageError
from storage.gaps import day_window, expected_epochs
from storage.jobs import SCHEDULED
from storage.keystore import (
    DatabaseCounterStore,
    KeyStore,
    KeyStoreError,
    MasterKey,
    counter_recovery,
    load_master_key,
    reserve_counter_blocks,
    security_context,
)
from storage.records import MeterRecord

T = TypeVar("T")

#: Cyclic-GC thresholds for a collection process (``hes collect`` sets them; the storage
#: bench times the collector's write path with them). A session allocates many short-lived
#: objects that refcounting frees; with the default threshold of 700 the collector ran
#: generation scans constantly, ~18 % of its CPU on a 20,000-meter run (bench/README.md).
GC_THRESHOLDS = (100_000, 50, 100)


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


def lls_password(meter: MeterRecord, secrets: Callable[[str], bytes | None]) -> bytes | None:
    """The LLS secret of the meter's own association (None: it needs none); NoSecret when
    its password reference resolves to nothing."""
    if meter.authentication != "lls":
        return None
    ref = meter.password_ref or ""
    password = secrets(ref) if ref else None
    if password is None:
        raise NoSecret(f"no secret for ref {ref!r} (set HES_PASSWORD_<REF>)")
    return password


#: ``after_read(session, meter)``: more work in the meter's session once its read succeeded
#: (clock sync, event logs: ``collector.meter_tasks.MeterTasks``).
AfterRead = Callable[[Session, MeterRecord], Awaitable[None]]


def target_of(meter: MeterRecord, plan: Plan) -> MeterTarget:
    """How to reach an inventory meter, with the plan's HDLC timers, its meter profile's
    frame sizes, address size and PDU size and, for a serial meter of a mode E group or
    profile, the IEC 62056-21 sign-on (ValueError: the start-up does not fit the meter, or
    the profile is gone or broken)."""
    group = plan.group_for(meter)
    model = plan.meter_profile(meter)
    startup, address, who = "hdlc", "", ""
    if group is not None and group.startup != "hdlc":
        startup, address, who = group.startup, group.device_address, f"group {group.name!r}"
    elif model is not None and model.startup != "hdlc":
        startup, address, who = model.startup, model.device_address, f"profile {model.name!r}"
    if startup != "hdlc":
        if meter.transport != "serial":
            raise ValueError(
                f"{who} has startup {startup!r}, for serial meters; this one is {meter.transport}"
            )
        address = meter.meter_id if address == "meter_id" else ""
        try:
            SignOnRequest(address)
        except ValueError as exc:
            raise ValueError(f"meter_id as the IEC 62056-21 {exc}") from None
    frames: dict[str, Any] = {}
    if model is not None:
        frames = {
            "max_info_length": model.max_info_tx,
            "max_info_rx": model.max_info_rx,
            "window_size": model.window_size,
            "address_size": model.address_size,
            "max_pdu_size": model.max_pdu_size,
            "gbt_window": model.gbt_window,
        }
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
        startup=startup,
        device_address=address,
        **frames,
    )


def session_options(meter: MeterRecord, plan: Plan) -> dict[str, Any]:
    """The :class:`Session` settings of the meter's profile (none without one): PDU size,
    logical or short names, trailing bytes accepted or not, the clock deviation's sign, range
    bounds with a deviation or without."""
    model = plan.meter_profile(meter)
    if model is None:
        return {}
    return {
        "max_pdu_size": model.max_pdu_size,
        "gbt_window": model.gbt_window,
        "referencing": "sn" if model.referencing == "sn" else "ln",
        "accept_trailing": model.accept_trailing_bytes,
        "inverted_deviation": model.inverted_deviation,
        "range_deviation": model.range_deviation,
    }


def failure_detail(error: DlmsError, meter_id: str) -> str:
    """The stored text of a failed session; a refused invocation counter names the step
    that recovers it (the meter's expected counter into the key store)."""
    if isinstance(error, InvocationCounterRejected) and error.expected is not None:
        return f"{error}; {counter_recovery(error.expected, meter_id)}"
    return str(error)


class Collector:
    """One collection run over a set of meters for one day (plus back-days).

    ``clock`` and ``sleep`` are the scheduler's monotonic time and sleep (default: the running
    loop's), injectable so the run's timing can be driven by a fake clock.
    """

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
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        on_wait: Callable[[float, datetime], None] | None = None,
        days: Sequence[date] | None = None,
        until: datetime | None = None,
        refresh: bool = False,
        deadline: datetime | None = None,
        links: LinkArbiter | None = None,
        priority: int = SCHEDULED,
        telemetry: Telemetry | None = None,
        label: str = "",
    ) -> None:
        """The service's jobs use the last group of arguments: ``days`` (instead of the day
        and its group's back-days), ``until`` (intervals stamped from it on are not yet
        expected: an intra-day run), ``refresh`` (contact every meter, complete or not, for
        its registers), ``deadline`` (instead of the window's), ``links`` (the service's
        arbiter, shared with its other jobs, at ``priority``), ``telemetry`` (metrics and
        sessions in flight, named ``label``)."""
        self.db = db
        #: Told (seconds, opening time in the plan's zone) before the run waits for its window.
        self.on_wait = on_wait
        self.master_key = master_key
        self._keystore: KeyStore | None = None
        self.after_read = after_read
        self.plan = plan
        self.day = day
        self.run_id = run_id or f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency or plan.concurrency
        self.once = once
        self.secrets = secrets
        self.publish = publish
        self.now = now
        self.stop_grace_s = stop_grace_s
        self.link_turnaround_s = link_turnaround_s
        self.wait_for_window = wait_for_window
        self.stats = RunStats()
        self.tz = plan.tz
        self._executor = ThreadPoolExecutor(max_workers=db_threads, thread_name_prefix="hes-db")
        self._scheduler: LinkScheduler[MeterJob] = LinkScheduler(
            self._run_job,
            self.stats,
            concurrency=self.concurrency,
            retry=plan.retry,
            seed=seed,
            link_turnaround_s=link_turnaround_s,
            stop_grace_s=stop_grace_s,
            clock=clock,
            sleep=sleep,
        )
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
        self._fatal: BaseException | None = None
        self._incomplete: dict[str, str] = {}
        self.days_override = list(days) if days is not None else None
        self.until = until
        self.refresh = refresh
        self.deadline = deadline
        self.links = links
        self.priority = priority
        self.telemetry = telemetry
        self.label = label or self.run_id
        self._live: dict[str, int] = {}

    # -- public ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Start no new session; in-flight ones get ``stop_grace_s`` to finish."""
        if not self.stopping:
            log_event(logging.WARNING, "stop_requested", run_id=self.run_id)
        self._scheduler.stop()

    @property
    def stopping(self) -> bool:
        return self._scheduler.stopping

    async def run(self, meters: Sequence[MeterRecord] | None = None) -> RunSummary:
        """Collect; returns when every meter is complete or given up, or after :meth:`stop`."""
        started = time.monotonic()
        try:
            if meters is None:
                meters = await self._db(functools.partial(self.db.meters, enabled_only=True))
            self.secrets = await self._db(
                with_stored_secrets, self.secrets, list(meters), self._open_store
            )
            if any(m.security_profile == SECURE_PROFILE for m in meters):
                # Raises KeyStoreError (no/bad master key) before any session starts.
                self._keystore = KeyStore(self.db, await self._db(self.master_key))
            jobs = await self._db(self._plan_jobs, list(meters), self._deadline())
            await self._wait_window()
            self._scheduler.enqueue(jobs)
            log_event(
                logging.INFO,
                "run_start",
                run_id=self.run_id,
                day=self.day.isoformat(),
                meters=self.stats.total,
                to_read=len(jobs),
                skipped_complete=self.stats.skipped_complete,
                links=self._scheduler.link_count,
                concurrency=self.concurrency,
            )
            self._recorder.start()
            self._contexts.start()
            await self._scheduler.run()
        finally:
            await self._contexts.close()
            await self._recorder.close()
            await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(self._executor.shutdown, wait=True)
            )
        if self._fatal is not None:
            raise self._fatal
        for job in self._scheduler.pending():
            self._incomplete.setdefault(job.meter.meter_id, job.last_error_class or "not_attempted")
        summary = RunSummary(
            self.run_id,
            self.day,
            self.stats,
            self._incomplete,
            self.stopping,
            time.monotonic() - started,
        )
        log_event(logging.INFO, "run_end", **summary.as_dict())
        return summary

    # -- planning -------------------------------------------------------------------------

    def _days(self, group: Group) -> list[date]:
        if self.days_override is not None:
            return self.days_override
        return [self.day - timedelta(days=k) for k in range(group.back_days, -1, -1)]

    def _window(self, d: date) -> tuple[datetime, datetime]:
        """The day's expected stamps: midnight to midnight, but not past ``until``."""
        start, end = day_window(d, self.tz)
        if self.until is not None:
            end = max(start, min(end, self.until))
        return start, end

    def _plan_jobs(
        self, meters: list[MeterRecord], loop_deadline: dict[str, float]
    ) -> list[MeterJob]:
        """Which meters need reading, from storage: one grouped count per group and day."""
        by_group: dict[str, tuple[Group, list[MeterRecord]]] = {}
        self.stats.total = len(meters)
        for meter in meters:
            if meter.installed_on is not None and meter.installed_on > self.day:
                self.stats.not_installed += 1
                continue
            try:
                group = self.plan.meter_group(meter)
            except ValueError as exc:  # its meter profile is gone or broken since the import
                log_event(logging.WARNING, "meter_profile", meter=meter.meter_id, detail=str(exc))
                group = None
            if group is None:
                self.stats.not_planned += 1
                self._incomplete[meter.meter_id] = "not_planned"
                continue
            # Meters of one group with different profiles read different channels.
            key = f"{group.name}\0{meter.profile or ''}"
            by_group.setdefault(key, (group, []))[1].append(meter)
        jobs: list[MeterJob] = []
        for group, members in by_group.values():
            ids = [m.meter_id for m in members]
            period = group.profile.period_s
            counts: dict[date, Mapping[str, int]] = {}
            for d in self._days(group):
                start, end = self._window(d)
                counts[d] = self.db.missing_counts(
                    start, end, group.channels, period, meter_ids=ids
                )
            hints = gap_planner.days_to_read(ids, counts)
            for meter in members:
                hint = hints.get(meter.meter_id)
                if hint and meter.installed_on is not None:
                    # days before the meter was installed are not expected of it
                    hint = {d: n for d, n in hint.items() if d >= meter.installed_on}
                if not hint and self.refresh:
                    hint = {}
                elif not hint:
                    self.stats.skipped_complete += 1
                    continue
                jobs.append(MeterJob(meter, group, sorted(hint), loop_deadline[group.name], hint))
        return jobs

    def _deadline(self) -> dict[str, float]:
        """Per group: the scheduler time after which no attempt starts."""
        if self.deadline is not None:
            at = self._scheduler.now() + (self.deadline - self.now()).total_seconds()
            return {g.name: at for g in self.plan.groups}
        return window_deadlines(
            self.plan.groups, self.day, self.tz, self.now(), self._scheduler.now()
        )

    async def _wait_window(self) -> None:
        """Before the window opens the meters may not have closed the day's last interval."""
        if not self.wait_for_window:
            return
        delay = window_delay(self.plan.groups, self.day, self.tz, self.now())
        if delay > 0:
            log_event(logging.INFO, "waiting_for_window", seconds=round(delay, 1))
            if self.on_wait is not None:
                self.on_wait(delay, (self.now() + timedelta(seconds=delay)).astimezone(self.tz))
            await self._scheduler.pause(delay)

    # -- scheduling -----------------------------------------------------------------------

    async def _run_job(self, job: MeterJob) -> float | None:
        """One attempt for the scheduler: the retry time, or None; a storage failure stops
        the run, a bug gives up on the meter and keeps the run going."""
        try:
            return await self._attempt(job)
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
        return None

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

    def _open_store(self) -> KeyStore:
        return KeyStore(self.db, self.master_key())

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
            return expected_epochs(*self._window(d), period)

        def missing(channel: str, d: date) -> list[tuple[datetime, datetime]]:
            return self.db.missing_intervals(meter_id, channel, *self._window(d), period)

        return gap_planner.ranges_to_read(
            job.days,
            expected,
            job.group.channels,
            period,
            missing,
            job.missing_hint if job.attempts == 0 else None,
        )

    async def _attempt(self, job: MeterJob) -> float | None:
        """One session with the meter; returns the scheduler time to retry at, or None."""
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
            password = lls_password(meter, self.secrets)
            security = None
            if meter.security_profile == SECURE_PROFILE:
                got = await self._contexts.submit(meter.meter_id)
                if isinstance(got, NoKeys):
                    raise got
                security = got
            async with self._line(job):
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
                            **session_options(meter, self.plan),
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
                            for warning in session.warnings:
                                log_event(
                                    logging.WARNING,
                                    "meter_warning",
                                    meter=meter.meter_id,
                                    detail=warning,
                                )
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
            detail = failure_detail(error, meter.meter_id)
            await self._emit(job, out, started, transport, outcome, error.error_class, detail)
        if out.registers and not any(e.transient for e in out.register_errors):
            job.registers_done = True
        if error is None:
            if not out.remaining:
                self._finish(job, complete=True)
                return None
            error = Incomplete(f"{len(out.remaining)} range(s) still missing after the read")
        job.last_error_class, job.last_error = error.error_class, str(error)
        retryable = error.transient
        if retryable and not self.once and not self.stopping:
            retry = self._scheduler.retry_time(job.attempts, job.deadline)
            if retry is not None:
                at, delay = retry
                log_event(
                    logging.INFO,
                    "retry_scheduled",
                    meter=meter.meter_id,
                    attempt=job.attempts,
                    error_class=error.error_class,
                    delay_s=round(delay, 3),
                )
                return at
        if retryable and self.stopping:
            return self._scheduler.now()  # stays queued: reported as incomplete, next run
        self._finish(job, complete=False)
        return None

    @contextlib.asynccontextmanager
    async def _line(self, job: MeterJob) -> AsyncIterator[None]:
        """The meter's link for one session (the service's arbiter, when there is one), and
        the session in flight for the telemetry until :meth:`_emit` ends it."""
        hold = (
            self.links.hold(job.link_id, self.priority, job.shares_line)
            if self.links is not None
            else contextlib.nullcontext()
        )
        async with hold:
            if self.telemetry is not None:
                self._live[job.meter_id] = self.telemetry.session_started(
                    job.link_id, job.meter_id, self.label, job.shares_line
                )
            yield

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
        figures = link_figures(transport)
        handle = self._live.pop(job.meter_id, None)
        if handle is not None and self.telemetry is not None:
            self.telemetry.session_ended(
                handle,
                outcome,
                error_class,
                round_trips=figures["round_trips"],
                bytes_tx=figures["bytes_tx"],
                bytes_rx=figures["bytes_rx"],
            )
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
                **figures,
            )
        )

    def _count_stored(self, rows: int) -> None:
        self.stats.intervals_stored += rows
