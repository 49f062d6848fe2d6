"""A collector node of a cluster: the job queue, the link leases and the heartbeat.

``hes serve --node NAME`` runs the same :class:`~collector.daemon.HeadEnd` as the embedded
service, with three parts of this module in place of the in-process ones (the state lives
in the shared PostgreSQL, :mod:`storage.cluster`):

* :class:`ClusterJobQueue`: claims are leased to the node (a dead node's jobs come back
  when their lease runs out), finishing is fenced by the lease, and a schedule tick is
  split into one job per link: each bus (or terminal-server port) is a job whose meters
  are read one after another; GPRS/TCP meters, each a link of its own, go ``gprs_batch``
  to a job;
* :class:`ClusterLinks`: the in-process arbiter (one session per link inside the node,
  on-demand first) plus the link lease: before each session on a shared line the node
  takes or confirms the line's lease, and waits while another node holds it;
* :class:`ClusterNode`: the heartbeat, every third of a lease: the node's row and load,
  its job and link leases renewed (a job whose lease it lost is stopped at once, and no
  new session starts on a line it lost), the leader's lease taken or kept (the leader runs
  the ticker), the operator's drain request read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from collector.job_queue import JobQueue
from collector.jobs import log, log_event
from collector.link_locks import LinkArbiter
from collector.plan import Plan
from storage import cluster
from storage.database import Database
from storage.errors import StorageError
from storage.jobs import JobRecord, JobRequest
from storage.records import MeterRecord

#: GPRS/TCP meters per job of a tick.
GPRS_BATCH = 50
#: Seconds an idle shared line's lease is kept for the next session of the same job.
LINK_LINGER_S = 2.0


def link_batches(
    meters: Sequence[MeterRecord], gprs_batch: int = GPRS_BATCH
) -> list[tuple[str, list[str]]]:
    """The links of a tick's meters: ``(link, meter ids)``, a bus per entry (its meters in
    id order), TCP meters ``gprs_batch`` to an entry (named after its first meter)."""
    if gprs_batch < 1:
        raise ValueError(f"gprs_batch must be at least 1, not {gprs_batch}")
    buses: dict[str, list[str]] = {}
    tcp: list[str] = []
    for meter in meters:
        if meter.transport == "tcp":
            tcp.append(meter.meter_id)
        else:
            buses.setdefault(meter.link_id, []).append(meter.meter_id)
    out = [(link, sorted(ids)) for link, ids in sorted(buses.items())]
    tcp.sort()
    for first in range(0, len(tcp), gprs_batch):
        chunk = tcp[first : first + gprs_batch]
        out.append((f"tcp:{chunk[0]}"[:128], chunk))
    return out


class ClusterJobQueue(JobQueue):
    """The job table as a cluster's queue: leased claims, fenced ends, ticks split by link."""

    def __init__(self, node: ClusterNode) -> None:
        super().__init__(node.db, now=node.now)
        self.node = node
        #: The jobs this node holds (claimed, not yet ended): the heartbeat renews them.
        self.held: set[int] = set()

    def _split(self, req: JobRequest) -> list[JobRequest]:
        group = req.params.get("group")
        meters = [
            m
            for m in self.node.db.meters(enabled_only=True)
            if group is None or ((g := self.node.plan.group_for(m)) and g.name == group)
        ]
        return [
            dataclasses.replace(req, meters=ids, link=link)
            for link, ids in link_batches(meters, self.node.gprs_batch)
        ]

    async def submit(self, req: JobRequest) -> tuple[JobRecord, bool]:
        """A tick of a schedule over a whole group becomes one job per link, all stored in
        one transaction; anything else is stored as the embedded service stores it."""
        if req.schedule is None or req.meters is not None or req.link:
            return await super().submit(req)
        parts = await self._call(self._split, req)
        if not parts:  # no meter in the group: the tick is still recorded, as one job
            return await super().submit(req)
        stored, created = await self._call(cluster.submit_tick, self.db, parts, self.now())
        if created:
            self._wake.set()
        return stored[0], created

    async def claim(
        self, kinds: Sequence[str] | None = None, max_priority: int | None = None
    ) -> JobRecord | None:
        if kinds is not None:
            raise ValueError("a cluster node claims jobs of every kind")
        if not self.node.accepting:
            return None
        job = await self._call(
            lambda: cluster.claim(
                self.db, self.node.name, self.node.lease_s, max_priority=max_priority
            )
        )
        if job is not None:
            self.held.add(job.id)
            if job.attempts > 1:
                log_event(logging.WARNING, "job_redelivered", job=job.id, attempts=job.attempts)
        return job

    async def requeue(self, job_id: int) -> None:
        self.held.discard(job_id)
        await self._call(cluster.requeue, self.db, self.node.name, job_id)

    async def recover(self) -> list[int]:
        """Register the node; the jobs a previous process of its name left running go back
        to the queue (other nodes' jobs are theirs: their leases say when they are lost)."""
        return await self._call(self.node.register)

    async def progress(self, job_id: int, done: int, total: int) -> None:
        await self._call(cluster.progress, self.db, self.node.name, job_id, done, total)

    async def finish(
        self, job_id: int, state: str, *, result: object = None, error: str | None = None
    ) -> JobRecord:
        """End the job if this node still holds it; :class:`storage.cluster.LeaseLost`
        (a StorageError) when it does not: the work is then another node's to report."""
        self.held.discard(job_id)
        return await self._call(
            lambda: cluster.finish(
                self.db, self.node.name, job_id, state, result=result, error=error
            )
        )


class ClusterLinks(LinkArbiter):
    """One session per link in the node (with priority) and per shared line in the cluster.

    A session on a shared line runs under the line's lease, as this node last confirmed it
    (its deadline on the loop's monotonic clock, counted from before the statement that took
    or renewed it). If that deadline passes while the session is on the line, and the
    heartbeat did not renew it in time, the session's task is cancelled before it sends
    anything more. This covers a node that froze (SIGSTOP, a stalled VM) with a session in
    flight: when it wakes, that timer is due at once, and the session is cut before its
    next request can reach a line that another node may hold by now.
    """

    def __init__(self, node: ClusterNode, max_sessions: int, turnaround_s: float = 0.05) -> None:
        super().__init__(max_sessions=max_sessions, turnaround_s=turnaround_s)
        self.node = node
        #: Shared lines whose lease this node holds, sessions on each, and last use.
        self.leased: set[str] = set()
        self.in_use: dict[str, int] = {}
        self._used: dict[str, float] = {}
        self._deadline: dict[str, float] = {}
        self._holders: dict[str, set[asyncio.Task[Any]]] = {}
        self._guards: dict[str, asyncio.TimerHandle] = {}
        self._lock = asyncio.Lock()
        #: Times a session waited because another node held its line.
        self.waits = 0
        #: Sessions cut because the line's lease ran out under them.
        self.cut = 0

    @asynccontextmanager
    async def hold(self, link_id: str, priority: int, shared_line: bool) -> AsyncIterator[None]:
        async with super().hold(link_id, priority, shared_line):
            if not shared_line:
                yield
                return
            await self._lease(link_id)
            task = asyncio.current_task()
            if task is not None:
                self._holders.setdefault(link_id, set()).add(task)
            self._arm(link_id)
            try:
                yield
            finally:
                if task is not None:
                    self._holders.get(link_id, set()).discard(task)
                self.in_use[link_id] -= 1
                if not self.in_use[link_id]:
                    del self.in_use[link_id]
                    self._holders.pop(link_id, None)
                    guard = self._guards.pop(link_id, None)
                    if guard is not None:
                        guard.cancel()
                self._used[link_id] = time.monotonic()

    def _arm(self, link_id: str) -> None:
        """(Re)set the timer that cuts the line's sessions when its lease runs out."""
        guard = self._guards.pop(link_id, None)
        if guard is not None:
            guard.cancel()
        if link_id in self.in_use and link_id in self._deadline:
            loop = asyncio.get_running_loop()
            self._guards[link_id] = loop.call_at(self._deadline[link_id], self._expire, link_id)

    def _expire(self, link_id: str) -> None:
        self._guards.pop(link_id, None)
        if asyncio.get_running_loop().time() < self._deadline.get(link_id, 0.0):
            self._arm(link_id)  # renewed meanwhile
            return
        holders = self._holders.get(link_id, set())
        if holders:
            log_event(
                logging.ERROR, "session_cut_lease_expired", link=link_id, sessions=len(holders)
            )
            self.cut += len(holders)
        for task in holders:
            task.cancel()

    async def _lease(self, link_id: str) -> None:
        """Take or confirm the line's lease before a session on it; wait while another
        node holds it (its session is on the line)."""
        told = False
        loop = asyncio.get_running_loop()
        while True:
            async with self._lock:
                started = loop.time()
                ok = await asyncio.to_thread(
                    cluster.take_link, self.node.db, self.node.name, link_id, self.node.lease_s
                )
                if ok:
                    self.leased.add(link_id)
                    self._deadline[link_id] = started + self.node.lease_s
                    self.in_use[link_id] = self.in_use.get(link_id, 0) + 1
                    return
                self.leased.discard(link_id)
            self.waits += 1
            if not told:
                log_event(logging.INFO, "link_held_elsewhere", link=link_id)
                told = True
            await asyncio.sleep(min(1.0, self.node.lease_s / 10))

    async def renew(self) -> None:
        """Renew the leases of the lines in use or just used; give the others up."""
        async with self._lock:
            now = time.monotonic()
            keep = [
                link
                for link in self.leased
                if link in self.in_use or now - self._used.get(link, 0.0) < LINK_LINGER_S
            ]
            idle = sorted(self.leased - set(keep))
            started = asyncio.get_running_loop().time()
            kept = await asyncio.to_thread(
                cluster.renew_links, self.node.db, self.node.name, keep, self.node.lease_s
            )
            for link in kept:
                self._deadline[link] = started + self.node.lease_s
                self._arm(link)
            lost = set(keep) - kept
            if lost:
                log_event(logging.ERROR, "link_lease_lost", links=sorted(lost))
            if idle:
                await asyncio.to_thread(cluster.release_links, self.node.db, self.node.name, idle)
            self.leased = kept
            for link in [*idle, *lost]:
                self._used.pop(link, None)
                if link not in self.in_use:
                    self._deadline.pop(link, None)

    async def release_all(self) -> None:
        async with self._lock:
            await asyncio.to_thread(cluster.release_links, self.node.db, self.node.name)
            self.leased.clear()


class ClusterNode:
    """One node of the cluster: its name, leases and heartbeat (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        plan: Plan,
        name: str,
        *,
        host: str,
        pid: int,
        lease_s: float = 30.0,
        gprs_batch: int = GPRS_BATCH,
        http: str | None = None,
        max_sessions: int | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        cluster.require_postgres(db)
        if not name or len(name) > 128:
            raise ValueError(f"a node name is 1 to 128 characters, not {name!r}")
        self.db = db
        self.plan = plan
        self.name = name
        self.host = host
        self.pid = pid
        self.lease_s = lease_s
        self.beat_s = lease_s / 3
        self.gprs_batch = gprs_batch
        self.http = http
        self.now = now
        self.state = "running"
        self.queue = ClusterJobQueue(self)
        self.links = ClusterLinks(self, max_sessions or plan.concurrency)
        self._leads_until = 0.0
        self._confirmed = time.monotonic()

    @property
    def accepting(self) -> bool:
        """Claims new jobs: not draining (an operator's ``hes nodes drain``)."""
        return self.state == "running"

    @property
    def leads(self) -> bool:
        """Holds the leader's lease now (by this node's clock, with a beat to spare)."""
        return time.monotonic() < self._leads_until

    def register(self) -> list[int]:
        return cluster.register_node(
            self.db, self.name, self.host, self.pid, self.lease_s, http=self.http
        )

    async def run(self, abandon: Callable[[int], None]) -> None:
        """The heartbeat, until cancelled; ``abandon(job_id)`` stops a job whose lease is lost."""
        while True:
            try:
                await self.beat(abandon)
            except StorageError as exc:
                log.error("heartbeat_storage_error", extra={"fields": {"error": str(exc)}})
                if time.monotonic() - self._confirmed > self.lease_s:
                    # Every lease has run out by now: another node may hold the work.
                    for job_id in sorted(self.queue.held):
                        abandon(job_id)
                    self.queue.held.clear()
            await asyncio.sleep(self.beat_s)

    async def beat(self, abandon: Callable[[int], None]) -> None:
        started = time.monotonic()
        state = await asyncio.to_thread(
            cluster.heartbeat,
            self.db,
            self.name,
            jobs_held=len(self.queue.held),
            links_held=len(self.links.leased),
            sessions=self.links.sessions,
            http=self.http,
        )
        if state != self.state:
            log_event(logging.WARNING, "node_state", node=self.name, state=state)
            self.state = state or "gone"
        held = sorted(self.queue.held)
        kept = await asyncio.to_thread(cluster.renew_jobs, self.db, self.name, held, self.lease_s)
        for job_id in held:
            if job_id not in kept and job_id in self.queue.held:
                log_event(logging.ERROR, "job_lease_lost", job=job_id, node=self.name)
                self.queue.held.discard(job_id)
                abandon(job_id)
        await self.links.renew()
        if self.accepting:
            leads = await asyncio.to_thread(cluster.lead, self.db, self.name, self.lease_s)
        else:
            leads = False
            if self.leads:
                await asyncio.to_thread(cluster.resign, self.db, self.name)
        if leads and not self.leads:
            log_event(logging.WARNING, "leader_elected", node=self.name)
        self._leads_until = started + self.lease_s - self.beat_s if leads else 0.0
        self._confirmed = started

    async def close(self) -> None:
        """The node stops: gone from the list, its leadership and line leases given up."""
        self._leads_until = 0.0
        with contextlib.suppress(StorageError):
            await asyncio.to_thread(cluster.resign, self.db, self.name)
            await self.links.release_all()
            await asyncio.to_thread(cluster.set_state, self.db, self.name, "gone")

    def live(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "leader": self.leads,
            "lease_s": self.lease_s,
            "jobs_held": sorted(self.queue.held),
            "links_leased": sorted(self.links.leased),
            "link_waits": self.links.waits,
            "sessions_cut": self.links.cut,
        }
