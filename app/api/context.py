"""What every API handler and the status page work with: one object per running service.

The handlers never reach for module globals: ``hes serve`` builds one :class:`ServiceContext`
(database, plan, job queue, telemetry) and hands it to :func:`app.api.create_app`; a test
builds its own over a temporary database, so two services in one process stay apart.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from collector.job_queue import JobQueue
from collector.plan import Plan
from collector.telemetry import Telemetry
from storage.database import Database

T = TypeVar("T")


@dataclass
class ServiceContext:
    """The running service as the API sees it."""

    db: Database
    plan: Plan
    queue: JobQueue
    telemetry: Telemetry
    #: Blocking database calls run here, never on the event loop.
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="hes-api")
    )
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Serve ``/``, ``/api/status`` and ``/metrics`` without a token (an internal network).
    public_status: bool = True
    #: What the service loop reports of itself for the status page (links busy, schedules).
    live: Callable[[], dict[str, Any]] = field(default=lambda: {})

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the executor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))
