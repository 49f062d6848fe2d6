"""Group commit of session results: one storage transaction for many meters.

Each session used to cost several transactions (channels, registers, interval reads,
attempt); at hundreds of meters a second the commits and the per-statement overhead
were most of the collector's CPU. Sessions now hand a :class:`SessionWrite` to one
writer, which stores whatever has queued up while the previous batch was committing.
A session waits for its batch to commit before it counts as read, so nothing is
reported complete that is not on disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from storage.records import SessionWrite

Store = Callable[[Sequence[SessionWrite]], list[int]]


class SessionWriter:
    """Queue of session results, stored in batches of up to ``max_batch`` by one task."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        max_batch: int = 400,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._store = store
        self._executor = executor
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._in_batch = 0
        self._pending: list[tuple[SessionWrite, asyncio.Future[int]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        self.largest_batch = 0

    @property
    def backlog(self) -> int:
        """Sessions queued or in the batch being stored."""
        return len(self._pending) + self._in_batch

    def start(self) -> None:
        """Start the writer task (on the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hes-session-writer")

    async def write(self, item: SessionWrite) -> int:
        """Store ``item`` with the next batch; the number of new interval rows once committed.

        A caller cancelled while waiting does not cancel the write: the reads it carries
        are stored all the same. A storage error of the batch is raised to every caller.
        """
        if self._task is None or self._task.done():
            raise RuntimeError("the session writer is not running")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Store everything queued, then stop the task."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            self._in_batch = len(batch)
            try:
                counts = await loop.run_in_executor(
                    self._executor, self._store, [item for item, _ in batch]
                )
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                        # retrieved here: a caller that was cancelled never awaits it
                        future.exception()
            else:
                for (_, future), n in zip(batch, counts, strict=True):
                    if not future.done():
                        future.set_result(n)
            finally:
                self._in_batch = 0
            if self._on_batch is not None:
                self._on_batch()
