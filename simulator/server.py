"""Asyncio I/O of the simulator: the sockets and ptys behind which simulated meters answer.

Three ways in, as in the field:
- ``WrapperServer``: GPRS/4G-style meters, DLMS over TCP with the IEC 62056-47 wrapper. One
  server serves many meters; the meter is chosen by the connection's local address (one
  loopback address per meter) and port. Given a list of ``hosts`` it answers on all of them:
  one wildcard socket tied to the loopback device (``SO_BINDTODEVICE lo``, or the ``device``
  a test host's range is routed to) when the system allows it, otherwise one socket per
  address (see ``simulator.fleet`` for why).
- ``HdlcTcpServer`` and ``PtyBus`` (:mod:`simulator.bus_server`): an RS-485 bus behind a
  terminal-server TCP port, or on a pseudo-terminal for serial test benches.

This module holds the wrapper server and what every server shares (statistics, fault
corruption, the meter pool's release rule).

The protocol work is done by the sans-IO parts (``protocols`` and ``simulator.meter``); this
module only moves bytes and applies timing (latency, baud rate) and injected faults
(``simulator.faults``): per session no answer, a corrupted frame, a dropped link, a slow meter;
per meter offline for good or for windows of time. A meter that loses power mid-session (the
``power_cut_after_blocks`` quirk, ``simulator.image_transfer``) drops the link the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from protocols.enums import ApduTag
from protocols.errors import DecodeError
from protocols.wrapper import WrapperDecoder, encode_wrapper
from simulator.faults import FaultPlan, SessionFault
from simulator.meter import MeterSession, SimulatedMeter
from simulator.objects import MeterState

Clock = Callable[[], float]
MeterResolver = Callable[[str, int], SimulatedMeter | None]
MeterRelease = Callable[[SimulatedMeter], None]
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_GBT = bytes((ApduTag.GENERAL_BLOCK_TRANSFER,))


@dataclass(slots=True)
class ServerStats:
    """Counters a load test reads back: sessions, bytes on the wire, concurrency, faults."""

    connections: int = 0
    sessions_in_flight: int = 0
    peak_sessions_in_flight: int = 0
    apdus: int = 0
    bytes_rx: int = 0
    bytes_tx: int = 0
    rejected_busy: int = 0
    #: Connections to a bus that found another session on the line (each one a second
    #: session at once, waited for or refused): a head-end keeping one session per bus
    #: never makes one.
    line_contended: int = 0
    refused: int = 0
    #: HDLC I-frames received with the segmentation bit set (an APDU split by max-info).
    segments_rx: int = 0
    #: General-block-transfer APDUs the meters sent (blocks of long answers, acknowledgements).
    gbt_blocks: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    busy_seconds: dict[str, float] = field(default_factory=dict)

    def session_started(self) -> None:
        self.connections += 1
        self.sessions_in_flight += 1
        self.peak_sessions_in_flight = max(self.peak_sessions_in_flight, self.sessions_in_flight)

    def session_ended(self) -> None:
        self.sessions_in_flight -= 1

    def fault(self, kind: SessionFault) -> None:
        if kind is not SessionFault.NONE:
            self.faults[kind.value] = self.faults.get(kind.value, 0) + 1


def corrupt_hdlc(frames: bytes) -> bytes:
    """Flip one bit of the last frame's FCS so the receiver drops it (bad checksum).

    DLMS HDLC frames are delimited by their length field, not by byte stuffing, so the flag
    value may appear inside a frame; it is still avoided here to keep the damage to the FCS.
    """
    out = bytearray(frames)
    pos = len(out) - 2
    flipped = out[pos] ^ 0x01
    out[pos] = flipped if flipped not in (0x7E, 0x7D) else out[pos] ^ 0x10
    return bytes(out)


def garble_wrapper(pdu: bytes) -> bytes:
    """A wrapper PDU whose version field is wrong: the client's decoder must reject it."""
    return b"\x00\x02" + pdu[2:]


class WrapperServer:
    """DLMS/COSEM over TCP (IEC 62056-47) for many meters on one server.

    ``resolve(local_ip, local_port)`` picks the meter of a new connection (None: close it);
    ``release(meter)`` is called when that connection ends, so a fleet can forget meters that
    nobody talks to. ``hosts`` lists every address to answer on (default: ``host`` alone).
    """

    def __init__(
        self,
        resolve: MeterResolver,
        host: str = "127.0.0.1",
        port: int = 4059,
        *,
        clock: Clock = time.time,
        latency: Callable[[SimulatedMeter], float] | None = None,
        faults: FaultPlan | None = None,
        release: MeterRelease | None = None,
        hosts: Sequence[str] | None = None,
        per_address: bool = False,
        device: str = "lo",
    ) -> None:
        self.resolve = resolve
        self.host = host
        self.port = port
        self.clock = clock
        self.latency = latency
        self.faults = faults
        self.release = release
        self.hosts: Sequence[str] = hosts if hosts is not None else [host]
        self.per_address = per_address
        #: The one device the wildcard socket answers on (``lo``: only 127.0.0.0/8).
        self.device = device
        self.stats = ServerStats()
        #: "device" (one wildcard socket on lo) or "per-address", set by start().
        self.listen_mode = ""
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if len(self.hosts) > 1 and not self.per_address:
            sock = self._device_socket()
            if sock is not None:
                self._sockets = [sock]
                self.listen_mode = "device"
        if not self._sockets:
            self.listen_mode = "per-address"
            self._bind_each()
        for sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    def _device_socket(self) -> socket.socket | None:
        """One socket for every address on ``port`` of ``device``; None when the system
        refuses it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.device.encode())
            sock.bind(("0.0.0.0", self.port))
        except PermissionError:
            sock.close()
            return None
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno, f"cannot listen on {self.device} port {self.port}: {exc.strerror}"
            ) from None
        sock.listen(4096)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return sock

    def _bind_each(self) -> None:
        _raise_fd_limit(len(self.hosts) + 256)
        try:
            for host in self.hosts:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, self.port))
                except OSError as exc:
                    raise OSError(
                        exc.errno, f"cannot listen on {host}:{self.port}: {exc.strerror}"
                    ) from None
                sock.listen(1024)
                sock.setblocking(False)
                self.port = sock.getsockname()[1]
        except BaseException:
            for sock in self._sockets:
                sock.close()
            self._sockets = []
            raise

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                conn, _peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn.setblocking(False)
            task = asyncio.get_running_loop().create_task(self._serve_socket(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            with contextlib.suppress(Exception):
                loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = []
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    async def _serve_socket(self, conn: socket.socket) -> None:
        local_ip, local_port = conn.getsockname()[:2]
        if self.device == "lo" and ipaddress.ip_address(local_ip) not in LOOPBACK:
            conn.close()
            return
        meter = self.resolve(local_ip, local_port)
        if meter is None:
            self.stats.refused += 1
            conn.close()
            return
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            self._release(meter)
            return
        try:
            await self._serve(meter, reader, writer)
        finally:
            self._release(meter)

    def _release(self, meter: SimulatedMeter) -> None:
        if self.release is not None:
            self.release(meter)

    async def _serve(
        self, meter: SimulatedMeter, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        now = self.clock()
        plan = self.faults
        if not meter.online(now) or (plan is not None and not plan.online(meter.meter_id, now)):
            self.stats.refused += 1
            writer.close()
            return
        fault, point = SessionFault.NONE, 0
        if plan is not None:
            fault, point = plan.next_session(meter.meter_id)
        self.stats.fault(fault)
        self.stats.session_started()
        session: MeterSession | None = None
        decoder = WrapperDecoder()
        answered = 0
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                self.stats.bytes_rx += len(data)
                if fault is SessionFault.NO_ANSWER:
                    continue
                try:
                    pdus = decoder.feed(data)
                except DecodeError:
                    break
                for pdu in pdus:
                    if session is None:
                        session = meter.new_session(pdu.source)
                    if fault is SessionFault.DROP and answered == point:
                        return
                    reply = session.handle(pdu.apdu, self.clock())
                    self.stats.apdus += 1
                    if reply is None:
                        if session.power_cut:
                            return
                        continue
                    delay = self.latency(meter) if self.latency is not None else 0.0
                    if fault is SessionFault.SLOW and plan is not None:
                        delay += plan.spec.slow_delay_s
                    if delay > 0:
                        await asyncio.sleep(delay)
                    following = session.take_queued()
                    self.stats.gbt_blocks += count_gbt(reply, following)
                    out = encode_wrapper(pdu.destination, pdu.source, reply)
                    for more in following:
                        out += encode_wrapper(pdu.destination, pdu.source, more)
                    if fault is SessionFault.CORRUPT_FRAME and answered == point:
                        out = garble_wrapper(out)
                    answered += 1
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


def count_gbt(first: bytes, following: list[bytes]) -> int:
    """How many of the APDUs answered are general-block-transfer APDUs."""
    return sum(apdu[:1] == _GBT for apdu in (first, *following))


def _raise_fd_limit(wanted: int) -> None:
    """Lift the soft open-file limit towards the hard one; a clear error if still too low."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        raise OSError(
            f"{wanted} listening sockets needed but the open-file limit is {hard}; "
            "run as root (SO_BINDTODEVICE needs CAP_NET_RAW) or use fewer GPRS meters"
        )


def state_is_default(meter: SimulatedMeter) -> bool:
    """True when SET/ACTION never changed the meter, so it can be re-created at will."""
    return meter.current_state() == MeterState()
