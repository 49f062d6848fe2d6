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
date-time and, as body, the values of the push object list: logical device name
(0-0:42.0.0.255, octet-string), serial number (0-0:96.1.0.255, visible-string) and event
code (0-0:96.11.0.255, unsigned).
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

from protocols import axdr, xdlms
from protocols.wrapper import encode_wrapper
from simulator import model
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


def notification(alarm: Alarm, seed: int, invoke_id: int) -> bytes:
    """The wrapper PDU pushing ``alarm`` (Data-Notification stamped with the meter time)."""
    spec = model.meter_spec(alarm.meter_id, seed)
    body = axdr.encode(
        axdr.structure(
            axdr.octets(spec.logical_device_name),
            axdr.visible(spec.serial_number),
            axdr.u8(alarm.code),
        )
    )
    pdu = xdlms.build_data_notification(invoke_id & 0xFFFFFF, body, datetime_bytes(alarm.time))
    return encode_wrapper(METER_WPORT, PUSH_WPORT, pdu)


@dataclass(slots=True)
class PushStats:
    sent: int = 0
    failed: int = 0
    last_error: str | None = None
    alarms: list[Alarm] = field(default_factory=list)


class AlarmPusher:
    """Push every meter's alarms to ``host:port`` as they fall due on ``clock``.

    ``clock`` is true time (the fleet's clock); each meter's own clock (drift included) decides
    when its alarms are due, from ``clock()`` at :meth:`run` on. A push that cannot be
    delivered (listener down) is counted in ``stats.failed`` and not retried, as a meter
    without a push retry policy would. ``keep_sent`` keeps the pushed alarms in
    ``stats.alarms`` for checking.
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
        self.stats = PushStats()
        self._ids = itertools.count(1)

    def _meter_time(self, meter_id: int, true_time: float) -> float:
        return model.meter_clock(model.meter_spec(meter_id, self.seed), true_time)

    async def run(self) -> None:
        """Push until cancelled; alarms are planned an hour of true time ahead at a time."""
        start = self.clock()
        horizon = start
        due: list[tuple[float, Alarm]] = []
        while True:
            now = self.clock()
            if now + self.poll_s >= horizon:
                ahead = max(now, horizon) + _HOUR
                for meter_id in self.meters:
                    lo = self._meter_time(meter_id, horizon)
                    hi = self._meter_time(meter_id, ahead)
                    for alarm in alarm_schedule(meter_id, self.seed, lo, hi, self.per_day):
                        spec = model.meter_spec(meter_id, self.seed)
                        heapq.heappush(due, (model.true_time(spec, alarm.time), alarm))
                horizon = ahead
            while due and due[0][0] <= now:
                _, alarm = heapq.heappop(due)
                await self.push(alarm)
            await asyncio.sleep(self.poll_s)

    async def push(self, alarm: Alarm) -> bool:
        """Send one alarm on its own connection; False when the listener could not be reached."""
        data = notification(alarm, self.seed, next(self._ids))
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(data)
                await writer.drain()
        except (OSError, TimeoutError) as exc:
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
        if self.keep_sent:
            self.stats.alarms.append(alarm)
        return True
