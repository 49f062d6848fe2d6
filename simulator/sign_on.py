"""Serial meters that need the IEC 62056-21 mode E sign-on before they speak HDLC.

:class:`SignOnBus` stands in front of an ``HdlcBus`` on a serial line (``PtyBus``). At first
the line is at 300 baud 7E1 (on the 8N1 pty, bit 7 of each byte is the parity bit): every
byte goes to the sign-on (``protocols.iec62056_21``), which drops what is not a request, so
HDLC frames get no answer at all. The meter a request names (by device address; a request
without one is answered only on a line with a single meter, as through an optical probe)
sends its identification; once the head-end's acknowledgement selects HDLC, that meter alone
listens at the agreed baud and the bus answers its frames. When the HDLC link ends (DISC, or
the meter drops it), or the line stays silent for ``idle_s``, the meter is back at 300 baud
waiting for a sign-on.
"""

from __future__ import annotations

from collections.abc import Callable

from protocols.iec62056_21 import (
    INITIAL_BAUD,
    REACTION_TIME_S,
    HdlcSelected,
    Identification,
    MeterSignOn,
    SignOnRequested,
    with_even_parity,
    without_even_parity,
)
from simulator.bus_server import BusReply, HdlcBus
from simulator.meter import SimulatedMeter

#: The manufacturer id simulated meters give in their identification.
MANUFACTURER = "SIM"
#: Seconds of silence after which a signed-on meter is back at 300 baud: the usual default
#: of the HDLC inactivity time-out (IEC HDLC setup object, 120 s).
IDLE_S = 120.0
#: Device address -> physical address of the meter it names on this line (None: nobody).
Selector = Callable[[str], int | None]
#: The identification a meter sends, at the baud character it proposes.
Identifier = Callable[[SimulatedMeter], Identification]


class SignOnBus:
    """An ``HdlcBus`` whose meters each need a mode E sign-on first (see the module doc)."""

    def __init__(
        self,
        bus: HdlcBus,
        select: Selector,
        identify: Identifier,
        *,
        idle_s: float = IDLE_S,
    ) -> None:
        self.bus = bus
        self.select = select
        self.identify = identify
        self.idle_s = idle_s
        self.stats = bus.stats
        #: Sign-ons that ended in HDLC.
        self.sign_ons = 0
        self._machine = MeterSignOn()
        self._candidate: int | None = None
        self._listening: int | None = None
        self._baud = INITIAL_BAUD
        self._linked = False
        self._last_rx: float | None = None

    def line_baud(self, configured: int | None) -> int | None:
        if configured is None:
            return None
        return self._baud if self._listening is not None else INITIAL_BAUD

    def reset(self) -> None:
        self.bus.reset()
        self._back_to_sign_on()

    def respond(self, data: bytes, now: float, mono: float) -> BusReply:
        idle = self._last_rx is not None and mono - self._last_rx > self.idle_s
        self._last_rx = mono
        if self._listening is not None and idle:
            self.reset()
        if self._listening is not None:
            return self._hdlc(data, now, mono, self._listening)
        # The meter's UART is at 7E1 for now: characters with a parity error are lost.
        out = bytearray()
        for event in self._machine.receive_data(without_even_parity(data, drop_errors=True)):
            if isinstance(event, SignOnRequested):
                out += self._identification(event.device_address, now)
            elif isinstance(event, HdlcSelected) and self._candidate is not None:
                self._listening, self._baud, self._linked = self._candidate, event.baudrate, False
                self.sign_ons += 1
        return BusReply(with_even_parity(bytes(out)), delay=REACTION_TIME_S if out else 0.0)

    def _identification(self, address: str, now: float) -> bytes:
        physical = self.select(address)
        meter = None if physical is None else self.bus.powered(physical, now)
        if physical is None or meter is None:
            self._machine.ignore()
            return b""
        garbled = meter.quirks.identification
        if garbled is not None:
            self._machine.ignore()
            return garbled
        self._candidate = physical
        return self._machine.identify(self.identify(meter))

    def _hdlc(self, data: bytes, now: float, mono: float, physical: int) -> BusReply:
        reply = self.bus.respond(data, now, mono, only=physical)
        if self.bus.has_link(physical):
            self._linked = True
        elif self._linked or reply.drop:
            self._back_to_sign_on()
        return reply

    def _back_to_sign_on(self) -> None:
        self._machine.reset()
        self._candidate = self._listening = None
        self._baud = INITIAL_BAUD
        self._linked = False
