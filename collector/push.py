"""Push listener: accept DataNotification alarms from meters over TCP, store and publish them.

Meters connect to the head-end (IEC 62056-47 wrapper over TCP) and send unconfirmed
Data-Notifications. The body holds the values of the meter's push object list; the listener
looks, in order, for the serial number (visible-string) and the logical device name
(octet-string) among the body's values and takes the first that names an inventory meter, and
for the event code (the first integer). The notification's date-time is the alarm time (the
arrival time when the meter sent none).

An alarm is stored as an event of the pseudo log ``storage.operations.PUSH_LOG`` (idempotent
on meter/time/code, so a repeated push is stored once) and published to ``hes/<meter>/alarm``
only when it was new. Anything else (not a DataNotification, an undecodable body, an unknown
meter) is counted and logged with the reason, and the connection closed; nothing is stored.
Listens on 127.0.0.1 by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector.events import event_name
from collector.mqtt_payloads import alarm_payload
from protocols import axdr, xdlms
from protocols.cosem import CosemDateTime
from protocols.errors import DecodeError
from protocols.wrapper import WrapperDecoder
from storage.database import Database
from storage.operations import PUSH_LOG
from storage.records import Event

log = logging.getLogger("hes.push")

Publish = Callable[[str, str, dict[str, Any]], None]
#: Longest a connection may stay open without completing a PDU.
IDLE_TIMEOUT_S = 30.0


class PushRejected(ValueError):
    """A push that cannot be taken: says why."""


@dataclass(slots=True, frozen=True)
class PushedAlarm:
    """A decoded alarm push."""

    meter_id: str
    ts: datetime
    code: int
    name: str


@dataclass(slots=True)
class ListenerStats:
    connections: int = 0
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    published: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "published": self.published,
            "rejected": dict(self.rejected),
        }


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [x for v in value for x in _flatten(v)]
    return [value]


def decode_alarm(
    notification: xdlms.DataNotification,
    is_meter: Callable[[str], bool],
    received_at: datetime,
) -> PushedAlarm:
    """The alarm a Data-Notification carries; PushRejected says what is wrong with it."""
    try:
        values = _flatten(axdr.decode(notification.body))
    except DecodeError as exc:
        raise PushRejected(f"undecodable notification body: {exc}") from None
    candidates: list[str] = [v for v in values if isinstance(v, str)]
    for v in values:
        if isinstance(v, bytes):
            with contextlib.suppress(UnicodeDecodeError):
                candidates.append(v.decode("ascii"))
    meter_id = next((c for c in candidates if c and is_meter(c)), None)
    if meter_id is None:
        raise PushRejected(f"no inventory meter among the identifiers {candidates[:3]!r}")
    code = next((v for v in values if isinstance(v, int) and not isinstance(v, bool)), None)
    if code is None:
        raise PushRejected(f"{meter_id}: notification carries no event code")
    ts = received_at
    if notification.date_time is not None:
        try:
            stamp = CosemDateTime.from_bytes(notification.date_time).to_datetime()
        except DecodeError as exc:
            raise PushRejected(f"{meter_id}: bad notification date-time: {exc}") from None
        ts = stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
    return PushedAlarm(meter_id, ts, code, event_name(code))


class PushListener:
    """``await listener.start()`` ... ``await listener.close()``; ``port`` after start."""

    def __init__(
        self,
        db: Database,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        publish: Publish | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        keep: int = 1000,
        on_alarm: Callable[[PushedAlarm], None] | None = None,
    ) -> None:
        self.db = db
        self.on_alarm = on_alarm
        self.host = host
        self.port = port
        self.publish = publish
        self.now = now
        self.stats = ListenerStats()
        #: The latest ``keep`` new alarms (all of them are in the database): bounded, as the
        #: listener runs for months inside the service.
        self.alarms: deque[PushedAlarm] = deque(maxlen=keep)
        self._server: asyncio.Server | None = None
        self._known: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._refresh()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)

    async def _refresh(self) -> None:
        meters = await asyncio.to_thread(self.db.meters)
        self._known = {m.meter_id for m in meters}

    def _is_meter(self, meter_id: str) -> bool:
        return meter_id in self._known

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.stats.connections += 1
        decoder = WrapperDecoder()
        try:
            while True:
                async with asyncio.timeout(IDLE_TIMEOUT_S):
                    data = await reader.read(4096)
                if not data:
                    break
                for pdu in decoder.feed(data):
                    await self._handle(pdu.apdu)
        except DecodeError as exc:
            self._reject("bad_wrapper", str(exc))
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    def _reject(self, reason: str, detail: str) -> None:
        self.stats.reject(reason)
        log.warning("push_rejected", extra={"fields": {"reason": reason, "detail": detail}})

    async def _handle(self, data: bytes) -> None:
        self.stats.received += 1
        try:
            response = xdlms.decode_response(data)
        except DecodeError as exc:
            self._reject("bad_apdu", str(exc))
            return
        if not isinstance(response, xdlms.DataNotification):
            self._reject("not_a_notification", type(response).__name__)
            return
        try:
            alarm = decode_alarm(response, self._is_meter, self.now())
        except PushRejected as first:
            await self._refresh()  # a meter imported since the listener started
            try:
                alarm = decode_alarm(response, self._is_meter, self.now())
            except PushRejected:
                self._reject("bad_notification", str(first))
                return
        await self.store(alarm)

    async def store(self, alarm: PushedAlarm) -> bool:
        """Store one alarm and publish it if it was new; True when new."""
        event = Event(alarm.meter_id, PUSH_LOG, alarm.ts, alarm.code, alarm.name)
        new = await asyncio.to_thread(self.db.insert_events, [event]) > 0
        if not new:
            self.stats.duplicates += 1
            return False
        self.stats.stored += 1
        self.alarms.append(alarm)
        if self.on_alarm is not None:
            self.on_alarm(alarm)
        if self.publish is not None:
            payload = alarm_payload(alarm.meter_id, alarm.ts, alarm.code, alarm.name)
            try:
                await asyncio.to_thread(self.publish, alarm.meter_id, "alarm", payload)
                self.stats.published += 1
            except Exception as exc:
                log.error(
                    "publish_failed",
                    extra={"fields": {"meter": alarm.meter_id, "error": repr(exc)}},
                )
        return True
