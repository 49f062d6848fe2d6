"""Push alarms of simulated meters: DataNotifications sent to a head-end listener over TCP.

Which alarms a meter raises, and when (meter time), is a pure function of (meter, seed, time)
like the rest of the model, so a test knows what must arrive (:func:`alarm_schedule`):

* cover opened (44), magnetic tamper (42: strong DC field detected) and relay state changed
  (64 local disconnection / 65 local reconnection) at seeded instants, ``per_day`` alarms a
  meter-day on average (one seeded draw per meter-hour);
* power down (1) and power up (2) at the model's outage boundaries (``model.outage``), the
  same instants the power-failure log holds.

Codes as in ``collector.events`` (IDIS-style standard event list).

Each alarm goes out on a fresh TCP connection (as a GPRS meter wakes up to push) as one
IEC 62056-47 wrapper PDU from the meter's management logical device (wPort 1) to the push
client wPort :data:`PUSH_WPORT`. The Data-Notification carries the meter clock as its
date-time and, as body, the values of the meter's alarm push setup object list
(``simulator.push_setup``: by default the list itself, logical device name 0-0:42.0.0.255,
serial number 0-0:96.1.0.255 and event code 0-0:96.11.0.255; without the list for a meter
with the ``push_without_object_list`` quirk). The push setup also decides the destination
and the communication windows; an ACTION push sends a setup's values at once
(:meth:`AlarmPusher.action_push`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from protocols import axdr, xdlms
from protocols import push_setup as ps
from protocols.wrapper import encode_wrapper
from simulator import attributes, model, objects, push_setup
from simulator.fleet import Fleet
from simulator.meter import SimulatedMeter
from simulator.objects import datetime_bytes

log = logging.getLogger("hes.simulator.push")

COVER_OPENED = 44
MAGNETIC_TAMPER = 42
POWER_DOWN = model.EVENT_POWER_DOWN
POWER_UP = model.EVENT_POWER_UP
RELAY_DISCONNECTED = 64
RELAY_RECONNECTED = 65
ALARM_CODES = (
    COVER_OPENED,
    MAGNETIC_TAMPER,
    POWER_DOWN,
    POWER_UP,
    RELAY_DISCONNECTED,
    RELAY_RECONNECTED,
)
#: Source wPort (management logical device) and destination wPort (push client).
METER_WPORT = 1
PUSH_WPORT = 0x66
DEFAULT_PER_DAY = 2.0
_SALT_PUSH = 0x9054
_HOUR = 3600
_SEEDED = (COVER_OPENED, MAGNETIC_TAMPER, RELAY_DISCONNECTED)


@dataclass(slots=True, frozen=True, order=True)
class Alarm:
    """One alarm: meter time (unix seconds) it is raised at, the meter and its event code."""

    time: int
    meter_id: int
    code: int


def alarm_schedule(
    meter_id: int, seed: int, start: float, end: float, per_day: float = DEFAULT_PER_DAY
) -> list[Alarm]:
    """The alarms meter ``meter_id`` raises with start <= meter time < end, by time."""
    if per_day < 0 or per_day > 24:
        raise ValueError(f"alarms per day {per_day} outside 0..24 (at most one an hour)")
    out: list[Alarm] = []
    threshold = int(per_day / 24 * 1_000_000)
    for hour in range(int(start) // _HOUR, -(-int(end) // _HOUR)):
        x = model._mix(meter_id, hour, seed, _SALT_PUSH)
        if x % 1_000_000 >= threshold:
            continue
        t = hour * _HOUR + (x >> 20) % _HOUR
        code = _SEEDED[(x >> 40) % len(_SEEDED)]
        if code == RELAY_DISCONNECTED and (x >> 50) & 1:
            code = RELAY_RECONNECTED
        if start <= t < end:
            out.append(Alarm(t, meter_id, code))
    spec = model.meter_spec(meter_id, seed)
    first_day = (int(start) - model.EPOCH) // model.DAY
    last_day = (int(end) - 1 - model.EPOCH) // model.DAY
    for day in range(first_day, last_day + 1):
        if not 0 <= day < model.N_DAYS:
            continue
        outage = model.outage(spec, day)
        if outage is None:
            continue
        for t, code in ((outage[0], POWER_DOWN), (outage[1], POWER_UP)):
            if start <= t < end:
                out.append(Alarm(t, meter_id, code))
    out.sort()
    return out


def _context(meter: SimulatedMeter, meter_time: float) -> attributes.Context:
    """What reading the push objects' attributes needs (the meter reads its own values)."""
    spec = meter.spec
    quirks = meter.quirks
    return attributes.Context(
        spec=spec,
        state=meter.current_state(),
        meter_time=meter_time,
        management=True,
        client_sap=1,
        conformance=0,
        client_max_pdu=0xFFFF,
        server_max_pdu=0xFFFF,
        mechanism=1,
        objects=objects.object_table(spec.phases),
        energy=meter.energy,
        push_describes=not quirks.push_without_object_list,
    )


def push_body(
    meter: SimulatedMeter, name: bytes, meter_time: float, event_code: int | None = None
) -> bytes:
    """The Data-Notification body of push setup ``name``: a structure of the values of its
    object list at ``meter_time`` (``event_code``, when given, as the event code's value)."""
    ctx = _context(meter, meter_time)
    setup = ctx.setup(name)
    out = bytearray((axdr.STRUCTURE,))
    out += axdr.encode_length(len(setup.objects))
    for entry in setup.objects:
        if entry.class_id == ps.CLASS_ID:
            out += ps.encode_object_list(setup.objects)
        elif event_code is not None and entry.logical_name == objects.OBIS_EVENT_CODE:
            out += axdr.encode(axdr.u8(event_code))
        else:
            obj = ctx.objects[entry.logical_name]
            out += attributes.get_attribute(ctx, obj, entry.attribute_index, None)
    return bytes(out)


def notification(
    alarm: Alarm, seed: int, invoke_id: int, meter: SimulatedMeter | None = None
) -> bytes:
    """The wrapper PDU pushing ``alarm`` (Data-Notification stamped with the meter time) by
    the alarm push setup of ``meter`` (default: the factory setting)."""
    if meter is None:
        meter = SimulatedMeter(alarm.meter_id, seed)
    body = push_body(meter, ps.ALARM_PUSH_SETUP, alarm.time, alarm.code)
    pdu = xdlms.build_data_notification(invoke_id & 0xFFFFFF, body, datetime_bytes(alarm.time))
    return encode_wrapper(METER_WPORT, PUSH_WPORT, pdu)


@dataclass(slots=True, frozen=True)
class ActionPush:
    """A push the head-end asked for (ACTION push): meter, push setup, meter time."""

    meter_id: int
    name: bytes
    meter_time: float


@dataclass(slots=True)
class PushStats:
    sent: int = 0
    failed: int = 0
    #: Alarms raised outside the communication windows with no window ahead: never sent.
    outside_window: int = 0
    last_error: str | None = None
    alarms: list[Alarm] = field(default_factory=list)
    actions: list[ActionPush] = field(default_factory=list)


MeterFor = Callable[[int], SimulatedMeter]


class AlarmPusher:
    """Push every meter's alarms as they fall due on ``clock``, as its push setup says.

    ``clock`` is true time (the fleet's clock); each meter's own clock (drift included) decides
    when its alarms are due, from ``clock()`` at :meth:`run` on. Each meter's alarm push setup
    (``meter_for(number)``: the fleet's meter, default a factory-set one) decides what the
    notification carries, where it goes (an empty destination: ``host:port``) and when (an
    alarm outside the communication windows waits for the next one). ``source_for(number)``
    is the address a meter pushes from (its own, as a GPRS meter's), None: any.
    :meth:`action_push` sends what an ACTION push asked for. A push that cannot be delivered
    (listener down) is counted in ``stats.failed`` and not retried, as a meter without a push
    retry policy would. ``keep_sent`` keeps the pushed alarms and actions in ``stats``.
    """

    def __init__(
        self,
        meters: Iterable[int],
        seed: int,
        host: str,
        port: int,
        *,
        clock: Callable[[], float] = time.time,
        per_day: float = DEFAULT_PER_DAY,
        poll_s: float = 0.2,
        connect_timeout_s: float = 3.0,
        keep_sent: bool = False,
        meter_for: MeterFor | None = None,
        source_for: Callable[[int], str | None] | None = None,
    ) -> None:
        self.meters = list(meters)
        self.seed = seed
        self.host = host
        self.port = port
        self.clock = clock
        self.per_day = per_day
        self.poll_s = poll_s
        self.connect_timeout_s = connect_timeout_s
        self.keep_sent = keep_sent
        self.meter_for: MeterFor = meter_for or (lambda n: SimulatedMeter(n, seed))
        self.source_for = source_for
        self.stats = PushStats()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[bool]] = set()

    def _meter_time(self, meter_id: int, true_time: float) -> float:
        return model.meter_clock(model.meter_spec(meter_id, self.seed), true_time)

    def destination(self, meter: SimulatedMeter, name: bytes) -> tuple[str, int]:
        """Where the meter's push setup ``name`` sends to."""
        setup = push_setup.current(
            meter.current_state().push_setups, name, not meter.quirks.push_without_object_list
        )
        if not setup.destination.destination:
            return self.host, self.port
        return setup.destination.host_port()

    async def run(self) -> None:
        """Push until cancelled; alarms are planned an hour of true time ahead at a time."""
        start = self.clock()
        horizon = start
        due: list[tuple[float, Alarm, bool]] = []
        while True:
            now = self.clock()
            if now + self.poll_s >= horizon:
                ahead = max(now, horizon) + _HOUR
                for meter_id in self.meters:
                    lo = self._meter_time(meter_id, horizon)
                    hi = self._meter_time(meter_id, ahead)
                    spec = model.meter_spec(meter_id, self.seed)
                    for alarm in alarm_schedule(meter_id, self.seed, lo, hi, self.per_day):
                        heapq.heappush(due, (model.true_time(spec, alarm.time), alarm, False))
                horizon = ahead
            while due and due[0][0] <= now:
                _, alarm, held = heapq.heappop(due)
                meter = self.meter_for(alarm.meter_id)
                if not held:
                    setup = _context(meter, alarm.time).setup(ps.ALARM_PUSH_SETUP)
                    send_at = setup.send_at(alarm.time)
                    if send_at is None:
                        self.stats.outside_window += 1
                        continue
                    if send_at > alarm.time:
                        heapq.heappush(due, (model.true_time(meter.spec, send_at), alarm, True))
                        continue
                await self.push(alarm, meter)
            await asyncio.sleep(self.poll_s)

    async def push(self, alarm: Alarm, meter: SimulatedMeter | None = None) -> bool:
        """Send one alarm on its own connection; False when the listener could not be reached."""
        meter = meter or self.meter_for(alarm.meter_id)
        data = notification(alarm, self.seed, next(self._ids), meter)
        sent = await self._send(data, meter, ps.ALARM_PUSH_SETUP)
        if sent and self.keep_sent:
            self.stats.alarms.append(alarm)
        return sent

    def action_push(self, meter: SimulatedMeter, name: bytes, true_now: float) -> None:
        """An ACTION push of ``name`` on ``meter``: its values now, sent in the background
        (a meter answers the ACTION first)."""
        t = meter.meter_time(true_now)
        body = push_body(meter, name, t)
        pdu = xdlms.build_data_notification(next(self._ids) & 0xFFFFFF, body, datetime_bytes(t))
        data = encode_wrapper(METER_WPORT, PUSH_WPORT, pdu)
        push = ActionPush(meter.meter_id, name, t)

        async def send() -> bool:
            sent = await self._send(data, meter, name)
            if sent and self.keep_sent:
                self.stats.actions.append(push)
            return sent

        task = asyncio.get_running_loop().create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, data: bytes, meter: SimulatedMeter, name: bytes) -> bool:
        writer: asyncio.StreamWriter | None = None
        try:
            host, port = self.destination(meter, name)
            source = self.source_for(meter.meter_id) if self.source_for is not None else None
            async with asyncio.timeout(self.connect_timeout_s):
                _, writer = await asyncio.open_connection(
                    host, port, local_addr=(source, 0) if source else None
                )
                writer.write(data)
                await writer.drain()
        except (OSError, TimeoutError, ValueError) as exc:
            self.stats.failed += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("push_failed %s", self.stats.last_error)
            return False
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()
        self.stats.sent += 1
        return True


def fleet_pusher(
    fleet: Fleet,
    meters: Iterable[int],
    push_to: tuple[str, int],
    per_day: float,
    clock: Callable[[], float] | None = None,
    **options: Any,
) -> AlarmPusher:
    """The pusher of a running fleet: its meters' push setups as SET over the fleet's links,
    each TCP meter pushing from its own address, ACTION push answered; ``clock`` (default
    the fleet's) decides when alarms fall due."""

    def source(number: int) -> str | None:
        target = fleet.target(number)
        return target.host if target.transport == "tcp" else None

    pusher = AlarmPusher(
        meters,
        fleet.spec.seed,
        *push_to,
        per_day=per_day,
        clock=clock or fleet.clock,
        meter_for=fleet.pool.view,
        source_for=source,
        **options,
    )
    fleet.pool.on_push = pusher.action_push
    return pusher
