"""Event-log collection: incremental reads of the standard and power-failure event logs.

Each read asks the meter, by selective access on the clock column, only for entries from the
newest one already stored onwards (the range is inclusive, so that entry comes back and is
dropped here); a meter with nothing stored yet is read in full. New entries are decoded into
event names, stored (``events`` table, idempotent on meter/log/time/code), published to MQTT
(``hes/<meter>/events``), and power-down/power-up pairs of the power-failure log become
outages (``outages`` table), including an outage whose power-down was stored by an earlier
read.

Event code names: the IDIS-style standard event list as numbered in an IDIS-derived meter
firmware's table (github.com/justyourself/FTU_LineLoss, ``User/Event.h``: power down 1 ...
Replay attack 50, disconnector events 60-69), the numbering the simulator also uses
(``simulator.model``: power down 1, power up 2, clock adjusted 4/5, terminal cover 40/41, meter
cover 44/45, configuration change 47).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector.mqtt_payloads import events_payload
from collector.profile_reader import read_profile
from collector.session import Session
from protocols.cosem import Obis
from protocols.enums import InterfaceClass
from protocols.errors import ProtocolError
from storage.database import Database
from storage.operations import (
    Outage,
    event_codes_at,
    insert_outages,
    last_event_time,
    pending_power_down,
)
from storage.records import Event

log = logging.getLogger("hes.events")

STANDARD_EVENT_LOG = "0.0.99.98.0.255"
POWER_FAILURE_LOG = "1.0.99.97.0.255"
EVENT_LOGS = (STANDARD_EVENT_LOG, POWER_FAILURE_LOG)
EVENT_CODE_OBIS = Obis.parse("0.0.96.11.0.255")
CLASS_CLOCK = InterfaceClass.CLOCK

POWER_DOWN = 1
POWER_UP = 2

#: Standard event codes and their names (see the module docstring for the source).
EVENT_NAMES: dict[int, str] = {
    1: "power down",
    2: "power up",
    3: "daylight saving time activated",
    4: "clock adjusted (old date/time)",
    5: "clock adjusted (new date/time)",
    6: "clock invalid",
    40: "terminal cover opened",
    41: "terminal cover closed",
    42: "strong DC field detected",
    43: "strong DC field removed",
    44: "meter cover opened",
    45: "meter cover closed",
    46: "association authentication failure",
    47: "configuration changed",
    48: "global key changed",
    49: "decryption or authentication failure",
    50: "replay attack",
    60: "manual disconnection",
    61: "manual connection",
    62: "remote disconnection",
    63: "remote connection",
    64: "local disconnection",
    65: "local reconnection",
    66: "limiter threshold exceeded",
    67: "limiter threshold ok",
    68: "limiter threshold changed",
    69: "disconnect/reconnect failure",
}

#: ``publish(meter_id, kind, payload)``, as the collector's.
Publish = Callable[[str, str, dict[str, Any]], None]


def event_name(code: int) -> str:
    """Name of an event code; unknown codes keep their number."""
    return EVENT_NAMES.get(code, f"event {code}")


@dataclass(slots=True)
class LogRead:
    """What one read of one log asked for and what it brought that was new."""

    log_obis: str
    requested_from: datetime | None  # None: the whole buffer
    entries: int = 0  # entries the meter returned
    new: list[Event] = field(default_factory=list)
    stored: int = 0


@dataclass(slots=True)
class EventCollection:
    """One meter's event collection: the reads, new events and outages."""

    meter_id: str
    logs: list[LogRead] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)

    @property
    def new_events(self) -> list[Event]:
        return [e for r in self.logs for e in r.new]


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


async def read_log(
    session: Session,
    meter_id: str,
    log_obis: str,
    since: datetime | None,
    known_at_since: set[int] | frozenset[int] = frozenset(),
) -> LogRead:
    """Read one event log from ``since`` (inclusive) on; keep entries not already known."""
    data = (
        await read_profile(session, log_obis, since, None)
        if since
        else (await read_profile(session, log_obis))
    )
    code_col = next(
        (i for i, c in enumerate(data.columns) if c.obis == EVENT_CODE_OBIS),
        next((i for i, c in enumerate(data.columns) if c.class_id != CLASS_CLOCK), None),
    )
    if code_col is None:
        raise ProtocolError(f"event log {log_obis} has no event code column")
    out = LogRead(log_obis, since, entries=len(data.rows))
    for row in data.rows:
        ts = _aware(row.timestamp)
        code = row.values[code_col]
        if not isinstance(code, int) or isinstance(code, bool):
            raise ProtocolError(f"event log {log_obis}: event code {code!r} is not an integer")
        if since is not None and (ts < since or (ts == since and code in known_at_since)):
            continue
        out.new.append(Event(meter_id, log_obis, ts, code, event_name(code)))
    return out


def outages_from(
    meter_id: str, power_events: Sequence[Event], open_down: datetime | None = None
) -> tuple[list[Outage], datetime | None]:
    """Pair power-downs with the next power-up; returns the outages and any still open."""
    found: list[Outage] = []
    down = open_down
    for e in sorted(power_events, key=lambda e: (e.ts, e.code)):
        if e.code == POWER_DOWN:
            down = e.ts
        elif e.code == POWER_UP and down is not None:
            found.append(Outage(meter_id, down, e.ts))
            down = None
    return found, down


async def collect_events(
    session: Session,
    db: Database,
    meter_id: str,
    *,
    logs: Sequence[str] = EVENT_LOGS,
    publish: Publish | None = None,
    **extra: Any,
) -> EventCollection:
    """Read the new entries of each log, store them and the outages, publish them.

    Needs an association allowed to read the logs (the management client on most meters).
    A failing publish is logged and never loses the stored events.
    """
    result = EventCollection(meter_id)
    for log_obis in logs:
        since = await asyncio.to_thread(last_event_time, db, meter_id, log_obis)
        known: set[int] = set()
        if since is not None:
            known = await asyncio.to_thread(event_codes_at, db, meter_id, log_obis, since)
        open_down = None
        if log_obis == POWER_FAILURE_LOG:
            open_down = await asyncio.to_thread(pending_power_down, db, meter_id, log_obis)
        read = await read_log(session, meter_id, log_obis, since, known)
        read.stored = await asyncio.to_thread(db.insert_events, read.new)
        result.logs.append(read)
        if log_obis == POWER_FAILURE_LOG:
            power = [e for e in read.new if e.code in (POWER_DOWN, POWER_UP)]
            outages, _ = outages_from(meter_id, power, open_down)
            await asyncio.to_thread(insert_outages, db, outages)
            result.outages.extend(outages)
    new = result.new_events
    if publish is not None and new:
        try:
            await asyncio.to_thread(
                publish, meter_id, "events", events_payload(meter_id, new, **extra)
            )
        except Exception as exc:
            log.error("publish_failed", extra={"fields": {"meter": meter_id, "error": repr(exc)}})
    return result
