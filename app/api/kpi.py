"""The running service's KPI, computed at most once per interval however often it is asked.

The status page polls every few seconds from any number of browsers and Prometheus scrapes
``/metrics`` every 15 s or so; each would otherwise cost a daily report (a few grouped
queries over the whole fleet). :class:`KpiCache` keeps the collection day's report for
``ttl_s`` (30 s) and the history of the days before it for ``history_ttl_s`` (5 min: past
days only change by gap re-reads), and lets one request compute while the others wait for
its answer instead of computing the same thing again.

One cache per app, kept in ``app.state.kpi`` (the :data:`Kpi` dependency makes it on first
use); a test that needs fresher figures puts its own there before serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Request

from app.api.context import ServiceContext
from app.report import collection_day, plan_daily_report, plan_success_rates
from storage.report import DayRate, day_rate

T = TypeVar("T")

#: How many failing meters the cached report lists (the status page's worst N).
WORST = 20
#: Days of history on the status page, the collection day included.
HISTORY_DAYS = 14


@dataclass(frozen=True, slots=True)
class Cached(Generic[T]):
    """A computed value and when it was computed (wall clock, UTC)."""

    value: T
    computed_at: datetime


class KpiCache:
    """Reports of one service, recomputed at most once per TTL (see the module docstring)."""

    def __init__(
        self,
        ttl_s: float = 30.0,
        history_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.history_ttl_s = history_ttl_s
        self._clock = clock
        self._entries: dict[Hashable, tuple[float, Cached[Any]]] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}

    async def _get(
        self, key: Hashable, ttl_s: float, compute: Callable[[], Awaitable[T]]
    ) -> Cached[T]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is not None and now - entry[0] < ttl_s:
                return entry[1]
            value = Cached(await compute(), datetime.now(UTC))
            self._entries[key] = (self._clock(), value)
            # a new collection day makes the old keys dead: drop them, keep the dict small
            stale = [k for k, (at, _) in self._entries.items() if now - at > 2 * self.history_ttl_s]
            for k in stale:
                del self._entries[k]
                self._locks.pop(k, None)
            return value

    async def report(self, ctx: ServiceContext, day: date) -> Cached[dict[str, Any]]:
        """The daily report of ``day`` judged on the plan, at most ``ttl_s`` old."""
        return await self._get(
            ("report", day),
            self.ttl_s,
            lambda: ctx.run(plan_daily_report, ctx.db, ctx.plan, day, WORST),
        )

    async def today(self, ctx: ServiceContext) -> Cached[dict[str, Any]]:
        """The report of the current collection day (:func:`app.report.collection_day`)."""
        return await self.report(ctx, collection_day(ctx.plan))

    async def history(self, ctx: ServiceContext, days: int = HISTORY_DAYS) -> list[DayRate]:
        """The last ``days`` days, oldest first, ending with the current collection day
        (that one as fresh as :meth:`today`, the others at most ``history_ttl_s`` old)."""
        current = await self.today(ctx)
        last = date.fromisoformat(current.value["day"])
        before: list[DayRate] = []
        if days > 1:
            first = last - timedelta(days=1)
            cached = await self._get(
                ("history", first, days - 1),
                self.history_ttl_s,
                lambda: ctx.run(plan_success_rates, ctx.db, ctx.plan, first, days - 1),
            )
            before = cached.value
        return [*before, day_rate(current.value)]


async def kpi_cache(request: Request) -> KpiCache:
    """The app's cache (made on first use; async, so no two threads race to make it)."""
    cache: KpiCache | None = getattr(request.app.state, "kpi", None)
    if cache is None:
        cache = KpiCache()
        request.app.state.kpi = cache
    return cache


Kpi = Annotated[KpiCache, Depends(kpi_cache)]
