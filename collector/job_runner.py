"""Run one stored job of the service, by kind, and say how it ended.

Why a module of its own: the daemon decides *when* a job runs (schedules, priorities,
slots, stop); this decides *what* running it means, with the collector's own parts:

* ``collect`` and ``read``: a :class:`~collector.service.Collector` run over the job's meters
  (or the group's enabled meters) with the service's link arbiter and telemetry, so the
  one-session-per-bus rule and the metrics hold across jobs. ``read`` is on demand: every
  named meter is contacted (registers and clock now, the range's missing intervals);
* ``events`` and ``clock_sync``: one session per meter for :class:`~collector.meter_tasks.
  MeterTasks` (public-client meters are skipped: they may neither read logs nor set the
  clock on most meters);
* ``disconnect`` and ``reconnect``: :func:`~collector.operations.run_command`, which
  confirms each relay by reading it back and audits each meter;
* ``firmware``: :func:`~collector.firmware.upload_many` of the image file named by
  ``params.image`` (on the service's host) to the job's meters, each confirmed by its
  active firmware identifier; a meter cut off mid-transfer resumes in the next session;
* ``push_setup``: :func:`~collector.push_setup.run_many`: SET the push setup's destination,
  windows and objects the params name (none: only read), push if ``params.trigger``, and
  store what each meter reads back (what the push listener decodes values-only pushes by).

While a job runs its progress is written and a cancel request (``POST /api/jobs/{id}/cancel``)
stops it: sessions in flight finish, no new one starts. A stop of the service leaves the
job ``running`` for the daemon to put back in the queue (:class:`JobStopped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from collector.clock_sync import DEFAULT_THRESHOLD_S
from collector.credentials import contexts_from, fresh_context, with_stored_secrets
from collector.firmware import MAX_IMAGE_BYTES, UploadReport, upload_many
from collector.image_transfer import FirmwareImage
from collector.job_queue import JobQueue
from collector.jobs import log_event
from collector.link_locks import LinkArbiter
from collector.meter_tasks import MeterTasks
from collector.operations import run_command
from collector.plan import Plan
from collector.push_setup import job_change
from collector.push_setup import run_many as run_push_setups
from collector.recorder import Publish
from collector.service import (
    Collector,
    SessionTimeout,
    env_secret,
    lls_password,
    session_options,
    target_of,
)
from collector.session import Session
from collector.telemetry import Telemetry
from collector.transport import open_transport
from contracts.meters import SECURE_PROFILE
from protocols.errors import DlmsError
from protocols.security import SecurityContext
from storage.database import Database
from storage.jobs import JobRecord
from storage.keystore import (
    KeyStore,
    KeyStoreError,
    MasterKey,
    load_master_key,
)
from storage.records import MeterRecord

#: Meters of an incomplete job listed in its result (the others are counted).
WORST = 20
#: Up to this many named meters are looked up one by one, not by reading the inventory.
FEW_METERS = 100
#: Days a ``read`` job's profile range may span.
MAX_READ_DAYS = 31


class JobStopped(Exception):
    """The service stopped while the job ran: it goes back to the queue, not to an end."""


class JobFailed(Exception):
    """The job could not run at all (a meter it names is unknown, no group, no keys)."""


@dataclass(frozen=True, slots=True)
class JobOutcome:
    state: str  # done | failed | cancelled
    result: Any
    error: str | None = None


class JobRunner:
    """Runs jobs of every kind against one database and plan."""

    def __init__(
        self,
        db: Database,
        plan: Plan,
        *,
        queue: JobQueue,
        telemetry: Telemetry,
        links: LinkArbiter,
        publish: Publish | None = None,
        secrets: Callable[[str], bytes | None] = env_secret,
        master_key: Callable[[], MasterKey] = load_master_key,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        concurrency: int | None = None,
        poll_s: float = 1.0,
        clock_threshold_s: float = DEFAULT_THRESHOLD_S,
    ) -> None:
        self.db = db
        self.plan = plan
        self.queue = queue
        self.telemetry = telemetry
        self.links = links
        self.publish = publish
        self.secrets = secrets
        self.master_key = master_key
        self.now = now
        self.concurrency = concurrency or plan.concurrency
        self.poll_s = poll_s
        self.clock_threshold_s = clock_threshold_s
        self._stopping = asyncio.Event()
        self._stops: set[Callable[[], None]] = set()
        self._job_stops: dict[int, Callable[[], None]] = {}
        #: Jobs given up (their lease lost): they end as :class:`JobStopped`.
        self._abandoned: set[int] = set()

    def stop(self) -> None:
        """Running jobs start no new session; each ends as :class:`JobStopped`."""
        self._stopping.set()
        for stop in list(self._stops):
            stop()

    def abandon(self, job_id: int) -> None:
        """One job starts no new session and ends as :class:`JobStopped` (a cluster node
        that lost its lease: the job is another node's now)."""
        self._abandoned.add(job_id)
        stop = self._job_stops.get(job_id)
        if stop is not None:
            stop()

    def _stopped(self, job: JobRecord) -> bool:
        return self._stopping.is_set() or job.id in self._abandoned

    async def run(self, job: JobRecord) -> JobOutcome:
        """Run ``job`` to its end; raises :class:`JobStopped` when the service stops first."""
        try:
            if job.id in self._abandoned:
                raise JobStopped(job.id)
            meters = await asyncio.to_thread(self._meters, job)
            if job.kind in ("collect", "read"):
                return await self._collect(job, meters)
            if job.kind in ("events", "clock_sync"):
                return await self._tasks(job, meters)
            if job.kind == "firmware":
                return await self._firmware(job, meters)
            if job.kind == "push_setup":
                return await self._push_setup(job, meters)
            return await self._command(job, meters)
        except JobFailed as exc:
            return JobOutcome("failed", None, str(exc))
        finally:
            self._abandoned.discard(job.id)

    # -- which meters ---------------------------------------------------------------------

    def _meters(self, job: JobRecord) -> list[MeterRecord]:
        group_name = job.params.get("group")
        if group_name is not None and not any(g.name == group_name for g in self.plan.groups):
            raise JobFailed(f"the plan has no group {group_name!r}")
        if job.meters is None:
            meters = self.db.meters(enabled_only=True)
        else:
            if len(job.meters) <= FEW_METERS:  # an operator's request: look them up one by one
                found = {m: rec for m in job.meters if (rec := self.db.get_meter(m)) is not None}
            else:
                wanted = set(job.meters)
                found = {m.meter_id: m for m in self.db.meters() if m.meter_id in wanted}
            unknown = [m for m in job.meters if m not in found]
            if unknown:
                raise JobFailed(f"unknown meter(s): {', '.join(unknown[:10])}")
            meters = [found[m] for m in job.meters]
        if group_name is not None:
            meters = [m for m in meters if (g := self.plan.group_for(m)) and g.name == group_name]
        return meters

    # -- collect / read -------------------------------------------------------------------

    def _read_days(self, job: JobRecord) -> tuple[date, list[date] | None]:
        tz = self.plan.tz
        if job.kind == "collect":
            return date.fromisoformat(job.params["day"]), None
        window = job.params.get("profile")
        if window is None:
            today = self.now().astimezone(tz).date()
            return today, [today]
        first = datetime.fromisoformat(window["from"]).astimezone(tz).date()
        last = (datetime.fromisoformat(window["to"]) - timedelta(microseconds=1)).astimezone(tz)
        days = [first + timedelta(days=k) for k in range((last.date() - first).days + 1)]
        if len(days) > MAX_READ_DAYS:
            raise JobFailed(f"a read spans at most {MAX_READ_DAYS} days, not {len(days)}")
        return days[-1], days

    async def _collect(self, job: JobRecord, meters: list[MeterRecord]) -> JobOutcome:
        day, days = self._read_days(job)
        until = job.params.get("until")
        on_demand = job.kind == "read"
        until_at: datetime | None
        if on_demand:
            until_at = self.now()
        else:
            until_at = datetime.fromisoformat(until) if until is not None else None
        collector = Collector(
            self.db,
            self.plan,
            day,
            run_id=f"job-{job.id}",
            concurrency=self.concurrency,
            secrets=self.secrets,
            publish=self.publish,
            now=self.now,
            wait_for_window=False,
            master_key=self.master_key,
            days=days,
            until=until_at,
            refresh=bool(job.params.get("refresh", False))
            or (on_demand and job.params.get("registers", True)),
            deadline=job.deadline,
            links=self.links,
            priority=job.priority,
            telemetry=self.telemetry,
            label=f"job {job.id} {job.kind}",
        )

        def progress() -> tuple[int, int]:
            stats = collector.stats
            return stats.done + stats.skipped_complete, stats.total

        summary = await self._watch(job, collector.run(meters), collector.stop, progress)
        result = summary.as_dict(WORST)
        if summary.interrupted and self._stopped(job):
            raise JobStopped(job.id)
        if summary.interrupted:
            return JobOutcome("cancelled", result, "cancelled on request")
        if on_demand and summary.incomplete:
            return JobOutcome("failed", result, _incomplete_text(summary.incomplete))
        return JobOutcome("done", result)

    # -- events / clock sync --------------------------------------------------------------

    async def _tasks(self, job: JobRecord, meters: list[MeterRecord]) -> JobOutcome:
        tasks = MeterTasks(
            self.db,
            clock_threshold_s=self.clock_threshold_s if job.kind == "clock_sync" else None,
            events=job.kind == "events",
            publish=self.publish,
            now=self.now,
        )
        keystore = None
        if any(m.security_profile == SECURE_PROFILE for m in meters):
            keystore = KeyStore(self.db, await asyncio.to_thread(self.master_key))
        secrets = await asyncio.to_thread(with_stored_secrets, self.secrets, meters, self._store)
        failures: dict[str, str] = {}
        skipped = [m.meter_id for m in meters if m.authentication == "none"]
        todo = [m for m in meters if m.authentication != "none"]
        done = 0
        stopped = asyncio.Event()
        limit = asyncio.Semaphore(max(1, self.concurrency))

        async def one(meter: MeterRecord) -> None:
            nonlocal done
            async with limit:
                if stopped.is_set():
                    failures.setdefault(meter.meter_id, "not_attempted")
                    return
                error = await self._task_session(job, meter, tasks, keystore, secrets)
                if error is not None:
                    failures[meter.meter_id] = error
                done += 1

        async def all_meters() -> None:
            await asyncio.gather(*(one(m) for m in todo))

        await self._watch(job, all_meters(), stopped.set, lambda: (done, len(todo)))
        if stopped.is_set() and self._stopped(job):
            raise JobStopped(job.id)
        result = {
            "meters": len(meters),
            "skipped_public": len(skipped),
            "sessions": tasks.stats.sessions,
            **tasks.stats.as_dict(),
            "failed": dict(sorted(failures.items())[:WORST]),
            "failed_count": len(failures),
        }
        if stopped.is_set():
            return JobOutcome("cancelled", result, "cancelled on request")
        return JobOutcome("done", result)

    async def _task_session(
        self,
        job: JobRecord,
        meter: MeterRecord,
        tasks: MeterTasks,
        keystore: KeyStore | None,
        secrets: Callable[[str], bytes | None],
    ) -> str | None:
        """One session for the meter's tasks; the error class, or None when it worked."""
        errors_before = sum(tasks.stats.errors.values())
        shared = meter.transport != "tcp"
        try:
            password = lls_password(meter, secrets)
            security = None
            if meter.security_profile == SECURE_PROFILE and keystore is not None:
                security = await asyncio.to_thread(self._security, keystore, meter.meter_id)
            async with self.links.hold(meter.link_id, job.priority, shared):
                handle = self.telemetry.session_started(
                    meter.link_id, meter.meter_id, f"job {job.id} {job.kind}", shared
                )
                outcome = "failed"
                error_class: str | None = "internal"
                transport = open_transport(target_of(meter, self.plan))
                try:
                    async with asyncio.timeout(self.plan.timeouts.session_s):
                        async with Session(
                            transport,
                            authentication="hls-gmac" if security is not None else "lls",
                            password=password,
                            request_timeout=self.plan.timeouts.request_s,
                            security=security,
                            **session_options(meter, self.plan),
                        ) as session:
                            await tasks(session, meter)
                    failed_task = sum(tasks.stats.errors.values()) > errors_before
                    outcome = "partial" if failed_task else "ok"
                    error_class = "task_failed" if failed_task else None
                except TimeoutError:
                    error_class = SessionTimeout.error_class
                    raise SessionTimeout(
                        f"session longer than {self.plan.timeouts.session_s:g} s"
                    ) from None
                except DlmsError as exc:
                    error_class = exc.error_class
                    raise
                finally:
                    stats = getattr(transport, "stats", None)
                    self.telemetry.session_ended(
                        handle,
                        outcome,
                        error_class,
                        round_trips=stats.round_trips if stats else 0,
                        bytes_tx=stats.bytes_tx if stats else 0,
                        bytes_rx=stats.bytes_rx if stats else 0,
                    )
            return error_class
        except DlmsError as exc:
            return exc.error_class
        except (ValueError, OSError) as exc:
            log_event(logging.WARNING, "task_session_failed", meter=meter.meter_id, error=str(exc))
            return "link"

    def _security(self, keystore: KeyStore, meter_id: str) -> SecurityContext:
        return fresh_context(keystore, meter_id)

    def _store(self) -> KeyStore:
        return KeyStore(self.db, self.master_key())

    # -- commands -------------------------------------------------------------------------

    async def _command(self, job: JobRecord, meters: list[MeterRecord]) -> JobOutcome:
        secrets = await asyncio.to_thread(
            with_stored_secrets, self.secrets, meters, self._store, True
        )
        keystore: KeyStore | None = None
        if any(m.security_profile == SECURE_PROFILE for m in meters):
            try:
                keystore = await asyncio.to_thread(self._store)
            except KeyStoreError as exc:
                raise JobFailed(str(exc)) from None
        results = await run_command(
            self.db,
            meters,
            job.kind,
            requested_by=job.requested_by,
            secrets=secrets,
            security_for=contexts_from(keystore),
            request_timeout=self.plan.timeouts.request_s,
            now=self.now,
            links=self.links,
            priority=job.priority,
            telemetry=self.telemetry,
            label=f"job {job.id} {job.kind}",
        )
        result = {"meters": [r.as_dict() for r in results[:WORST]], "count": len(results)}
        failed = {r.meter_id: r.error_class or "failed" for r in results if not r.ok}
        if failed:
            return JobOutcome("failed", result, _incomplete_text(failed))
        return JobOutcome("done", result)

    async def _security_for(
        self, meters: list[MeterRecord]
    ) -> Callable[[MeterRecord], SecurityContext | None]:
        """Each meter's security context for a command job (None: an unsecured meter); the
        key store is opened once, and only when a meter of the job is secured."""
        keystore: KeyStore | None = None
        if any(m.security_profile == SECURE_PROFILE for m in meters):
            try:
                keystore = KeyStore(self.db, await asyncio.to_thread(self.master_key))
            except KeyStoreError as exc:
                raise JobFailed(str(exc)) from None

        def security_for(meter: MeterRecord) -> SecurityContext | None:
            if keystore is None or meter.security_profile != SECURE_PROFILE:
                return None
            return self._security(keystore, meter.meter_id)

        return security_for

    async def _firmware(self, job: JobRecord, meters: list[MeterRecord]) -> JobOutcome:
        path = str(job.params["image"])
        try:
            data = await asyncio.to_thread(_read_image, path)
        except OSError as exc:
            raise JobFailed(f"cannot read image {path}: {exc.strerror or exc}") from None
        image = FirmwareImage(str(job.params["identifier"]).encode("ascii"), data)
        security_for = await self._security_for(meters)
        stopped = asyncio.Event()
        done = 0

        def finished(_report: UploadReport) -> None:
            nonlocal done
            done += 1

        work = upload_many(
            meters,
            image,
            secrets=self.secrets,
            db=self.db,
            requested_by=job.requested_by,
            now=self.now,
            concurrency=self.concurrency,
            links=self.links,
            priority=job.priority,
            stop=stopped,
            finished=finished,
            security_for=security_for,
            telemetry=self.telemetry,
            label=f"job {job.id} firmware",
            sessions=int(job.params.get("sessions", 3)),
            request_timeout=self.plan.timeouts.request_s,
        )
        reports = await self._watch(job, work, stopped.set, lambda: (done, len(meters)))
        if stopped.is_set() and self._stopped(job):
            raise JobStopped(job.id)
        result = {"meters": [r.as_dict() for r in reports[:WORST]], "count": len(reports)}
        if stopped.is_set():
            return JobOutcome("cancelled", result, "cancelled on request")
        failed = {r.meter_id: r.error_class or "failed" for r in reports if not r.ok}
        if failed:
            return JobOutcome("failed", result, _incomplete_text(failed))
        return JobOutcome("done", result)

    async def _push_setup(self, job: JobRecord, meters: list[MeterRecord]) -> JobOutcome:
        try:
            name, change, trigger = job_change(dict(job.params))
        except ValueError as exc:
            raise JobFailed(str(exc)) from None
        security_for = await self._security_for(meters)
        stopped = asyncio.Event()
        done = 0

        def finished(_report: dict[str, Any]) -> None:
            nonlocal done
            done += 1

        work = run_push_setups(
            meters,
            name,
            change,
            secrets=self.secrets,
            db=self.db,
            trigger=trigger,
            security_for=security_for,
            concurrency=self.concurrency,
            request_timeout=self.plan.timeouts.request_s,
            links=self.links,
            priority=job.priority,
            finished=finished,
            stop=stopped,
            options_for=lambda meter: session_options(meter, self.plan),
        )
        results = await self._watch(job, work, stopped.set, lambda: (done, len(meters)))
        if stopped.is_set() and self._stopped(job):
            raise JobStopped(job.id)
        result = {"meters": results[:WORST], "count": len(results)}
        if stopped.is_set():
            return JobOutcome("cancelled", result, "cancelled on request")
        failed = {
            r["meter_id"]: r["error_class"] or "failed" for r in results if r["outcome"] != "ok"
        }
        if failed:
            return JobOutcome("failed", result, _incomplete_text(failed))
        return JobOutcome("done", result)

    # -- progress and cancel --------------------------------------------------------------

    async def _watch(
        self,
        job: JobRecord,
        work: Awaitable[Any],
        stop: Callable[[], None],
        progress: Callable[[], tuple[int, int]],
    ) -> Any:
        """Await ``work`` while writing its progress and stopping it on a cancel request."""
        task = asyncio.ensure_future(work)
        self._stops.add(stop)
        self._job_stops[job.id] = stop
        if self._stopped(job):
            stop()
        try:
            while not task.done():
                await asyncio.wait([task], timeout=self.poll_s)
                with contextlib.suppress(Exception):
                    await self.queue.progress(job.id, *progress())
                if not task.done() and await self.queue.cancel_requested(job.id):
                    log_event(logging.INFO, "job_cancel", job=job.id)
                    stop()
            return task.result()
        finally:
            self._stops.discard(stop)
            self._job_stops.pop(job.id, None)
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def _incomplete_text(incomplete: dict[str, str], shown: int = 5) -> str:
    items = sorted(incomplete.items())
    text = ", ".join(f"{m} ({cls})" for m, cls in items[:shown])
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return f"{len(items)} meter(s) not done: {text}{more}"


def _read_image(path: str) -> bytes:
    """The image file's bytes; OSError when it is missing, empty or too large."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_IMAGE_BYTES + 1)
    if not data or len(data) > MAX_IMAGE_BYTES:
        raise OSError(f"{len(data)} bytes (1 to {MAX_IMAGE_BYTES} taken)")
    return data
