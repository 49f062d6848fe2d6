"""What the collector does in a meter's session after the read: clock sync and event logs.

:class:`MeterTasks` is the ``after_read`` hook of ``collector.service.Collector``. It runs
only on authenticated associations (LLS and above): the public client may neither set the
clock nor, on most meters, read the event logs. Each task is best effort: a failure is
logged and counted, never fails the read that already succeeded (the next run tries again).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector.clock_sync import DEFAULT_THRESHOLD_S, sync_clock
from collector.events import EVENT_LOGS, Publish, collect_events
from collector.session import Session
from protocols.errors import DlmsError
from storage.database import Database
from storage.errors import StorageError
from storage.records import MeterRecord

log = logging.getLogger("hes.collector")


@dataclass(slots=True)
class MeterTaskStats:
    sessions: int = 0
    skipped_public: int = 0
    clock_checked: int = 0
    clock_corrected: int = 0
    events_new: int = 0
    outages: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "skipped_public": self.skipped_public,
            "clock_checked": self.clock_checked,
            "clock_corrected": self.clock_corrected,
            "events_new": self.events_new,
            "outages": self.outages,
            "errors": dict(self.errors),
        }


@dataclass(slots=True)
class MeterTasks:
    """Clock sync (``clock_threshold_s``; None: off) and event collection (``events``)."""

    db: Database
    clock_threshold_s: float | None = DEFAULT_THRESHOLD_S
    events: bool = True
    logs: tuple[str, ...] = EVENT_LOGS
    publish: Publish | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    stats: MeterTaskStats = field(default_factory=MeterTaskStats)

    async def __call__(self, session: Session, meter: MeterRecord) -> None:
        self.stats.sessions += 1
        if meter.authentication == "none":
            self.stats.skipped_public += 1
            return
        if self.clock_threshold_s is not None:
            try:
                check = await sync_clock(
                    session,
                    meter.meter_id,
                    threshold_s=self.clock_threshold_s,
                    now=self.now,
                    db=self.db,
                )
                self.stats.clock_checked += 1
                self.stats.clock_corrected += int(check.corrected)
            except (DlmsError, StorageError) as exc:
                self._failed(meter, "clock_sync", exc)
        if self.events:
            try:
                found = await collect_events(
                    session, self.db, meter.meter_id, logs=self.logs, publish=self.publish
                )
                self.stats.events_new += len(found.new_events)
                self.stats.outages += len(found.outages)
            except (DlmsError, StorageError) as exc:
                self._failed(meter, "events", exc)

    def _failed(self, meter: MeterRecord, task: str, exc: Exception) -> None:
        cls = getattr(exc, "error_class", type(exc).__name__)
        self.stats.errors[f"{task}:{cls}"] += 1
        log.warning(
            "meter_task_failed",
            extra={
                "fields": {
                    "meter": meter.meter_id,
                    "task": task,
                    "error_class": cls,
                    "error": str(exc),
                }
            },
        )
