"""Asyncio transports that carry xDLMS APDUs to one meter and back.

A transport owns the byte stream (TCP socket or serial port) and drives a sans-IO framing core
from ``protocols``: the IEC 62056-47 wrapper for GPRS/4G meters, or HDLC (IEC 62056-46) over a
serial line or a terminal-server TCP port. Everything above it (the DLMS session) sees only
``request(apdu) -> apdu``. Every failure comes out as a typed error from ``protocols.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from collector.link_stats import LinkStats, diagnose
from collector.sign_on import MODE_E, STARTUPS, SignedOn, mode_e_start_up
from contracts.meters import TRANSPORTS, MeterTarget
from protocols.errors import DecodeError, DlmsTimeout, LinkError
from protocols.explain import FrameTracer, wrapper_trace
from protocols.hdlc import HdlcAddress
from protocols.hdlc_link import (
    ApduReceived,
    Connected,
    Disconnected,
    HdlcConnection,
    HdlcEvent,
    HdlcSettings,
    PeerRejected,
    Role,
    Transmit,
)
from protocols.iec62056_21 import IDENTIFICATION_WAIT_S, INITIAL_BAUD
from protocols.wrapper import WrapperDecoder, WrapperPdu, encode_wrapper

__all__ = [
    "CountedStream",
    "HdlcTransport",
    "LinkStats",
    "StreamOpener",
    "TcpWrapperTransport",
    "Trace",
    "Transport",
    "hdlc_tcp_transport",
    "open_transport",
    "serial_hdlc_transport",
    "serial_opener",
    "tcp_opener",
]

#: How long a clean close may take before the socket is simply dropped.
CLOSE_TIMEOUT_S = 2.0
READ_CHUNK = 4096


#: Where a transport sends its trace lines (one per frame), when asked to trace.
Trace = Callable[[str], None]
StreamOpener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
#: What runs on a freshly opened stream before HDLC starts (the mode E sign-on).
StartUp = Callable[["CountedStream"], Awaitable[SignedOn]]


class Transport(Protocol):
    """What a DLMS session needs from the link below it."""

    stats: LinkStats
    description: str

    async def open(self) -> None: ...

    async def request(self, apdu: bytes, timeout: float) -> bytes: ...

    async def send(self, apdu: bytes, timeout: float) -> None:
        """Send an APDU that the meter does not answer by itself (a GBT block mid-window)."""
        ...

    async def receive(self, timeout: float) -> bytes:
        """The meter's next APDU without sending one (the rest of a GBT window)."""
        ...

    async def close(self) -> None: ...


class CountedStream:
    """A reader/writer pair with byte counting and typed errors (a transport's stream, and
    the bus scan's)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: LinkStats
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.stats = stats

    async def write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (OSError, RuntimeError) as exc:
            raise LinkError(f"write failed: {exc}") from exc
        self.stats.bytes_tx += len(data)

    async def read(self, timeout: float) -> bytes:
        """Read what is there; raise asyncio.TimeoutError (caller maps it) or LinkError."""
        try:
            async with asyncio.timeout(timeout):
                data = await self.reader.read(READ_CHUNK)
        except TimeoutError:
            # TimeoutError is an OSError subclass: let it through for the caller to map.
            raise
        except (ConnectionError, OSError) as exc:
            raise LinkError(f"read failed: {exc}") from exc
        if not data:
            raise LinkError("connection closed by the peer")
        self.stats.bytes_rx += len(data)
        return data

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.writer.wait_closed()


async def _open_tcp(
    host: str, port: int, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.open_connection(host, port)
    except TimeoutError as exc:
        raise DlmsTimeout(f"TCP connect to {host}:{port} timed out after {timeout:g} s") from exc
    except OSError as exc:
        raise LinkError(f"TCP connect to {host}:{port} failed: {exc.strerror or exc}") from exc


class TcpWrapperTransport:
    """DLMS over TCP with the IEC 62056-47 wrapper (one TCP connection per association)."""

    def __init__(
        self,
        host: str,
        port: int = 4059,
        *,
        client_wport: int = 16,
        server_wport: int = 1,
        connect_timeout: float = 10.0,
        trace: Trace | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.client_wport = client_wport
        self.server_wport = server_wport
        self.connect_timeout = connect_timeout
        self.stats = LinkStats()
        self.description = f"tcp://{host}:{port}"
        self._stream: CountedStream | None = None
        self._decoder = WrapperDecoder()
        self._inbox: deque[bytes] = deque()
        self.trace = trace

    async def open(self) -> None:
        reader, writer = await _open_tcp(self.host, self.port, self.connect_timeout)
        self._stream = CountedStream(reader, writer, self.stats)

    async def request(self, apdu: bytes, timeout: float) -> bytes:
        self._inbox.clear()
        await self.send(apdu, timeout)
        self.stats.round_trips += 1
        return await self.receive(timeout)

    async def send(self, apdu: bytes, timeout: float) -> None:
        stream = self._require_stream()
        if self.trace is not None:
            self.trace(wrapper_trace("tx", WrapperPdu(self.client_wport, self.server_wport, apdu)))
        await stream.write(encode_wrapper(self.client_wport, self.server_wport, apdu))

    async def receive(self, timeout: float) -> bytes:
        """The next APDU from the meter (several may come in one read: the rest wait)."""
        stream = self._require_stream()
        if self._inbox:
            return self._inbox.popleft()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DlmsTimeout(f"{self.description}: no response within {timeout:g} s")
            try:
                data = await stream.read(remaining)
            except TimeoutError as exc:
                raise DlmsTimeout(f"{self.description}: no response within {timeout:g} s") from exc
            for pdu in self._decoder.feed(data):
                if self.trace is not None:
                    self.trace(wrapper_trace("rx", pdu))
                if pdu.source == self.server_wport and pdu.destination == self.client_wport:
                    self._inbox.append(pdu.apdu)
                elif pdu.destination != self.client_wport:
                    raise DecodeError(
                        f"{self.description}: wrapper PDU for wPort {pdu.destination}, "
                        f"expected {self.client_wport}"
                    )
            if self._inbox:
                return self._inbox.popleft()

    async def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.close()

    def _require_stream(self) -> CountedStream:
        if self._stream is None:
            raise LinkError(f"{self.description}: transport is not open")
        return self._stream


class HdlcTransport:
    """DLMS over HDLC on any byte stream: a serial port or a terminal-server TCP port.

    Timeouts are handled at the link layer first: an unanswered frame is sent again up to
    ``retries`` times (the HDLC connection knows what to repeat), and only then does the request
    fail with :class:`DlmsTimeout`.
    """

    def __init__(
        self,
        opener: StreamOpener,
        *,
        client_sap: int = 16,
        logical_address: int = 1,
        physical_address: int | None = None,
        address_size: int = 0,
        settings: HdlcSettings | None = None,
        frame_timeout: float = 3.0,
        retries: int = 3,
        description: str = "hdlc",
        startup: StartUp | None = None,
        silence_hint: str = "",
        trace: Trace | None = None,
    ) -> None:
        self.local = HdlcAddress(client_sap)
        self.remote = HdlcAddress(logical_address, physical_address, address_size)
        self.settings = settings or HdlcSettings()
        self.frame_timeout = frame_timeout
        self.retries = retries
        self.stats = LinkStats()
        self.description = description
        self._opener = opener
        self._stream: CountedStream | None = None
        self._conn: HdlcConnection | None = None
        #: The link parameters agreed with the meter (UA), once the link is up.
        self.negotiated: HdlcSettings | None = None
        self._startup = startup
        #: How the start-up before HDLC ended (None: the link started with HDLC at once).
        self.signed_on: SignedOn | None = None
        #: Said after the timeout of an unanswered SNRM: what the silence may mean.
        self.silence_hint = silence_hint
        self.trace = trace
        self._inbox: deque[bytes] = deque()
        self._trace_tx = FrameTracer("tx")
        self._trace_rx = FrameTracer("rx")

    async def open(self) -> None:
        reader, writer = await self._opener()
        self._stream = CountedStream(reader, writer, self.stats)
        self._conn = HdlcConnection(Role.CLIENT, self.local, self.remote, self.settings)
        try:
            if self._startup is not None:
                self.signed_on = await self._startup(self._stream)
            try:
                event = await self._exchange(self._conn.connect(), Connected, self.frame_timeout)
            except DlmsTimeout as exc:
                if not self.silence_hint:
                    raise
                raise DlmsTimeout(f"{exc}; {self.silence_hint}") from exc
            assert isinstance(event, Connected)
            self.negotiated = event.settings
        except BaseException:
            await self._stream.close()
            self._stream = None
            raise

    async def request(self, apdu: bytes, timeout: float) -> bytes:
        conn = self._require_conn()
        self._inbox.clear()
        event = await self._exchange(conn.send_apdu(apdu), ApduReceived, timeout)
        assert isinstance(event, ApduReceived)
        return event.apdu

    async def send(self, apdu: bytes, timeout: float) -> None:
        """Send ``apdu`` and wait until the meter acknowledged its frames (RR): NRM lets the
        next APDU go only then."""
        conn = self._require_conn()
        await self._exchange(conn.send_apdu(apdu), None, timeout)

    async def receive(self, timeout: float) -> bytes:
        """The meter's next APDU: one that came with the last, or poll for it (RR)."""
        if self._inbox:
            return self._inbox.popleft()
        conn = self._require_conn()
        # A window of segments that ended mid-APDU was polled for by the link already.
        event = await self._exchange(None if conn.polled else conn.poll(), ApduReceived, timeout)
        assert isinstance(event, ApduReceived)
        return event.apdu

    async def close(self) -> None:
        """Send DISC and wait briefly for UA/DM; the stream is closed whatever happens."""
        if self._stream is None:
            return
        try:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await self._exchange(self._conn.disconnect(), Disconnected, 1.0, retries=0)
        finally:
            stream, self._stream, self._conn = self._stream, None, None
            await stream.close()

    async def _exchange(
        self,
        first: bytes | None,
        wanted: type | None,
        timeout: float,
        retries: int | None = None,
    ) -> object:
        """Write ``first`` and pump frames until an event of type ``wanted`` arrives (None:
        until every frame sent is acknowledged). APDUs beyond the first wait in the inbox."""
        stream = self._require_stream()
        conn = self._require_conn()
        tries_left = self.retries if retries is None else retries
        if first is not None:
            await self._send(stream, first)
            self.stats.round_trips += 1
        loop = asyncio.get_running_loop()
        # The per-frame timeout restarts whenever the meter sends something: a long
        # segmented response keeps the exchange alive frame by frame.
        frame_timeout = min(self.frame_timeout, timeout)
        while True:
            deadline = loop.time() + frame_timeout
            try:
                data = await stream.read(max(deadline - loop.time(), 0.0))
            except TimeoutError:
                if tries_left <= 0:
                    hint = diagnose(self.stats, self.remote).hint
                    raise DlmsTimeout(
                        f"{self.description}: no HDLC response after "
                        f"{self.retries + 1} tries of {frame_timeout:g} s; {hint}"
                    ) from None
                tries_left -= 1
                self.stats.retransmissions += 1
                await self._send(stream, conn.on_timeout())
                continue
            found: object = None
            for event in self._receive(conn, data):
                if isinstance(event, Transmit):
                    await self._send(stream, event.data)
                    self.stats.round_trips += 1
                elif isinstance(event, PeerRejected):
                    raise LinkError(f"{self.description}: meter answered {event.kind.name}")
                elif isinstance(event, ApduReceived):
                    self._inbox.append(event.apdu)
                elif wanted is not None and isinstance(event, wanted):
                    found = found or event
                elif isinstance(event, Disconnected):
                    raise LinkError(f"{self.description}: meter disconnected the link")
            if wanted is ApduReceived and self._inbox:
                return ApduReceived(self._inbox.popleft())
            if found is not None:
                return found
            if wanted is None and not conn.sending:
                return None

    async def _send(self, stream: CountedStream, data: bytes) -> None:
        if self.trace is not None:
            for line in self._trace_tx.feed(data):
                self.trace(line)
        await stream.write(data)

    def _receive(self, conn: HdlcConnection, data: bytes) -> list[HdlcEvent]:
        """The events of ``data``, counting what arrived: valid frames, frames that failed
        their checks, noise, frames from another server address (see ``link_stats``)."""
        if self.trace is not None:
            for line in self._trace_rx.feed(data):
                self.trace(line)
        stats = self.stats
        decoder = conn.decoder
        dropped = decoder.dropped_frames
        events: list[HdlcEvent] = []
        for frame, raw in decoder.feed_raw(data):
            if frame is None:
                stats.noise_bytes += len(raw)
                continue
            stats.frames_rx += 1
            if frame.destination.same_station(self.local):
                if frame.source.same_station(conn.remote):
                    stats.frames_from_meter += 1
                else:
                    stats.frames_other_address += 1
                    stats.other_address = frame.source
            events.extend(conn.handle_frame(frame))
        stats.frames_bad += decoder.dropped_frames - dropped
        return events

    def _require_stream(self) -> CountedStream:
        if self._stream is None:
            raise LinkError(f"{self.description}: transport is not open")
        return self._stream

    def _require_conn(self) -> HdlcConnection:
        if self._conn is None:
            raise LinkError(f"{self.description}: transport is not open")
        return self._conn


def tcp_opener(host: str, port: int, connect_timeout: float = 10.0) -> StreamOpener:
    """Opens a TCP connection (a terminal server's port) with typed errors."""

    async def opener() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await _open_tcp(host, port, connect_timeout)

    return opener


def hdlc_tcp_transport(
    host: str, port: int, *, connect_timeout: float = 10.0, **kwargs: Any
) -> HdlcTransport:
    """HDLC through a TCP port, as a terminal server in front of an RS-485 bus provides."""
    kwargs.setdefault("description", f"hdlc-tcp://{host}:{port}")
    return HdlcTransport(tcp_opener(host, port, connect_timeout), **kwargs)


def serial_opener(device: str, baudrate: int = 9600) -> StreamOpener:
    """Opens a serial device at 8N1 with typed errors."""

    async def opener() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        import serial
        import serial_asyncio_fast

        try:
            return await serial_asyncio_fast.open_serial_connection(
                url=device,
                baudrate=baudrate,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
            )
        except (OSError, serial.SerialException) as exc:
            raise LinkError(f"cannot open serial port {device}: {exc}") from exc

    return opener


def serial_hdlc_transport(
    device: str,
    baudrate: int = 9600,
    *,
    startup: str = "hdlc",
    device_address: str = "",
    sign_on_timeout: float = IDENTIFICATION_WAIT_S,
    **kwargs: Any,
) -> HdlcTransport:
    """HDLC on a serial device (RS-485 adapter, optical probe, pty) at 8N1.

    ``startup="iec62056-21"``: open at 300 baud 7E1 and sign on first (IEC 62056-21 mode E,
    ``collector.sign_on``), addressing ``device_address`` on a bus; HDLC then runs at the
    baud rate the meter proposed, not ``baudrate``. The identification is waited for
    ``sign_on_timeout`` (the request is sent ``retries`` + 1 times), not the HDLC frame
    timeout: at 300 baud it takes most of a second, after up to 1.5 s of reaction time.
    """
    if startup not in STARTUPS:
        raise ValueError(f"startup {startup!r}: use one of {', '.join(STARTUPS)}")
    mode_e = startup == MODE_E
    # Mode E starts at 300 baud 7E1, made as 8N1 with the parity bit in software
    # (collector.sign_on): the same bits on the wire, on adapters that lack 7E1 too.
    opener = serial_opener(device, INITIAL_BAUD if mode_e else baudrate)
    retries = int(kwargs.get("retries", 3))

    async def sign_on(stream: CountedStream) -> SignedOn:
        return await mode_e_start_up(
            stream,
            stream.writer.transport.get_extra_info("serial"),
            device_address=device_address,
            timeout=sign_on_timeout,
            retries=retries,
            description=f"serial://{device}",
        )

    if mode_e:
        kwargs.setdefault("description", f"serial://{device}@mode-e")
        kwargs["startup"] = sign_on
    else:
        kwargs.setdefault("description", f"serial://{device}@{baudrate}")
        kwargs.setdefault(
            "silence_hint",
            "a meter that needs the IEC 62056-21 mode E sign-on ignores HDLC until it had "
            'one (hes read --mode-e, startup = "iec62056-21")',
        )
    return HdlcTransport(opener, **kwargs)


def open_transport(target: MeterTarget, *, trace: Trace | None = None) -> Transport:
    """A fresh (unopened) transport for one session with ``target``; ``trace`` gets one
    line per frame (``hes read --trace``)."""
    if target.transport == "tcp":
        if target.host is None:
            raise ValueError("a tcp meter needs a host")
        return TcpWrapperTransport(
            target.host,
            target.port or 4059,
            client_wport=target.client_sap,
            server_wport=target.logical_address,
            trace=trace,
        )
    hdlc_args: dict[str, Any] = {
        "client_sap": target.client_sap,
        "logical_address": target.logical_address,
        "physical_address": target.physical_address,
        "address_size": target.address_size,
        "settings": HdlcSettings(
            max_info_tx=target.max_info_length,
            max_info_rx=target.max_info_rx or target.max_info_length,
            window_tx=target.window_size,
            window_rx=target.window_size,
        ),
        "frame_timeout": target.frame_timeout,
        "retries": target.retries,
        "trace": trace,
    }
    transport: HdlcTransport
    if target.startup != "hdlc" and target.transport != "serial":
        raise ValueError(f"startup {target.startup!r} is for serial meters, not {target.transport}")
    if target.transport == "hdlc-tcp":
        if target.host is None or target.port is None:
            raise ValueError("an hdlc-tcp meter needs a host and a port")
        transport = hdlc_tcp_transport(target.host, target.port, **hdlc_args)
    elif target.transport == "serial":
        if target.device is None:
            raise ValueError("a serial meter needs a device")
        transport = serial_hdlc_transport(
            target.device,
            target.baudrate,
            startup=target.startup,
            device_address=target.device_address,
            **hdlc_args,
        )
    else:
        raise ValueError(f"unknown transport {target.transport!r}; use one of {TRANSPORTS}")
    return transport
