"""Push listener: accept DataNotification alarms from meters over TCP, store and publish them.

Meters connect to the head-end (IEC 62056-47 wrapper over TCP) and send unconfirmed
Data-Notifications. The body is a structure of the values of the meter's push object list
(Blue Book class 40, ``protocols.push_setup``). When its first value is the object list itself
(the push setup's attribute 2 heads the list) the body describes itself; otherwise, as many
meters send, it carries only values and the listener decodes it by the object list stored
for the meter (``hes push show`` / ``hes push set``, ``storage.push_setups``): the one whose
length fits, the alarm push's first. The sender is the inventory meter that a serial number
(0-0:96.1.0.255) or logical device name (0-0:42.0.0.255) among the values names (any text
value when no list is carried); when the values name no meter at all, the TCP meter at the
sender's address. The alarm is the
value of the event code (0-0:96.11.0.255); the notification's date-time is the alarm time
(the arrival time when the meter sent none).

An alarm is stored as an event of the pseudo log ``storage.operations.PUSH_LOG`` (idempotent
on meter/time/code, so a repeated push is stored once) and published to ``hes/<meter>/alarm``
only when it was new. Anything else is counted under its reason (``not_a_notification``,
``bad_notification``: an undecodable body or date-time, ``unknown_meter``,
``no_object_list``: values only and no push setup stored for the meter,
``object_list_mismatch``, ``no_event_code``) and logged with a message saying what to do, and
the connection closed; nothing is stored.
Listens on 127.0.0.1 by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector.events import event_name
from collector.mqtt_payloads import alarm_payload
from protocols import axdr, xdlms
from protocols import push_setup as ps
from protocols.cosem import CosemDateTime
from protocols.errors import DecodeError
from protocols.wrapper import WrapperDecoder
from storage.database import Database
from storage.operations import PUSH_LOG
from storage.push_setups import load_push_setups
from storage.records import Event, RegisterRead

log = logging.getLogger("hes.push")

Publish = Callable[[str, str, dict[str, Any]], None]
#: Longest a connection may stay open without completing a PDU.
IDLE_TIMEOUT_S = 30.0
#: (push setup logical name, its object list) as stored for a meter.
StoredList = tuple[bytes, tuple[ps.PushObject, ...]]
OBIS_SERIAL = bytes((0, 0, 96, 1, 0, 255))
OBIS_LDN = bytes((0, 0, 42, 0, 0, 255))
OBIS_EVENT_CODE = bytes((0, 0, 96, 11, 0, 255))
REGISTER = 3
CLOCK = 8


class PushRejected(ValueError):
    """A push that cannot be taken: says why; ``reason`` is the counter it is rejected under."""

    def __init__(self, message: str, reason: str = "bad_notification") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True, frozen=True)
class PushedAlarm:
    """A decoded alarm push."""

    meter_id: str
    ts: datetime
    code: int
    name: str
    #: Which object list decoded it: "carried" in the notification, or the meter's "stored".
    object_list: str = "carried"


@dataclass(slots=True, frozen=True)
class PushedValues:
    """Register values a push carried (an interval push), each with its scaler_unit."""

    meter_id: str
    ts: datetime
    registers: tuple[RegisterRead, ...]
    object_list: str = "carried"


@dataclass(slots=True)
class ListenerStats:
    connections: int = 0
    received: int = 0
    stored: int = 0
    #: Register values stored from values pushes (a repeated push stores nothing new).
    values_stored: int = 0
    duplicates: int = 0
    published: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    #: Pushes (alarms and values) by the object list that decoded them: "carried" or "stored".
    decoded: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "received": self.received,
            "stored": self.stored,
            "values_stored": self.values_stored,
            "duplicates": self.duplicates,
            "published": self.published,
            "rejected": dict(self.rejected),
            "decoded": dict(self.decoded),
        }


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [x for v in value for x in _flatten(v)]
    return [value]


def _texts(values: Sequence[Any]) -> list[str]:
    """The values that could name a meter: strings, and octet-strings that are ASCII."""
    out: list[str] = [v for v in values if isinstance(v, str)]
    for v in values:
        if isinstance(v, bytes):
            with contextlib.suppress(UnicodeDecodeError):
                out.append(v.decode("ascii"))
    return out


def _identifiers(pairs: Sequence[tuple[ps.PushObject, Any]]) -> list[str]:
    return _texts([v for o, v in pairs if o.logical_name in (OBIS_SERIAL, OBIS_LDN)])


def _choose_list(
    meter_id: str, values: tuple[Any, ...], lists: Sequence[StoredList]
) -> tuple[ps.PushObject, ...]:
    """The stored object list a values-only push was sent by; PushRejected says why none."""
    if not lists:
        raise PushRejected(
            f"{meter_id}: notification without an object list and no push setup stored for "
            f"the meter: read it with `hes push show {meter_id}`",
            "no_object_list",
        )
    fits = [objs for _, objs in lists if len(objs) == len(values)]
    if not fits:
        sizes = ", ".join(f"{'.'.join(map(str, n))}: {len(o)}" for n, o in lists)
        raise PushRejected(
            f"{meter_id}: notification carries {len(values)} values; the stored push object "
            f"lists have {sizes} entries (re-read them with `hes push show {meter_id}`)",
            "object_list_mismatch",
        )
    with_code = [objs for objs in fits if any(o.logical_name == OBIS_EVENT_CODE for o in objs)]
    return (with_code or fits)[0]


def _pairs(
    meter_id: str | None, objects: Sequence[ps.PushObject], values: Sequence[Any]
) -> list[tuple[ps.PushObject, Any]]:
    try:
        return ps.values_by_object_list(objects, values)
    except DecodeError as exc:
        raise PushRejected(f"{meter_id or 'push'}: {exc}", "object_list_mismatch") from None


def _stamp(raw: bytes, meter_id: str) -> datetime:
    try:
        stamp = CosemDateTime.from_bytes(raw).to_datetime()
    except DecodeError as exc:
        raise PushRejected(f"{meter_id}: bad notification date-time: {exc}") from None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def _registers(
    meter_id: str, ts: datetime, pairs: Sequence[tuple[ps.PushObject, Any]]
) -> list[RegisterRead]:
    """Register values (class 3, attribute 2) pushed together with their scaler_unit
    (attribute 3): without it a value cannot be stored in its unit."""
    scalers: dict[bytes, tuple[int, int]] = {}
    for o, v in pairs:
        if o.class_id == REGISTER and o.attribute_index == 3 and isinstance(v, tuple):
            if len(v) == 2 and all(isinstance(x, int) for x in v):
                scalers[o.logical_name] = (int(v[0]), int(v[1]))
    out = []
    for o, v in pairs:
        if o.class_id != REGISTER or o.attribute_index != 2 or o.logical_name not in scalers:
            continue
        if isinstance(v, int) and not isinstance(v, bool):
            scaler, unit = scalers[o.logical_name]
            out.append(RegisterRead(meter_id, o.obis, ts, int(v), scaler, unit))
    return out


def decode_push(
    notification: xdlms.DataNotification,
    is_meter: Callable[[str], bool],
    received_at: datetime,
    object_lists: Callable[[str], Sequence[StoredList]] = lambda _m: (),
    meter_at: Callable[[], str | None] = lambda: None,
) -> PushedAlarm | PushedValues:
    """What a Data-Notification carries: an alarm (it holds an event code) or register
    values (each with its scaler_unit); PushRejected says what is wrong with it.

    The body is decoded by the object list it carries, else by the sending meter's stored
    one (``object_lists(meter_id)``: (push setup, object list) pairs). The meter is the
    inventory meter a serial number or logical device name among the values names; when the
    values name none at all, ``meter_at()`` (the meter at the sender's address). The time is
    the notification's date-time, for values the pushed clock first (arrival time: neither).
    """
    try:
        body = axdr.decode(notification.body)
    except DecodeError as exc:
        raise PushRejected(f"undecodable notification body: {exc}") from None
    described, values = ps.split_self_described(body)
    candidates = (
        _identifiers(_pairs(None, described, values))
        if described is not None
        else _texts(_flatten(values))
    )
    # the sender's address names it only when the values do not name a meter themselves
    meter_id = next((c for c in candidates if c and is_meter(c)), None)
    if meter_id is None and not candidates:
        meter_id = meter_at()
    if meter_id is None:
        raise PushRejected(
            f"no inventory meter among the identifiers {candidates[:3]!r} nor at the "
            "sender's address",
            "unknown_meter",
        )
    objects = described or _choose_list(meter_id, values, object_lists(meter_id))
    pairs = _pairs(meter_id, objects, values)
    how = "carried" if described is not None else "stored"
    ts = received_at
    if notification.date_time is not None:
        ts = _stamp(notification.date_time, meter_id)
    code = next((v for o, v in pairs if o.logical_name == OBIS_EVENT_CODE), None)
    if isinstance(code, int) and not isinstance(code, bool):
        return PushedAlarm(meter_id, ts, code, event_name(code), how)
    clock = next((v for o, v in pairs if o.class_id == CLOCK and o.attribute_index == 2), None)
    if isinstance(clock, bytes) and len(clock) == 12:
        ts = _stamp(clock, meter_id)
    registers = _registers(meter_id, ts, pairs)
    if not registers:
        raise PushRejected(
            f"{meter_id}: notification carries neither an event code nor a register value "
            "with its scaler_unit",
            "no_event_code",
        )
    return PushedValues(meter_id, ts, tuple(registers), how)


def decode_alarm(
    notification: xdlms.DataNotification,
    is_meter: Callable[[str], bool],
    received_at: datetime,
    object_lists: Callable[[str], Sequence[StoredList]] = lambda _m: (),
    meter_at: Callable[[], str | None] = lambda: None,
) -> PushedAlarm:
    """The alarm a Data-Notification carries (:func:`decode_push`); values are no alarm."""
    pushed = decode_push(notification, is_meter, received_at, object_lists, meter_at)
    if not isinstance(pushed, PushedAlarm):
        raise PushRejected(
            f"{pushed.meter_id}: notification carries no event code", "no_event_code"
        )
    return pushed


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
        self._lists: dict[str, list[StoredList]] = {}
        self._by_host: dict[str, str] = {}
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
        setups = await asyncio.to_thread(load_push_setups, self.db)
        self._known = {m.meter_id for m in meters}
        lists: dict[str, list[StoredList]] = {}
        for r in setups:
            lists.setdefault(r.meter_id, []).append((r.logical_name, r.objects))
        self._lists = lists
        hosts: dict[str, list[str]] = {}
        for m in meters:
            if m.transport == "tcp" and m.host:
                hosts.setdefault(m.host, []).append(m.meter_id)
        # only an address one meter has names it
        self._by_host = {h: ids[0] for h, ids in hosts.items() if len(ids) == 1}

    def _is_meter(self, meter_id: str) -> bool:
        return meter_id in self._known

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.stats.connections += 1
        decoder = WrapperDecoder()
        peer = writer.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else None
        try:
            while True:
                async with asyncio.timeout(IDLE_TIMEOUT_S):
                    data = await reader.read(4096)
                if not data:
                    break
                for pdu in decoder.feed(data):
                    await self._handle(pdu.apdu, host)
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

    def _decode(
        self, notification: xdlms.DataNotification, host: str | None
    ) -> PushedAlarm | PushedValues:
        return decode_push(
            notification,
            self._is_meter,
            self.now(),
            lambda m: self._lists.get(m, ()),
            lambda: self._by_host.get(host) if host is not None else None,
        )

    async def _handle(self, data: bytes, host: str | None = None) -> None:
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
            alarm = self._decode(response, host)
        except PushRejected:
            # a meter imported, or a push setup read, since the listener started
            await self._refresh()
            try:
                alarm = self._decode(response, host)
            except PushRejected as exc:
                self._reject(exc.reason, str(exc))
                return
        self.stats.decoded[alarm.object_list] = self.stats.decoded.get(alarm.object_list, 0) + 1
        if isinstance(alarm, PushedValues):
            written = await asyncio.to_thread(self.db.insert_register_reads, alarm.registers)
            self.stats.values_stored += written
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
