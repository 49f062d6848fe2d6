"""One session at a time per link across every job of the service, the most urgent first.

Why a module of its own: inside one collection run :class:`collector.scheduler.LinkScheduler`
keeps the one-session-per-bus rule, but the service runs several jobs at once (the
scheduled night run, an operator's read, a prepayment disconnect), each with its own
scheduler. :class:`LinkArbiter` is what they share: before a session a job holds its
meter's link; a waiter with a lower priority number (``storage.jobs.ON_DEMAND``) is served
before the background schedule's next meter on that bus, and a global cap bounds the
sessions of all jobs together. After a session on a shared line the next holder waits the
bus turnaround, as a run's own scheduler does.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PrioritySlots:
    """``n`` slots; waiters are served lowest priority number first, then in arrival order."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"need at least one slot, not {n}")
        self.n = n
        self.held = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiters if not f.done())

    async def acquire(self, priority: int) -> None:
        if self.held < self.n and not self.waiting:
            self.held += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted just as the waiter was cancelled: pass it on
            raise

    def release(self) -> None:
        """Hand the slot to the most urgent waiter, or free it."""
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self.held -= 1


class LinkArbiter:
    """Per-link exclusivity (with priority) and a cap on sessions of all jobs together."""

    def __init__(self, max_sessions: int = 1000, turnaround_s: float = 0.05) -> None:
        self.turnaround_s = turnaround_s
        self._sessions = PrioritySlots(max_sessions)
        self._links: dict[str, PrioritySlots] = {}

    @asynccontextmanager
    async def hold(self, link_id: str, priority: int, shared_line: bool) -> AsyncIterator[None]:
        """The link (then a global slot) for one session; released on exit."""
        link = self._links.get(link_id)
        if link is None:
            link = self._links[link_id] = PrioritySlots(1)
        await link.acquire(priority)
        try:
            await self._sessions.acquire(priority)
        except BaseException:
            self._release_link(link_id, link, pause=False)
            raise
        try:
            yield
        finally:
            self._sessions.release()
            self._release_link(link_id, link, pause=shared_line)

    def _release_link(self, link_id: str, link: PrioritySlots, pause: bool) -> None:
        if pause and link.waiting and self.turnaround_s > 0:
            asyncio.get_running_loop().call_later(self.turnaround_s, self._free, link_id, link)
        else:
            self._free(link_id, link)

    def _free(self, link_id: str, link: PrioritySlots) -> None:
        link.release()
        if link.held == 0 and not link.waiting:
            self._links.pop(link_id, None)

    @property
    def busy_links(self) -> int:
        """Links with a session (or a handover) now."""
        return sum(1 for s in self._links.values() if s.held)

    @property
    def sessions(self) -> int:
        return self._sessions.held
