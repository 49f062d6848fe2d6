"""The IEC 62056-21 mode E start-up of a serial port, before HDLC (client I/O).

``protocols.iec62056_21`` builds and parses the messages; this module owns the port while
they go: it sends the request at 300 baud 7E1, reads the identification, waits the meter's
reaction time, sends the acknowledgement, waits until it has left the UART and the meter has
switched, then sets the port to the agreed baud at 8N1 for HDLC.

7E1 is made in software: the port runs at 8N1 and bit 7 of every character carries its even
parity, which puts the same ten bits on the wire (start, 7 data, parity, stop). Many USB
serial adapters cannot do 7E1, and Linux pseudo-terminals refuse PARENB and CS7 (EINVAL),
so the sign-on works the same on all of them. Over a pseudo-terminal the baud rate is
accepted but not enforced: what a test checks there is the bytes and their order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from contracts.meters import MODE_E_STARTUP as MODE_E
from contracts.meters import STARTUPS
from protocols.errors import DlmsTimeout
from protocols.iec62056_21 import (
    BAUD_SWITCH_DELAY_S,
    INITIAL_BAUD,
    ClientSignOn,
    Identification,
    with_even_parity,
    without_even_parity,
)

__all__ = ["MODE_E", "STARTUPS", "SignedOn", "mode_e_start_up", "wire_seconds"]


class ByteStream(Protocol):
    """What the sign-on needs of a transport's stream (``collector.transport.CountedStream``)."""

    async def write(self, data: bytes) -> None: ...

    async def read(self, timeout: float) -> bytes: ...


class SerialSettings(Protocol):
    """The pyserial port, whose settings change once the sign-on has agreed a baud rate."""

    def apply_settings(self, d: dict[str, Any]) -> None: ...


@dataclass(slots=True, frozen=True)
class SignedOn:
    """How the start-up ended: who answered and the baud HDLC runs at."""

    identification: Identification
    baudrate: int


def wire_seconds(nbytes: int, baudrate: int) -> float:
    """Seconds ``nbytes`` take on the line: 10 bits a character at 7E1 and at 8N1 alike."""
    return nbytes * 10.0 / baudrate


async def mode_e_start_up(
    stream: ByteStream,
    port: SerialSettings | None,
    *,
    device_address: str = "",
    timeout: float = 3.0,
    retries: int = 3,
    switch_delay: float = BAUD_SWITCH_DELAY_S,
    description: str = "serial",
) -> SignedOn:
    """Sign on at 300 baud (``port`` opened at 300 8N1: parity in software) and leave
    ``port`` at the agreed baud, 8N1.

    The request is repeated ``retries`` times when no identification comes within
    ``timeout``; then :class:`DlmsTimeout`. A malformed identification raises
    ``DecodeError``, one without mode E ``SignOnError`` (``protocols.iec62056_21``).
    """
    machine = ClientSignOn(device_address)
    loop = asyncio.get_running_loop()
    identification: Identification | None = None
    for _ in range(retries + 1):
        await stream.write(with_even_parity(machine.request()))
        deadline = loop.time() + timeout
        while identification is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                data = await stream.read(remaining)
            except TimeoutError:
                break
            identification = machine.receive_data(without_even_parity(data))
        if identification is not None:
            break
    if identification is None:
        addressed = f" for device address {device_address!r}" if device_address else ""
        hint = "" if device_address else " (on a bus of several meters, give the device address)"
        raise DlmsTimeout(
            f"{description}: no IEC 62056-21 identification{addressed} after "
            f"{retries + 1} requests of {timeout:g} s at {INITIAL_BAUD} baud{hint}"
        )
    await asyncio.sleep(identification.reaction_time_s)
    ack = with_even_parity(machine.acknowledge())
    await stream.write(ack)
    # The UART still holds the acknowledgement when write() returns: let it leave at
    # 300 baud, and give the meter its switch-over time, before changing the port.
    await asyncio.sleep(wire_seconds(len(ack), INITIAL_BAUD) + switch_delay)
    if port is not None:
        import serial

        port.apply_settings({"baudrate": machine.baudrate, "bytesize": serial.EIGHTBITS})
    return SignedOn(identification, machine.baudrate)
