"""The unit of work of a collection run, and the run's structured log.

Why a module of its own: the service, the recorder and the scheduler's caller all handle the
same :class:`MeterJob` (a meter, what to read of it, its retry state), and none of them may
import another's module for it without an import cycle.
"""

from __future__ import annotations

import logging
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
