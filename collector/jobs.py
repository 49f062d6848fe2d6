"""The shared model of a collection run: the meter job, the live figures, the summary, the log.

Why a module of its own: the service, the recorder and the scheduler all handle the same
:class:`MeterJob` (a meter, what to read of it, its retry state) and :class:`RunStats`, and
none of them may import another's module for it without an import cycle.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from collector.plan import Group
from storage.records import MeterRecord

log = logging.getLogger("hes.collector")
log.addHandler(logging.NullHandler())


def log_event(level: int, event: str, **fields: Any) -> None:
    """Structured log record: ``event`` as the message, ``fields`` as key/values."""
    if log.isEnabledFor(level):
        log.log(level, event, extra={"fields": fields})


@dataclass(slots=True)
class MeterJob:
    """One meter to read in this run, with its retry state."""

    meter: MeterRecord
    group: Group
    days: list[date]
    deadline: float  # loop time after which no new attempt starts
    missing_hint: dict[date, int] = field(default_factory=dict)
    attempts: int = 0
    not_before: float = 0.0
    registers_done: bool = False
    last_error_class: str | None = None
    last_error: str | None = None

    @property
    def meter_id(self) -> str:
        return self.meter.meter_id

    @property
    def link_id(self) -> str:
        """The line the meter is on: one session at a time on it."""
        return self.meter.link_id

    @property
    def shares_line(self) -> bool:
        """Not a TCP meter of its own: a bus or terminal-server port."""
        return self.meter.transport != "tcp"


@dataclass(slots=True)
class RunStats:
    """Live figures of a run (read by the progress display)."""

    total: int = 0
    skipped_complete: int = 0
    not_planned: int = 0
    #: Meters installed after the run's day: not expected, not contacted.
    not_installed: int = 0
    done: int = 0
    complete: int = 0
    failed: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    attempts: int = 0
    retries: int = 0
    intervals_stored: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    final_errors: Counter[str] = field(default_factory=Counter)

    @property
    def success_rate(self) -> float | None:
        """Complete meters among those finished (skipped complete ones count as complete)."""
        finished = self.done + self.skipped_complete
        return (self.complete + self.skipped_complete) / finished if finished else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "skipped_complete": self.skipped_complete,
            "not_planned": self.not_planned,
            "not_installed": self.not_installed,
            "done": self.done,
            "complete": self.complete,
            "failed": self.failed,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "attempts": self.attempts,
            "retries": self.retries,
            "intervals_stored": self.intervals_stored,
            "errors": dict(self.errors),
            "final_errors": dict(self.final_errors),
        }


@dataclass(slots=True)
class RunSummary:
    """What a run did; ``incomplete`` maps unfinished meters to their last error class."""

    run_id: str
    day: date
    stats: RunStats
    incomplete: dict[str, str]
    interrupted: bool
    seconds: float

    def as_dict(self, worst: int | None = None) -> dict[str, Any]:
        """The summary as JSON data; with ``worst``, ``incomplete`` holds at most that many
        meters and ``incomplete_more`` counts the others (a bounded summary for any fleet)."""
        rate = self.stats.success_rate
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "day": self.day.isoformat(),
            **self.stats.as_dict(),
            "success_rate": rate,
            "incomplete": dict(sorted(self.incomplete.items())),
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
        }
        if worst is not None:
            out["incomplete"], out["incomplete_more"] = cap_incomplete(out["incomplete"], worst)
        return out


def cap_incomplete(incomplete: dict[str, str], worst: int) -> tuple[dict[str, str], int]:
    """The first ``worst`` incomplete meters (by meter id) and how many are left out."""
    items = sorted(incomplete.items())
    return dict(items[:worst]), max(0, len(items) - worst)
