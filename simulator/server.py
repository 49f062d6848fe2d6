"""Asyncio I/O of the simulator: the sockets and ptys behind which simulated meters answer.

Three ways in, as in the field:
- ``WrapperServer``: GPRS/4G-style meters, DLMS over TCP with the IEC 62056-47 wrapper. One
  listening socket serves many meters; the meter is chosen by the connection's local address
  (one loopback address per meter) or, failing that, the listening port.
- ``HdlcTcpServer``: an RS-485 bus behind a terminal server: one TCP port per bus, HDLC frames
  routed to the meter whose physical address they carry. Like a real terminal server it takes
  one TCP client at a time, so a bus never carries two sessions at once.
- ``PtyBus``: the same bus on a pseudo-terminal, for serial test benches.

The protocol work is done by the sans-IO parts (``protocols`` and ``simulator.meter``); this
module only moves bytes and applies timing (latency, baud rate) and injected faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field

from protocols.errors import DecodeError
from protocols.hdlc import (
    ApduReceived,
    Disconnected,
    FrameDecoder,
    HdlcAddress,
    HdlcConnection,
    HdlcFrame,
    HdlcSettings,
    Role,
    Transmit,
)
from protocols.wrapper import WrapperDecoder, encode_wrapper
from simulator.meter import MeterSession, SimulatedMeter

Clock = Callable[[], float]
MeterResolver = Callable[[str, int], SimulatedMeter | None]


@dataclass(slots=True)
class ServerStats:
    """Counters a load test reads back: sessions, bytes on the wire, concurrency."""

    connections: int = 0
    sessions_in_flight: int = 0
    peak_sessions_in_flight: int = 0
    apdus: int = 0
    bytes_rx: int = 0
    bytes_tx: int = 0
    rejected_busy: int = 0
    busy_seconds: dict[str, float] = field(default_factory=dict)

    def session_started(self) -> None:
        self.connections += 1
        self.sessions_in_flight += 1
        self.peak_sessions_in_flight = max(self.peak_sessions_in_flight, self.sessions_in_flight)

    def session_ended(self) -> None:
        self.sessions_in_flight -= 1


class WrapperServer:
    """DLMS/COSEM over TCP (IEC 62056-47) for many meters on one listening socket."""

    def __init__(
        self,
        resolve: MeterResolver,
        host: str = "127.0.0.1",
        port: int = 4059,
        *,
        clock: Clock = time.time,
        latency: Callable[[SimulatedMeter], float] | None = None,
    ) -> None:
        self.resolve = resolve
        self.host = host
        self.port = port
        self.clock = clock
        self.latency = latency
        self.stats = ServerStats()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True, backlog=4096
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        local_ip, local_port = writer.get_extra_info("sockname")[:2]
        meter = self.resolve(local_ip, local_port)
        if meter is None or not meter.online(self.clock()):
            writer.close()
            return
        self.stats.session_started()
        session: MeterSession | None = None
        decoder = WrapperDecoder()
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                self.stats.bytes_rx += len(data)
                try:
                    pdus = decoder.feed(data)
                except DecodeError:
                    break
                for pdu in pdus:
                    if session is None:
                        session = meter.new_session(pdu.source)
                    reply = session.handle(pdu.apdu, self.clock())
                    self.stats.apdus += 1
                    if reply is None:
                        continue
                    if self.latency is not None:
                        delay = self.latency(meter)
                        if delay > 0:
                            await asyncio.sleep(delay)
                    out = encode_wrapper(pdu.destination, pdu.source, reply)
                    writer.write(out)
                    self.stats.bytes_tx += len(out)
                    await writer.drain()
                if session is not None and session.released:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            self.stats.session_ended()
            writer.close()


class HdlcBus:
    """The meters of one RS-485 bus, addressed by HDLC physical address.

    Sans-IO: ``feed(bytes, now)`` returns the bytes the meters put on the bus in answer. Every
    meter keeps its own HDLC connection and DLMS association, as on a real multidrop line.
    """

    def __init__(
        self,
        meters: dict[int, SimulatedMeter],
        settings: HdlcSettings | None = None,
        logical_address: int = 1,
    ) -> None:
        self.meters = meters
        self.settings = settings or HdlcSettings()
        self.logical_address = logical_address
        self._decoder = FrameDecoder()
        self._links: dict[tuple[int, int], tuple[HdlcConnection, MeterSession]] = {}

    def feed(self, data: bytes, now: float) -> bytes:
        out = bytearray()
        for frame in self._decoder.feed(data):
            out += self._route(frame, now)
        return bytes(out)

    def reset(self) -> None:
        """Forget every link, as when the terminal-server connection drops."""
        self._decoder = FrameDecoder()
        self._links.clear()

    def _route(self, frame: HdlcFrame, now: float) -> bytes:
        physical = frame.destination.lower
        if physical is None or frame.destination.upper != self.logical_address:
            return b""
        meter = self.meters.get(physical)
        if meter is None or not meter.online(now):
            return b""
        key = (physical, frame.source.upper)
        link = self._links.get(key)
        if link is None:
            conn = HdlcConnection(
                Role.SERVER,
                HdlcAddress(self.logical_address, physical, frame.destination.size),
                frame.source,
                self.settings,
            )
            link = (conn, meter.new_session(frame.source.upper))
            self._links[key] = link
        conn, session = link
        out = bytearray()
        for event in conn.handle_frame(frame):
            if isinstance(event, Transmit):
                out += event.data
            elif isinstance(event, ApduReceived):
                reply = session.handle(event.apdu, now)
                if reply is not None:
                    out += conn.send_apdu(reply)
            elif isinstance(event, Disconnected):
                self._links.pop(key, None)
        return bytes(out)


def wire_time(nbytes: int, baudrate: int | None) -> float:
    """Seconds that ``nbytes`` take on a UART line at 8N1 (10 bits per byte)."""
    return 0.0 if not baudrate else nbytes * 10.0 / baudrate


class HdlcTcpServer:
    """One RS-485 bus behind a terminal-server TCP port (one TCP client at a time)."""

    def __init__(
        self,
        bus: HdlcBus,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        baudrate: int | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.bus = bus
        self.host = host
        self.port = port
        self.baudrate = baudrate
        self.clock = clock
        self.stats = ServerStats()
        self._server: asyncio.Server | None = None
        self._busy = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._busy:
            self.stats.rejected_busy += 1
            writer.close()
            return
        self._busy = True
        self.stats.session_started()
        self.bus.reset()
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                self.stats.bytes_rx += len(data)
                await asyncio.sleep(wire_time(len(data), self.baudrate))
                reply = self.bus.feed(data, self.clock())
                if reply:
                    await asyncio.sleep(wire_time(len(reply), self.baudrate))
                    writer.write(reply)
                    self.stats.bytes_tx += len(reply)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._busy = False
            self.stats.session_ended()
            writer.close()


class PtyBus:
    """An RS-485 bus on a pseudo-terminal: the collector opens ``device`` like a serial port.

    The simulator keeps the slave side open too, so the master never reads EIO between two
    clients, as a real bus stays powered between two sessions.
    """

    def __init__(
        self, bus: HdlcBus, *, baudrate: int | None = None, clock: Clock = time.time
    ) -> None:
        self.bus = bus
        self.baudrate = baudrate
        self.clock = clock
        self.stats = ServerStats()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        self.device = os.ttyname(self._slave)
        self._task: asyncio.Task[None] | None = None
        self._write_transport: asyncio.WriteTransport | None = None
        self._read_transport: asyncio.ReadTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        self._read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader),
            os.fdopen(os.dup(self._master), "rb", buffering=0),
        )
        self._write_transport, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(os.dup(self._master), "wb", buffering=0)
        )
        self._task = asyncio.create_task(self._run(reader))

    async def _run(self, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(4096)
            if not data:
                return
            self.stats.bytes_rx += len(data)
            await asyncio.sleep(wire_time(len(data), self.baudrate))
            reply = self.bus.feed(data, self.clock())
            if reply and self._write_transport is not None:
                await asyncio.sleep(wire_time(len(reply), self.baudrate))
                self._write_transport.write(reply)
                self.stats.bytes_tx += len(reply)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for transport in (self._read_transport, self._write_transport):
            if transport is not None:
                transport.close()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
