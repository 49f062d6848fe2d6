"""Batched storage work for many concurrent sessions: one transaction for many meters.

Each session used to cost several transactions (channels, registers, interval reads,
attempt; for a secured meter also its keys and an invocation-counter block); at hundreds
of meters a second the commits and the per-statement overhead were most of the
collector's CPU, and on SQLite every write queued for the one write lock. Sessions now
hand their item to a :class:`Batcher`, whose task runs whatever has queued up while the
previous batch ran, as one call on a storage thread. A session waits for its batch, so
nothing counts as stored (or reserved) before it is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Items run in batches of up to ``max_batch`` by one task: ``run(items)`` (blocking,
    on ``executor``) returns one result per item, in order."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], Sequence[R]],
        executor: Executor,
        max_batch: int = 400,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._run_batch = run
        self._executor = executor
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        self.largest_batch = 0

    def start(self) -> None:
        """Start the writer task (on the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hes-batcher")

    async def submit(self, item: T) -> R:
        """Run ``item`` with the next batch; its result once the batch has run.

        A caller cancelled while waiting does not cancel the item: it is run (stored) all
        the same. An error of the batch is raised to every caller of that batch.
        """
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Run everything queued, then stop the task."""
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
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run_batch, [item for item, _ in batch]
                )
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                        # retrieved here: a caller that was cancelled never awaits it
                        future.exception()
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
