"""The head-end as a long-running service loop: schedules, the job queue, push alarms.

:class:`HeadEnd` is what ``hes serve`` runs beside its HTTP server, in one event loop:

* a **ticker** enqueues one job per schedule and tick (:mod:`collector.schedule_jobs`);
  the job table's unique (schedule, tick) makes a tick that is planned twice, or caught
  up after downtime, one job. On start each schedule resumes from the last tick it
  enqueued (:func:`storage.jobs.last_tick`): ticks missed while the service was down are
  caught up, at most ``catch_up`` per schedule (older ones are logged as skipped);
* a **dispatcher** claims queued jobs, most urgent first, and runs up to ``max_jobs`` at
  once (:mod:`collector.job_runner`); the last free slot is kept for on-demand work, so
  an operator's read or a prepayment reconnect never waits for the night's run to end.
  All jobs share one :class:`~collector.link_locks.LinkArbiter`: one session per bus,
  on-demand first;
* a **push listener** stores alarms that meters send at any time.

In a cluster (``hes serve --node``, :mod:`collector.cluster`) the same loop runs with the
cluster's queue and link arbiter, and a :class:`Cluster` beside it: only the node holding
the leader's lease ticks, a draining node claims nothing, and the cluster's heartbeat
stops a job whose lease the node lost (:meth:`HeadEnd.abandon`).

Stop (SIGTERM): the ticker stops, running jobs start no new session and get ``drain_s``
to finish the sessions in flight; a job not at its end goes back to ``queued``. After a
SIGKILL nothing of this runs: :func:`storage.jobs.recover` puts the jobs left
``running`` back in the queue on the next start, and the read path's idempotency
(coverage, gap planning, unique keys) makes running them again store nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, Protocol

from collector.clock_sync import DEFAULT_THRESHOLD_S
from collector.job_queue import JobQueue
from collector.job_runner import JobOutcome, JobRunner, JobStopped
from collector.jobs import log, log_event
from collector.link_locks import LinkArbiter
from collector.plan import Plan
from collector.push import PushedAlarm, PushListener
from collector.recorder import Publish
from collector.schedule import due_runs, next_run
from collector.schedule_jobs import job_for_tick, planned_schedules
from collector.service import env_secret
from collector.telemetry import Telemetry
from storage.cluster import LeaseLost
from storage.database import Database
from storage.errors import StorageError
from storage.jobs import ON_DEMAND, JobRecord
from storage.keystore import MasterKey, load_master_key
from storage.retention import apply_retention


class Cluster(Protocol):
    """What the loop needs of a cluster node (:class:`collector.cluster.ClusterNode`)."""

    @property
    def leads(self) -> bool:
        """Runs the ticker now."""
        ...

    @property
    def accepting(self) -> bool:
        """Claims new jobs (not draining)."""
        ...

    async def run(self, abandon: Callable[[int], None]) -> None:
        """The heartbeat, until cancelled."""
        ...

    async def close(self) -> None: ...

    def live(self) -> dict[str, Any]: ...


class HeadEnd:
    """Schedules, jobs and push alarms of one service, until :meth:`stop`."""

    def __init__(
        self,
        db: Database,
        plan: Plan,
        *,
        queue: JobQueue | None = None,
        telemetry: Telemetry | None = None,
        publish: Publish | None = None,
        push_host: str = "127.0.0.1",
        push_port: int | None = None,
        secrets: Callable[[str], bytes | None] = env_secret,
        master_key: Callable[[], MasterKey] = load_master_key,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        poll_s: float = 1.0,
        drain_s: float = 30.0,
        catch_up: int = 3,
        max_jobs: int = 4,
        concurrency: int | None = None,
        clock_threshold_s: float = DEFAULT_THRESHOLD_S,
        retention_days: int = 0,
        links: LinkArbiter | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        if max_jobs < 2:
            raise ValueError(f"max_jobs must be at least 2 (one is kept on demand), not {max_jobs}")
        self.db = db
        self.plan = plan
        self.queue = queue or JobQueue(db, now=now)
        self.telemetry = telemetry or Telemetry()
        self.now = now
        self.poll_s = poll_s
        self.drain_s = drain_s
        self.catch_up = catch_up
        self.max_jobs = max_jobs
        self.links = links or LinkArbiter(max_sessions=concurrency or plan.concurrency)
        self.cluster = cluster
        self.runner = JobRunner(
            db,
            plan,
            queue=self.queue,
            telemetry=self.telemetry,
            links=self.links,
            publish=publish,
            secrets=secrets,
            master_key=master_key,
            now=now,
            concurrency=concurrency,
            poll_s=poll_s,
            clock_threshold_s=clock_threshold_s,
        )
        self.schedules = planned_schedules(plan)
        self.push: PushListener | None = None
        if push_port is not None:
            self.push = PushListener(
                db, host=push_host, port=push_port, publish=publish, now=now, on_alarm=self._alarm
            )
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._running: dict[int, tuple[JobRecord, asyncio.Task[None]]] = {}
        self._last: dict[str, datetime | None] = {}
        self._next: dict[str, datetime] = {}
        self.recovered: list[int] = []
        self.retention_days = retention_days
        self._retained_on: date | None = None

    # -- public ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop ticking and claiming; running jobs drain (see the module docstring)."""
        if not self._stop.is_set():
            log_event(logging.WARNING, "service_stop_requested", running=len(self._running))
        self._stop.set()
        self.queue.wake()

    def abandon(self, job_id: int) -> None:
        """Stop a job this node may no longer run (its lease is lost): no new session, and
        it ends without a result (the node now holding it reports it)."""
        self.runner.abandon(job_id)

    async def wait_ready(self) -> None:
        """Until the service has recovered its jobs and started listening."""
        await self._ready.wait()

    async def run(self) -> None:
        """Run until :meth:`stop`; returns once the running jobs are drained or requeued."""
        self.recovered = await self.queue.recover()
        if self.recovered:
            log_event(logging.WARNING, "jobs_recovered", jobs=self.recovered)
        if self.push is not None:
            await self.push.start()
        beat = None
        if self.cluster is not None:
            beat = asyncio.create_task(self.cluster.run(self.abandon), name="hes-heartbeat")
        ticker = asyncio.create_task(self._ticker(), name="hes-ticker")
        dispatcher = asyncio.create_task(self._dispatch(), name="hes-dispatcher")
        self._ready.set()
        log_event(
            logging.INFO,
            "service_start",
            schedules=[s.name for s in self.schedules],
            push_port=self.push.port if self.push is not None else None,
        )
        try:
            await self._stop.wait()
        finally:
            self._stop.set()
            self.queue.wake()
            # The ticker may be cut anywhere (a tick submitted twice is one job). The
            # dispatcher is not: a claim cut while its database call runs on would leave
            # a job marked running with nobody running it; it sees the stop and ends.
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            await asyncio.gather(dispatcher, return_exceptions=True)
            await self._drain()
            if beat is not None and self.cluster is not None:
                # after the drain: the jobs finishing keep their leases until they end
                beat.cancel()
                await asyncio.gather(beat, return_exceptions=True)
                await self.cluster.close()
            if self.push is not None:
                await self.push.close()
            log_event(logging.INFO, "service_stopped")

    def live(self) -> dict[str, Any]:
        """What the loop is doing, for the status page and ``/api/status`` (and, in a
        cluster, what this node holds)."""
        out = {
            "schedules": [
                {
                    "name": s.name,
                    "last_tick": _iso(self._last.get(s.name)),
                    "next_tick": _iso(self._next.get(s.name)),
                }
                for s in self.schedules
            ],
            "jobs_running": [
                {"id": job.id, "kind": job.kind, "schedule": job.schedule}
                for job, _ in self._running.values()
            ],
            "links_busy": self.links.busy_links,
            "sessions": self.links.sessions,
            "push_port": self.push.port if self.push is not None else None,
            "recovered_jobs": self.recovered,
        }
        if self.cluster is not None:
            out["node"] = self.cluster.live()
        return out

    # -- schedules ------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while not self._stop.is_set():
            try:
                await self._tick()
            except StorageError as exc:
                log.error("ticker_storage_error", extra={"fields": {"error": str(exc)}})
            await self._sleep(self._until_next())

    async def _tick(self) -> None:
        if self.cluster is not None and not self.cluster.leads:
            # another node ticks; when this one leads, it resumes from the stored ticks
            self._last.clear()
            self._next.clear()
            return
        now = self.now()
        await self._retain(now.astimezone(UTC).date())
        for planned in self.schedules:
            if planned.name not in self._last:
                self._last[planned.name] = await self.queue.last_tick(planned.name)
            last = self._last[planned.name]
            due = due_runs(planned.schedule, last, now, self.catch_up)
            if due.skipped:
                log_event(
                    logging.WARNING, "ticks_skipped", schedule=planned.name, skipped=due.skipped
                )
            for tick in due:
                job, created = await self.queue.submit(job_for_tick(planned, tick, now))
                if created:
                    log_event(
                        logging.INFO,
                        "tick_enqueued",
                        schedule=planned.name,
                        tick=tick.isoformat(),
                        job=job.id,
                    )
                self._last[planned.name] = tick
            self._next[planned.name] = next_run(planned.schedule, self._last[planned.name] or now)

    async def _retain(self, today: date) -> None:
        """Apply the retention policy once a (UTC) day, in a thread: a month of partitions
        dropped or a day of rows deleted must not hold up the loop."""
        if not self.retention_days or self._retained_on == today:
            return
        result = await asyncio.to_thread(apply_retention, self.db, self.retention_days, today=today)
        self._retained_on = today
        log_event(logging.INFO, "retention_applied", **result.as_dict())

    def _until_next(self) -> float:
        if not self._next:
            return self.poll_s
        wait = (min(self._next.values()) - self.now()).total_seconds()
        return max(0.0, min(wait, self.poll_s))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # -- jobs -----------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while not self._stop.is_set():
            try:
                claimed = await self._claim()
                depth = await self.queue.depth()
                self.telemetry.set_queue_depth(depth)
            except StorageError as exc:
                log.error("dispatch_storage_error", extra={"fields": {"error": str(exc)}})
                claimed = False
            if not claimed:
                await self.queue.wait(self.poll_s)

    async def _claim(self) -> bool:
        free = self.max_jobs - len(self._running)
        if free <= 0 or (self.cluster is not None and not self.cluster.accepting):
            return False
        job = await self.queue.claim(max_priority=None if free > 1 else ON_DEMAND)
        if job is None:
            return False
        if self._stop.is_set():  # claimed as the stop came: leave it for the next start
            await self.queue.requeue(job.id)
            return False
        if job.schedule is not None and job.tick is not None:
            lag = (self.now() - job.tick).total_seconds()
            self.telemetry.schedule_lag.labels(job.schedule).set(max(0.0, lag))
        task = asyncio.create_task(self._run_job(job), name=f"hes-job-{job.id}")
        self._running[job.id] = (job, task)
        task.add_done_callback(functools.partial(self._forget, job.id))
        log_event(logging.INFO, "job_start", job=job.id, kind=job.kind, priority=job.priority)
        return True

    async def _run_job(self, job: JobRecord) -> None:
        try:
            outcome = await self.runner.run(job)
        except JobStopped:
            await self.queue.requeue(job.id)
            log_event(logging.INFO, "job_requeued", job=job.id, kind=job.kind)
            return
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.queue.requeue(job.id))
            raise
        except StorageError as exc:
            # the job stays running in the table: the next start recovers it
            log.error("job_storage_error", extra={"fields": {"job": job.id, "error": str(exc)}})
            return
        except Exception as exc:  # a bug: the job fails, the service keeps going
            log.exception("job %s failed with an internal error", job.id)
            outcome = JobOutcome("failed", None, f"internal error: {exc!r}")
        try:
            await self.queue.finish(
                job.id, outcome.state, result=outcome.result, error=outcome.error
            )
        except LeaseLost as exc:  # a cluster node whose lease ran out: another holds the job
            log_event(logging.WARNING, "job_lease_lost", job=job.id, error=str(exc))
            return
        except StorageError as exc:
            log.error("job_storage_error", extra={"fields": {"job": job.id, "error": str(exc)}})
            return
        self.telemetry.jobs.labels(job.kind, outcome.state).inc()
        log_event(logging.INFO, "job_end", job=job.id, kind=job.kind, state=outcome.state)

    async def _drain(self) -> None:
        """Running jobs get ``drain_s`` to end their sessions; the rest are requeued."""
        self.runner.stop()
        tasks = [task for _, task in self._running.values()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.drain_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
            log_event(logging.WARNING, "jobs_cut_at_drain", jobs=len(pending))

    def _forget(self, job_id: int, _task: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)

    def _alarm(self, _alarm: PushedAlarm) -> None:
        self.telemetry.alarms.inc()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
