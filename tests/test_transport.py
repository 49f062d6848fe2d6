"""Transports under real failure: silent, lossy, noisy and vanishing peers on real sockets and ptys.

The peers here are built from the simulator's own bus (``simulator.bus_server.HdlcBus``) with a thin
lossy layer in front, so the meter side is real protocol code, and only the faults are staged.
No timing is asserted: every wait is bounded with ``asyncio.timeout`` so a hang fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tty
from collections.abc import AsyncIterator, Callable
from typing import Literal

import pytest

from collector.session import Session
from collector.transport import (
    CLOSE_TIMEOUT_S,
    HdlcTransport,
    TcpWrapperTransport,
    hdlc_tcp_transport,
    serial_hdlc_transport,
)
from protocols import xdlms
from protocols.errors import DecodeError, DlmsTimeout, LinkError
from protocols.hdlc import FrameDecoder, FrameKind, HdlcAddress, HdlcFrame
from protocols.hdlc_link import HdlcSettings
from protocols.wrapper import encode_wrapper
from simulator import model
from simulator.bus_server import HdlcBus, PtyBus
from simulator.meter import SimulatedMeter
from simulator.server import WrapperServer

SEED = 3
NOW = 1772409600 + 10 * model.DAY + 13 * 3600 + 17.5
PHYSICAL = 17
#: Upper bound for anything that must not hang (never a measured figure).
BOUND_S = 10.0

Verdict = Literal["pass", "drop", "cut"]


def _clock() -> float:
    return NOW


def _meter() -> SimulatedMeter:
    meter_id = 0
    while not SimulatedMeter(meter_id, SEED).online(NOW):
        meter_id += 1
    return SimulatedMeter(meter_id, SEED)


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Peer:
    """A TCP peer on 127.0.0.1: a terminal server in front of a real HdlcBus, with staged faults.

    ``inbound(frame)`` decides for every client frame: pass it to the bus, drop it (line noise
    ate it) or cut the TCP connection. ``outbound(frame)`` returns True to lose a meter frame.
    Without a bus the peer stays silent (a dead meter behind a live terminal server).
    """

    def __init__(
        self,
        bus: HdlcBus | None,
        inbound: Callable[[HdlcFrame], Verdict] = lambda f: "pass",
        outbound: Callable[[HdlcFrame], bool] = lambda f: False,
    ) -> None:
        self.bus = bus
        self.inbound = inbound
        self.outbound = outbound
        self.received = bytearray()
        self.frames_in: list[HdlcFrame] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Peer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        if self.bus is not None:
            self.bus.reset()
        try:
            while data := await reader.read(4096):
                self.received += data
                for frame in decoder.feed(data):
                    self.frames_in.append(frame)
                    verdict = self.inbound(frame)
                    if verdict == "cut":
                        return
                    if verdict == "drop" or self.bus is None:
                        continue
                    reply = self.bus.feed(frame.encode(), NOW)
                    kept = [f for f in FrameDecoder().feed(reply) if not self.outbound(f)]
                    writer.write(b"".join(f.encode() for f in kept))
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def _hdlc(port: int, **kw: object) -> HdlcTransport:
    """HDLC over TCP to ``port``; the 1 s frame timeout leaves a loaded machine ample time, so
    only staged losses cause retransmissions."""
    kw.setdefault("frame_timeout", 1.0)
    kw.setdefault("retries", 2)
    return hdlc_tcp_transport("127.0.0.1", port, physical_address=PHYSICAL, **kw)  # type: ignore[arg-type]


def _nth(kind: FrameKind, which: set[int]) -> Callable[[HdlcFrame], bool]:
    """A predicate true for the listed occurrences (1-based) of frames of one kind."""
    seen = 0

    def pred(frame: HdlcFrame) -> bool:
        nonlocal seen
        if frame.kind is not kind:
            return False
        seen += 1
        return seen in which

    return pred


# ---------------------------------------------------------------------------------- wrapper


@pytest.fixture
async def silent_tcp() -> AsyncIterator[tuple[int, bytearray]]:
    """A TCP server that accepts, reads everything and never answers."""
    received = bytearray()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                received.extend(data)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()


async def test_wrapper_timeout_on_a_silent_peer(silent_tcp: tuple[int, bytearray]) -> None:
    port, received = silent_tcp
    transport = TcpWrapperTransport("127.0.0.1", port)
    async with asyncio.timeout(BOUND_S):
        await transport.open()
        aarq = xdlms.build_aarq()
        with pytest.raises(DlmsTimeout) as info:
            await transport.request(aarq, 0.3)
        await transport.close()
    assert info.value.transient and info.value.error_class == "timeout"
    assert bytes(received) == encode_wrapper(16, 1, aarq)
    assert transport.stats.bytes_tx == len(received) and transport.stats.bytes_rx == 0


async def test_session_on_a_silent_wrapper_peer_fails_and_closes(
    silent_tcp: tuple[int, bytearray],
) -> None:
    port, _ = silent_tcp
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(DlmsTimeout):
            async with Session(TcpWrapperTransport("127.0.0.1", port), request_timeout=0.3):
                pytest.fail("associated with a silent peer")


async def test_connection_refused_is_a_link_error() -> None:
    port = _free_port()
    for transport in (TcpWrapperTransport("127.0.0.1", port), _hdlc(port)):
        async with asyncio.timeout(BOUND_S):
            with pytest.raises(LinkError) as info:
                await transport.open()
        assert info.value.error_class == "link" and info.value.transient
        assert str(port) in str(info.value)


async def test_request_on_a_closed_transport_is_a_link_error() -> None:
    transport = TcpWrapperTransport("127.0.0.1", _free_port())
    with pytest.raises(LinkError, match="not open"):
        await transport.request(xdlms.build_aarq(), 1.0)
    await transport.close()  # closing what never opened is harmless


async def test_wrapper_peer_closing_mid_session_is_a_link_error() -> None:
    meter = _meter()
    served = 0

    def resolve(ip: str, port: int) -> SimulatedMeter:
        return meter

    # A real meter for the association, then the connection drops on the next request.
    server = WrapperServer(resolve, "127.0.0.1", 0, clock=_clock)
    await server.start()

    async def cutter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            while data := await reader.read(4096):
                served += 1
                if served > 1:
                    return
                upstream_w.write(data)
                writer.write(await upstream_r.read(4096))
        finally:
            writer.close()
            upstream_w.close()

    proxy = await asyncio.start_server(cutter, "127.0.0.1", 0)
    transport = TcpWrapperTransport("127.0.0.1", proxy.sockets[0].getsockname()[1])
    try:
        async with asyncio.timeout(BOUND_S):
            with pytest.raises(LinkError, match="closed by the peer"):
                async with Session(transport, request_timeout=2.0) as s:
                    await s.read_clock()
    finally:
        proxy.close()
        await server.close()
    assert served == 2


async def test_wrapper_pdu_for_another_wport_is_a_decode_error() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(encode_wrapper(1, 99, b"\x61\x00"))
        await writer.drain()
        await reader.read(4096)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    transport = TcpWrapperTransport("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        async with asyncio.timeout(BOUND_S):
            await transport.open()
            with pytest.raises(DecodeError, match="wPort 99"):
                await transport.request(xdlms.build_aarq(), 2.0)
            await transport.close()
    finally:
        server.close()


# ---------------------------------------------------------------------------------- HDLC


async def test_hdlc_silent_peer_retransmits_then_times_out() -> None:
    async with Peer(None) as peer:
        transport = _hdlc(peer.port, frame_timeout=0.1, retries=3)
        async with asyncio.timeout(BOUND_S):
            with pytest.raises(DlmsTimeout, match="4 tries"):
                await transport.open()
    assert transport.stats.retransmissions == 3
    assert [f.kind for f in peer.frames_in] == [FrameKind.SNRM] * 4
    # each retransmission repeats the very same SNRM
    assert len({f.encode() for f in peer.frames_in}) == 1


async def test_hdlc_meter_that_stops_answering_i_frames() -> None:
    bus = HdlcBus({PHYSICAL: _meter()})
    async with Peer(bus, inbound=lambda f: "drop" if f.kind is FrameKind.I else "pass") as peer:
        transport = _hdlc(peer.port, frame_timeout=0.3, retries=2)
        async with asyncio.timeout(BOUND_S):
            await transport.open()
            with pytest.raises(DlmsTimeout):
                await transport.request(xdlms.build_aarq(), 5.0)
            await transport.close()
    assert transport.stats.retransmissions == 2
    kinds = [f.kind for f in peer.frames_in]
    assert kinds == [FrameKind.SNRM, FrameKind.I, FrameKind.I, FrameKind.I, FrameKind.DISC]


async def test_hdlc_lost_request_is_retransmitted() -> None:
    """Line noise eats the first AARQ frame: the client repeats it and the session goes on."""
    meter = _meter()
    lose_first_i = _nth(FrameKind.I, {1})
    async with Peer(
        HdlcBus({PHYSICAL: meter}),
        inbound=lambda f: "drop" if lose_first_i(f) else "pass",
    ) as peer:
        transport = _hdlc(peer.port)
        async with asyncio.timeout(BOUND_S), Session(transport, request_timeout=2.0) as s:
            clock = await s.read_clock()
    assert transport.stats.retransmissions == 1
    assert clock.to_datetime().timestamp() == pytest.approx(meter.meter_time(NOW), abs=0.011)
    first, second, *rest = (f for f in peer.frames_in if f.kind is FrameKind.I)
    assert first.encode() == second.encode()
    assert len(rest) == 2  # GET clock, RLRQ


async def test_hdlc_lost_response_is_repeated_by_the_meter() -> None:
    """The meter's answer is lost: the client repeats its I-frame and the meter, seeing a
    duplicate N(S), repeats its last response instead of running the request twice."""
    meter = _meter()
    async with Peer(HdlcBus({PHYSICAL: meter}), outbound=_nth(FrameKind.I, {2})) as peer:
        transport = _hdlc(peer.port)
        async with asyncio.timeout(BOUND_S), Session(transport, request_timeout=2.0) as s:
            clock = await s.read_clock()
            register = await s.read_register("1.0.1.8.0.255")
    assert transport.stats.retransmissions == 1
    assert clock.to_datetime().timestamp() == pytest.approx(meter.meter_time(NOW), abs=0.011)
    assert register.value == model.registers(meter.spec, meter.meter_time(NOW)).active_import


async def test_hdlc_segmented_request_and_response_with_losses() -> None:
    """A 16-byte info field splits the LLS AARQ and every answer; lose one segment each way."""
    meter = _meter()
    drop_rr = _nth(FrameKind.RR, {3})
    async with Peer(
        HdlcBus({PHYSICAL: meter}),
        inbound=lambda f: "drop" if drop_rr(f) else "pass",
        outbound=_nth(FrameKind.I, {4}),
    ) as peer:
        transport = _hdlc(
            peer.port, client_sap=1, settings=HdlcSettings(max_info_tx=16, max_info_rx=16)
        )
        session = Session(
            transport, authentication="lls", password=meter.spec.password, request_timeout=2.0
        )
        async with asyncio.timeout(BOUND_S), session as s:
            register = await s.read_register("1.0.1.8.0.255")
    assert register.value == model.registers(meter.spec, meter.meter_time(NOW)).active_import
    segmented = [f for f in peer.frames_in if f.kind is FrameKind.I and f.segmented]
    assert segmented and all(len(f.information) == 16 for f in segmented)
    assert transport.stats.retransmissions == 2


async def test_hdlc_dm_answer_is_a_link_error() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        dm = HdlcFrame(FrameKind.DM, HdlcAddress(16), HdlcAddress(1, PHYSICAL))
        writer.write(dm.encode())
        await writer.drain()
        await reader.read(4096)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        async with asyncio.timeout(BOUND_S):
            with pytest.raises(LinkError, match="DM"):
                await _hdlc(server.sockets[0].getsockname()[1]).open()
    finally:
        server.close()


async def test_hdlc_peer_closing_mid_session_is_a_link_error() -> None:
    cut_second_i = _nth(FrameKind.I, {2})
    async with Peer(
        HdlcBus({PHYSICAL: _meter()}),
        inbound=lambda f: "cut" if cut_second_i(f) else "pass",
    ) as peer:
        transport = _hdlc(peer.port)
        async with asyncio.timeout(BOUND_S):
            with pytest.raises(LinkError, match="closed by the peer"):
                async with Session(transport, request_timeout=2.0) as s:
                    await s.read_clock()
    assert transport.stats.retransmissions == 0


async def test_close_on_a_dead_peer_returns() -> None:
    """After UA the meter dies: DISC (and the session's RLRQ) go unanswered, close still ends."""
    snrm_only = _nth(FrameKind.SNRM, {1})
    async with Peer(
        HdlcBus({PHYSICAL: _meter()}),
        inbound=lambda f: "pass" if f.kind is FrameKind.SNRM and snrm_only(f) else "drop",
    ) as peer:
        transport = _hdlc(peer.port, frame_timeout=0.5, retries=1)
        async with asyncio.timeout(BOUND_S):
            await transport.open()
        async with asyncio.timeout(CLOSE_TIMEOUT_S + 1.0):
            await transport.close()
        await transport.close()  # a second close is a no-op
        assert peer.frames_in[-1].kind is FrameKind.DISC
        # the same through a Session whose association succeeded before the meter died
        i_frames = 0

        def dies_after_aare(frame: HdlcFrame) -> Verdict:
            nonlocal i_frames
            i_frames += frame.kind is FrameKind.I
            return "pass" if frame.kind is FrameKind.SNRM or i_frames == 1 else "drop"

        peer.inbound = dies_after_aare
        transport = _hdlc(peer.port, frame_timeout=0.5, retries=1)
        session = Session(transport, request_timeout=0.5, release_timeout=0.5)
        async with asyncio.timeout(BOUND_S):
            await session.open()
        assert session.association is not None
        async with asyncio.timeout(2 * 0.5 + CLOSE_TIMEOUT_S + 2.0):
            await session.close()
        assert session.association is None
        # The RLRQ went out (its retransmissions are cut short by the release timeout's
        # wall-clock cap), then DISC.
        assert [f.kind for f in peer.frames_in[-2:]] == [FrameKind.I, FrameKind.DISC]
        assert transport.stats.retransmissions <= 1


# ---------------------------------------------------------------------------------- serial


class NoisyPty:
    """A serial line (real pty pair) with one meter on it that puts line noise around its frames:
    junk bytes, a stray flag, and a corrupted copy of each answer (bad FCS) before the good one,
    all written in small pieces so frames arrive split at arbitrary points."""

    NOISE = b"\x00\xff\x13\x7e\x7e\x55junk\x7e"

    def __init__(self, bus: HdlcBus) -> None:
        self.bus = bus
        self.master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(self.master)
        self.device = os.ttyname(slave)
        self._slave = slave
        self.noise_written = 0
        self._pending: list[asyncio.Task[None]] = []

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.master, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except OSError:
            return
        reply = self.bus.feed(data, NOW)
        if reply:
            self._pending.append(asyncio.create_task(self._send(reply)))

    async def _send(self, reply: bytes) -> None:
        corrupted = bytearray(reply)
        corrupted[len(corrupted) // 2] ^= 0x5A
        stream = self.NOISE + bytes(corrupted) + self.NOISE + reply
        self.noise_written += len(stream) - len(reply)
        for i in range(0, len(stream), 7):
            os.write(self.master, stream[i : i + 7])
            await asyncio.sleep(0)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        for task in self._pending:
            task.cancel()
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


async def test_serial_line_noise_is_skipped() -> None:
    meter = _meter()
    line = NoisyPty(HdlcBus({PHYSICAL: meter}))
    line.start()
    try:
        transport = serial_hdlc_transport(
            line.device, 115200, physical_address=PHYSICAL, frame_timeout=1.0, retries=1
        )
        async with asyncio.timeout(BOUND_S), Session(transport, request_timeout=2.0) as s:
            clock = await s.read_clock()
            register = await s.read_register("1.0.1.8.0.255")
    finally:
        line.close()
    assert line.noise_written > 100
    assert transport.stats.retransmissions == 0
    assert clock.to_datetime().timestamp() == pytest.approx(meter.meter_time(NOW), abs=0.011)
    assert register.value == model.registers(meter.spec, meter.meter_time(NOW)).active_import


async def test_serial_device_missing_is_a_link_error() -> None:
    transport = serial_hdlc_transport("/dev/hes-no-such-port", 9600)
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(LinkError, match="hes-no-such-port"):
            await transport.open()


async def test_serial_silent_bus_times_out_and_closes() -> None:
    """Nobody at physical address 99 on the bus: SNRM retransmitted, then DlmsTimeout."""
    bus = PtyBus(HdlcBus({PHYSICAL: _meter()}), clock=_clock)
    await bus.start()
    try:
        transport = serial_hdlc_transport(
            bus.device, 9600, physical_address=99, frame_timeout=0.1, retries=2
        )
        async with asyncio.timeout(BOUND_S):
            with pytest.raises(DlmsTimeout):
                await transport.open()
        assert transport.stats.retransmissions == 2
        # the port was released: the meter that is there answers on the same device
        good = serial_hdlc_transport(bus.device, 9600, physical_address=PHYSICAL)
        async with asyncio.timeout(BOUND_S), Session(good, request_timeout=2.0) as s:
            await s.read_clock()
    finally:
        await bus.close()
