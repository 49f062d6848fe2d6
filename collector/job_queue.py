"""The service's job queue: storage.jobs behind an asyncio face.

Why a thin class: the API handlers and the scheduler submit jobs from the event loop, the
runner waits for work; the database is the queue (so a restart loses nothing) and this
adds only what the loop needs: the blocking calls off the loop, and a wake-up, so a job
submitted through the API starts at once instead of at the runner's next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import TypeVar

from storage import jobs
from storage.handle import DatabaseHandle
from storage.jobs import JobRecord, JobRequest

T = TypeVar("T")


class JobQueue:
    """Submit, claim, cancel and wait, over the job table of ``db``."""

    def __init__(
        self,
        db: DatabaseHandle,
        executor: Executor | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.now = now
        self._executor = executor
        self._wake = asyncio.Event()

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def submit(self, req: JobRequest) -> tuple[JobRecord, bool]:
        """Store the job (or find the one its idempotency key names) and wake the runner."""
        job, created = await self._call(jobs.submit, self.db, req, self.now())
        if created:
            self._wake.set()
        return job, created

    async def claim(
        self, kinds: Sequence[str] | None = None, max_priority: int | None = None
    ) -> JobRecord | None:
        return await self._call(
            lambda: jobs.claim_next(self.db, self.now(), kinds=kinds, max_priority=max_priority)
        )

    async def requeue(self, job_id: int) -> None:
        await self._call(jobs.requeue, self.db, job_id)

    async def recover(self) -> list[int]:
        return await self._call(jobs.recover, self.db)

    async def last_tick(self, schedule: str) -> datetime | None:
        return await self._call(jobs.last_tick, self.db, schedule)

    async def get(self, job_id: int) -> JobRecord | None:
        return await self._call(jobs.get, self.db, job_id)

    async def cancel(self, job_id: int) -> JobRecord | None:
        job = await self._call(jobs.cancel, self.db, job_id, self.now())
        self._wake.set()
        return job

    async def cancel_requested(self, job_id: int) -> bool:
        return await self._call(jobs.cancel_requested, self.db, job_id)

    async def progress(self, job_id: int, done: int, total: int) -> None:
        await self._call(jobs.progress, self.db, job_id, done, total)

    async def finish(
        self, job_id: int, state: str, *, result: object = None, error: str | None = None
    ) -> JobRecord:
        return await self._call(
            lambda: jobs.finish(self.db, job_id, state, result=result, error=error, now=self.now())
        )

    async def depth(self) -> dict[str, int]:
        return await self._call(jobs.queue_depth, self.db)

    async def wait(self, timeout: float) -> None:
        """Until a job is submitted or cancelled, or ``timeout`` seconds pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    def wake(self) -> None:
        self._wake.set()
