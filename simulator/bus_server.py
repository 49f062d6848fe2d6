"""The simulator's RS-485 buses: HDLC frames routed to the meter whose physical address they
carry, one session at a time, with baud-rate timing and injected faults.

- ``HdlcBus``: the bus itself, sans sockets: bytes in, the meters' answer out.
- ``HdlcTcpServer``: a bus behind a terminal-server TCP port. Like a real terminal server it
  takes one TCP client at a time, so a bus never carries two sessions at once. It also
  counts the clients that *tried*: a second client arriving while the first still holds the
  line is an overlap (``LineCounter``), the evidence that collectors shared a bus.
- ``PtyBus``: the same bus on a pseudo-terminal, for serial test benches.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import struct
import termios
import time
import tty
from dataclasses import dataclass
from typing import Protocol

from protocols.enums import ApduTag
from protocols.hdlc import FrameDecoder, FrameKind, HdlcAddress, HdlcFrame
from protocols.hdlc_link import (
    ApduReceived,
    Disconnected,
    HdlcConnection,
    HdlcSettings,
    Role,
    Transmit,
)
from simulator.faults import FaultPlan, SessionFault
from simulator.meter import MeterSession, SimulatedMeter
from simulator.server import Clock, MeterRelease, ServerStats, corrupt_hdlc, count_gbt
from simulator.uart import resample

#: How long a no-answer HDLC session stays silent on a bus when no TCP connection marks its
#: end (a pty): long enough for the client's retransmissions to run out.
DEFAULT_BUS_SILENCE_S = 10.0
_RLRE = bytes((ApduTag.RLRE,))
#: termios speed constants -> baud rates, for the rates a bench may set.
_TERMIOS_RATES: dict[int, int] = {
    getattr(termios, f"B{rate}"): rate
    for rate in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
    if hasattr(termios, f"B{rate}")
}


class Line(Protocol):
    """What a serial line serves: bytes in, the meters' answer out (``HdlcBus``, or
    ``simulator.sign_on.SignOnBus`` in front of one)."""

    def respond(self, data: bytes, now: float, mono: float) -> BusReply: ...

    def reset(self) -> None: ...

    def line_baud(self, configured: int | None) -> int | None:
        """The baud rate the line runs at now (None: no wire time)."""
        ...


class MeterLookup(Protocol):
    """Where a bus finds the meter at a physical address (a dict, or a fleet creating it)."""

    def get(self, key: int, /) -> SimulatedMeter | None: ...


@dataclass(slots=True)
class _Link:
    """One HDLC link (= one session) between a client and a meter on a bus."""

    conn: HdlcConnection
    session: MeterSession
    meter: SimulatedMeter
    fault: SessionFault
    point: int
    silent_until: float
    answered: int = 0


@dataclass(slots=True)
class BusReply:
    """What the bus puts on the line: bytes after ``delay`` seconds; ``drop``: the link died."""

    data: bytes = b""
    delay: float = 0.0
    drop: bool = False


class HdlcBus:
    """The meters of one RS-485 bus, addressed by HDLC physical address.

    Sans-IO: ``respond(bytes, now, mono)`` returns what the meters put on the bus in answer.
    Every meter keeps its own HDLC connection and DLMS association, as on a real multidrop
    line. With a :class:`FaultPlan`, each new HDLC link (a session) draws its fault.

    ``answer_any_address``: the physical address of a meter that also takes frames sent to
    an address no meter on the bus has, and answers them from its own address, as a meter
    alone on a point-to-point line (an optical head) may: the client sees another address
    answer.
    """

    def __init__(
        self,
        meters: MeterLookup,
        settings: HdlcSettings | None = None,
        logical_address: int = 1,
        *,
        faults: FaultPlan | None = None,
        release: MeterRelease | None = None,
        silence_s: float = DEFAULT_BUS_SILENCE_S,
        answer_any_address: int | None = None,
    ) -> None:
        self.meters = meters
        self.answer_any_address = answer_any_address
        self.settings = settings or HdlcSettings()
        self.logical_address = logical_address
        self.faults = faults
        self.release = release
        self.silence_s = silence_s
        self.stats = ServerStats()
        self._decoder = FrameDecoder()
        self._links: dict[tuple[int, int], _Link] = {}

    @property
    def open_links(self) -> int:
        """HDLC links (sessions) up on the bus now: a client that left none open leaves 0."""
        return len(self._links)

    def feed(self, data: bytes, now: float) -> bytes:
        """The answer bytes alone (no faults' timing): for callers that need no delay."""
        return self.respond(data, now, time.monotonic()).data

    def respond(self, data: bytes, now: float, mono: float, *, only: int | None = None) -> BusReply:
        """Answer ``data`` at true time ``now``; ``mono`` (monotonic seconds) times faults.

        ``only``: the one physical address listening (the others are not at this baud).
        """
        reply = BusReply()
        out = bytearray()
        for frame in self._decoder.feed(data):
            if frame.segmented:
                self.stats.segments_rx += 1
            if only is not None and frame.destination.lower != only:
                continue
            out += self._route(frame, now, mono, reply)
            if reply.drop:
                break
        reply.data = bytes(out)
        return reply

    def line_baud(self, configured: int | None) -> int | None:
        return configured

    def has_link(self, physical: int) -> bool:
        """True while some client holds an HDLC link with the meter at ``physical``."""
        return any(key[0] == physical for key in self._links)

    def powered(self, physical: int, now: float) -> SimulatedMeter | None:
        """The meter at ``physical`` when it is there and powered, without holding it."""
        meter = self.meters.get(physical)
        if meter is None:
            return None
        online = self._online(meter, now)
        if self.release is not None:
            self.release(meter)
        return meter if online else None

    def reset(self) -> None:
        """Forget every link, as when the terminal-server connection drops."""
        self._decoder = FrameDecoder()
        for key in list(self._links):
            self._forget(key)

    def _forget(self, key: tuple[int, int]) -> None:
        link = self._links.pop(key, None)
        if link is not None and self.release is not None:
            self.release(link.meter)

    def _online(self, meter: SimulatedMeter, now: float) -> bool:
        if not meter.online(now):
            return False
        return self.faults is None or self.faults.online(meter.meter_id, now)

    def _route(self, frame: HdlcFrame, now: float, mono: float, reply: BusReply) -> bytes:
        physical = frame.destination.lower
        if physical is None or frame.destination.upper != self.logical_address:
            return b""
        own = self.answer_any_address
        if own is not None and physical != own and self.meters.get(physical) is None:
            physical = own
            frame = dataclasses.replace(frame, destination=HdlcAddress(self.logical_address, own))
        key = (physical, frame.source.upper)
        link = self._links.get(key)
        if link is not None and link.fault is SessionFault.NO_ANSWER:
            if mono < link.silent_until:
                return b""
            self._forget(key)
            link = None
        if link is None:
            link = self._open_link(frame, now, mono)
            if link is None:
                return b""
            self._links[key] = link
            if link.fault is SessionFault.NO_ANSWER:
                return b""
        if not self._online(link.meter, now):
            return b""
        out = bytearray()
        for event in link.conn.handle_frame(frame):
            if isinstance(event, Transmit):
                out += event.data
            elif isinstance(event, ApduReceived):
                if link.fault is SessionFault.DROP and link.answered == link.point:
                    reply.drop = True
                    self._forget(key)
                    return bytes(out) + self._dm(frame)
                answer = link.session.handle(event.apdu, now)
                if answer is None:
                    if link.session.power_cut:
                        reply.drop = True
                        self._forget(key)
                        return bytes(out) + self._dm(frame)
                    if link.conn.connected and frame.poll_final:
                        out += link.conn.acknowledge()  # NRM: a poll is always answered
                    continue
                self.stats.apdus += 1
                bare = link.meter.quirks.rlre_without_llc and answer[:1] == _RLRE
                following = link.session.take_queued()
                self.stats.apdus += len(following)
                self.stats.gbt_blocks += count_gbt(answer, following)
                frames = link.conn.send_apdu(answer, llc=not bare, following=following)
                if link.fault is SessionFault.CORRUPT_FRAME and link.answered == link.point:
                    frames = corrupt_hdlc(frames)
                link.answered += 1
                out += frames
            elif isinstance(event, Disconnected):
                self._forget(key)
        if link.fault is SessionFault.SLOW and self.faults is not None and out:
            reply.delay = max(reply.delay, self.faults.spec.slow_delay_s)
        return bytes(out)

    def _open_link(self, frame: HdlcFrame, now: float, mono: float) -> _Link | None:
        """A new session for the addressed meter, or None when it is absent or offline."""
        physical = frame.destination.lower
        assert physical is not None
        meter = self.meters.get(physical)
        if meter is None:
            return None
        if not self._online(meter, now):
            if self.release is not None:
                self.release(meter)
            return None
        fault, point = SessionFault.NONE, 0
        if self.faults is not None:
            fault, point = self.faults.next_session(meter.meter_id)
        self.stats.fault(fault)
        conn = HdlcConnection(
            Role.SERVER,
            HdlcAddress(self.logical_address, physical, frame.destination.size),
            frame.source,
            self.settings,
        )
        return _Link(
            conn,
            meter.new_session(frame.source.upper),
            meter,
            fault,
            point,
            mono + self.silence_s,
        )

    def _dm(self, frame: HdlcFrame) -> bytes:
        """Disconnected mode: the meter dropped the link and says so to whatever comes."""
        return HdlcFrame(FrameKind.DM, frame.source, frame.destination, True).encode()


#: ``tcpi_state`` of a connection whose peer has sent its FIN (Linux ``TCP_CLOSE_WAIT``).
_TCP_ESTABLISHED = 1


def _peer_holds(writer: asyncio.StreamWriter) -> bool:
    """True while the client of ``writer`` still has its end open (no FIN or reset seen).

    The kernel knows before this side has read the end of stream: the first byte of
    ``TCP_INFO`` is the connection's state, ESTABLISHED until the peer closes. Where
    ``TCP_INFO`` is missing, the connection counts as held until the stream says otherwise.
    """
    sock = writer.get_extra_info("socket")
    if sock is None or writer.is_closing():
        return False
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except (OSError, AttributeError):
        return True
    return bool(struct.unpack_from("B", info)[0] == _TCP_ESTABLISHED)


@dataclass(slots=True)
class LineCounter:
    """The clients of one terminal-server port, as seen by the port, not by its queue.

    ``peak_clients`` is the most clients that held a connection to the bus at once (a
    client that has closed its end no longer holds it, even if this side has not read the
    close yet: a collector that reconnects at once is one client). ``overlaps`` counts the
    connections that arrived while another client held the line: each is a second session
    attempted on a bus, whether the port then queued or refused it.
    """

    peak_clients: int = 0
    overlaps: int = 0
    _open: list[asyncio.StreamWriter] = dataclasses.field(default_factory=list)

    def arrived(self, writer: asyncio.StreamWriter) -> None:
        holding = sum(1 for other in self._open if _peer_holds(other))
        if holding:
            self.overlaps += 1
        self._open.append(writer)
        self.peak_clients = max(self.peak_clients, holding + 1)

    def left(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ValueError):
            self._open.remove(writer)


def wire_time(nbytes: int, baudrate: int | None) -> float:
    """Seconds that ``nbytes`` take on a UART line at 8N1 (10 bits per byte)."""
    return 0.0 if not baudrate else nbytes * 10.0 / baudrate


class HdlcTcpServer:
    """One RS-485 bus behind a terminal-server TCP port (one TCP client at a time).

    A dropped link closes the TCP connection, as a terminal server losing its line does.
    """

    def __init__(
        self,
        bus: HdlcBus,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        baudrate: int | None = None,
        clock: Clock = time.time,
        busy_wait_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.host = host
        self.port = port
        self.baudrate = baudrate
        self.clock = clock
        self.busy_wait_s = busy_wait_s
        self.stats = ServerStats()
        self.clients = LineCounter()
        self._server: asyncio.Server | None = None
        self._line = asyncio.Lock()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A client that reconnects at once after giving up may arrive before this side saw
        # the old connection close: wait that long for the line, then refuse as busy.
        if self._line.locked():
            self.stats.line_contended += 1
        self.clients.arrived(writer)
        try:
            try:
                async with asyncio.timeout(self.busy_wait_s):
                    await self._line.acquire()
            except TimeoutError:
                self.stats.rejected_busy += 1
                writer.close()
                return
            try:
                await self._session(reader, writer)
            finally:
                self._line.release()
        finally:
            self.clients.left(writer)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.session_started()
        self.bus.reset()
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                self.stats.bytes_rx += len(data)
                await asyncio.sleep(wire_time(len(data), self.baudrate))
                reply = self.bus.respond(data, self.clock(), time.monotonic())
                if reply.drop:
                    break
                if reply.data:
                    await asyncio.sleep(reply.delay + wire_time(len(reply.data), self.baudrate))
                    writer.write(reply.data)
                    self.stats.bytes_tx += len(reply.data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.bus.reset()
            self.stats.session_ended()
            writer.close()


class PtyBus:
    """An RS-485 bus on a pseudo-terminal: the collector opens ``device`` like a serial port.

    The simulator keeps the slave side open too, so the master never reads EIO between two
    clients, as a real bus stays powered between two sessions. A dropped link shows as the
    meter answering DM (disconnected mode): a serial line has no connection to close.

    ``answer_baudrate``: the meters answer at this rate whatever rate the client set on its
    port (the pty's termios tell which); the client then reads what its UART would sample
    from the meters' line (``simulator.uart``), as a bench at the wrong baud rate does. The
    meters still understand the client, as meters that detect the caller's rate do, so
    something comes back to be diagnosed.
    """

    def __init__(
        self,
        bus: Line,
        *,
        baudrate: int | None = None,
        clock: Clock = time.time,
        answer_baudrate: int | None = None,
    ) -> None:
        self.bus = bus
        self.baudrate = baudrate
        self.answer_baudrate = answer_baudrate
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
            await asyncio.sleep(wire_time(len(data), self.bus.line_baud(self.baudrate)))
            reply = self.bus.respond(data, self.clock(), time.monotonic())
            out = reply.data
            if out and self.answer_baudrate is not None:
                out = resample(out, self.answer_baudrate, self.client_baudrate())
            if out and self._write_transport is not None:
                rate = self.bus.line_baud(self.baudrate)
                await asyncio.sleep(reply.delay + wire_time(len(out), rate))
                self._write_transport.write(out)
                self.stats.bytes_tx += len(out)

    def client_baudrate(self) -> int:
        """The input rate the client set on its end of the pty (9600 if not a known one)."""
        speed = termios.tcgetattr(self._slave)[4]
        return _TERMIOS_RATES.get(speed, 9600)

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
