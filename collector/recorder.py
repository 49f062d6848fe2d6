"""The recorder: what every finished session leaves behind, stored and published.

Why one place: a session ends in many ways (read in full, registers partly refused, failed,
timed out, cancelled by a stop), and each must be stored the same way (its reads and one
read attempt, in the next storage batch) and, when the read ran to its end, handed to MQTT.
The service describes how the session ended as one :class:`SessionResult` and hands it over;
the recorder owns the storage writer and the MQTT hand-off, and never fails the run because
the outbox does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from collector.batching import Batcher
from collector.jobs import MeterJob, log_event
from collector.mqtt_payloads import profile_payload, registers_payload
from collector.profile_reader import Readout
from storage.records import Attempt, SessionWrite

#: ``publish(meter_id, kind, payload)``: hands a completed read to MQTT (kind: profile or
#: registers); called from a storage thread, so it may block briefly (a spool insert).
Publish = Callable[[str, str, dict[str, Any]], None]

Outcome = Literal["ok", "partial", "failed"]


@dataclass(frozen=True, slots=True)
class SessionResult:
    """How one session with a meter ended: what it read and what became of it."""

    job: MeterJob
    readout: Readout
    outcome: Outcome
    error_class: str | None
    error: str | None
    #: the read ran to its end (register errors aside): worth publishing
    read_through: bool
    #: no interval is left missing: the meter's days are done
    complete: bool
    started: datetime
    finished: datetime
    bytes_tx: int = 0
    bytes_rx: int = 0
    round_trips: int = 0


def link_figures(transport: Any) -> dict[str, int]:
    """Bytes and round trips of a session's transport (zero when there was none)."""
    stats = getattr(transport, "stats", None)
    return {
        "bytes_tx": stats.bytes_tx if stats else 0,
        "bytes_rx": stats.bytes_rx if stats else 0,
        "round_trips": stats.round_trips if stats else 0,
    }


class Recorder:
    """Stores each :class:`SessionResult` (batched) and publishes what ran to its end."""

    def __init__(
        self,
        store_sessions: Callable[[Sequence[SessionWrite]], Sequence[int]],
        executor: Executor,
        *,
        run_id: str,
        day: date,
        publish: Publish | None = None,
        on_stored: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self.run_id = run_id
        self.on_stored = on_stored
        self.day = day
        self.publish = publish
        self._executor = executor
        self._writer: Batcher[SessionWrite, int] = Batcher(store_sessions, executor)

    def start(self) -> None:
        self._writer.start()

    async def close(self) -> None:
        await self._writer.close()

    async def record(self, result: SessionResult) -> None:
        """Store the session, then publish it if it ran to its end."""
        await self.store(result)
        if result.read_through and self.publish is not None:
            await self._publish(result)

    async def store(self, result: SessionResult) -> None:
        """Store the session's reads and its attempt (with the next batch) and log it;
        ``on_stored`` gets the number of new interval rows."""
        job, out, error = result.job, result.readout, result.error
        attempt = Attempt(
            meter_id=job.meter.meter_id,
            run_id=self.run_id,
            day=self.day,
            started=result.started,
            finished=result.finished,
            outcome=result.outcome,
            error_class=result.error_class,
            error=error[:2000] if error else None,
            bytes_tx=result.bytes_tx,
            bytes_rx=result.bytes_rx,
            round_trips=result.round_trips,
        )
        # The writer stores it even when this session is cancelled meanwhile.
        stored = await self._writer.submit(
            SessionWrite(out.channels, out.registers, out.intervals, out.coverage, attempt)
        )
        self.on_stored(stored)
        log_event(
            logging.INFO if result.outcome == "ok" else logging.WARNING,
            "attempt",
            meter=job.meter.meter_id,
            link=job.meter.link_id,
            attempt=job.attempts,
            outcome=result.outcome,
            error_class=result.error_class,
            error=error,
            bytes_tx=attempt.bytes_tx,
            bytes_rx=attempt.bytes_rx,
            round_trips=attempt.round_trips,
        )

    async def _publish(self, result: SessionResult) -> None:
        """Hand the session's reads to MQTT; a failing outbox never fails the collection."""
        assert self.publish is not None
        out = result.readout
        meter_id = result.job.meter.meter_id
        extra = {"run_id": self.run_id, "day": self.day.isoformat(), "complete": result.complete}
        messages = [("profile", profile_payload(meter_id, out.intervals, **extra))]
        if out.registers:
            messages.append(("registers", registers_payload(meter_id, out.registers, **extra)))
        loop = asyncio.get_running_loop()
        for kind, payload in messages:
            try:
                await loop.run_in_executor(
                    self._executor, functools.partial(self.publish, meter_id, kind, payload)
                )
            except Exception as exc:
                log_event(
                    logging.ERROR, "publish_failed", meter=meter_id, kind=kind, error=repr(exc)
                )
