"""Which physical addresses answer on an HDLC bus (``hes scan``).

A bench that does not know a meter's physical address tries each one: SNRM to the address,
a short wait, and the UA (with the link parameters it states) names a meter. Every link a
UA opens is closed again with DISC at once, so the scan leaves no session open on the bus.
Frames go through one :class:`FrameDecoder` and are routed by their source address to the
connection of the address they come from, so a meter that answers late, while the next
address is being tried, is still counted (and disconnected).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from collector.link_stats import LinkStats
from collector.transport import CountedStream, StreamOpener, Trace
from protocols.errors import DecodeError
from protocols.explain import FrameTracer
from protocols.hdlc import FrameDecoder, HdlcAddress, HdlcFrame
from protocols.hdlc_link import (
    Connected,
    Disconnected,
    HdlcConnection,
    HdlcSettings,
    PeerRejected,
    Role,
    decode_parameters,
)

#: Conventional first physical address of a meter (lower ones are reserved).
FIRST_PHYSICAL = 16
#: Largest physical address of a 2-byte address (0x7E and 0x7F are reserved).
LAST_SHORT_PHYSICAL = 0x7D
#: Largest physical address of a 4-byte address (0x3FFE and 0x3FFF are reserved).
LAST_PHYSICAL = 0x3FFD


@dataclass(slots=True)
class Answer:
    """One address that answered the SNRM."""

    physical_address: int
    #: "UA" (a meter ready to connect), or "DM"/"FRMR" (present, but refusing the link).
    kind: str
    #: The parameters the meter stated in its UA.
    parameters: HdlcSettings | None = None
    #: The DISC after the UA was answered (the link was closed).
    released: bool = False
    #: The answer came only while a later address was being tried.
    late: bool = False


@dataclass(slots=True)
class ScanResult:
    """Every address that answered, in address order, and the link counters."""

    answers: list[Answer] = field(default_factory=list)
    tried: int = 0
    stats: LinkStats = field(default_factory=LinkStats)


class _Scan:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: HdlcAddress,
        trace: Trace | None,
    ) -> None:
        self.stats = LinkStats()
        self.stream = CountedStream(reader, writer, self.stats)
        self.client = client
        self.trace = trace
        self.decoder = FrameDecoder()
        self.conns: dict[int, HdlcConnection] = {}
        self.answers: dict[int, Answer] = {}
        self.current = -1
        self._trace_tx = FrameTracer("tx")
        self._trace_rx = FrameTracer("rx")

    async def send(self, data: bytes) -> None:
        if self.trace is not None:
            for line in self._trace_tx.feed(data):
                self.trace(line)
        await self.stream.write(data)
        self.stats.round_trips += 1

    async def pump(self, timeout: float, done: asyncio.Event) -> None:
        """Route what arrives for ``timeout`` seconds, or until ``done`` is set."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                data = await self.stream.read(remaining)
            except TimeoutError:
                return
            await self.receive(data, done)

    async def receive(self, data: bytes, done: asyncio.Event) -> None:
        if self.trace is not None:
            for line in self._trace_rx.feed(data):
                self.trace(line)
        dropped = self.decoder.dropped_frames
        for frame, raw in self.decoder.feed_raw(data):
            if frame is None:
                self.stats.noise_bytes += len(raw)
                continue
            self.stats.frames_rx += 1
            if frame.destination.same_station(self.client) and frame.source.lower is not None:
                await self.frame(frame, done)
        self.stats.frames_bad += self.decoder.dropped_frames - dropped

    async def frame(self, frame: HdlcFrame, done: asyncio.Event) -> None:
        physical = frame.source.lower
        assert physical is not None
        conn = self.conns.get(physical)
        if conn is None:  # an address not tried (yet): not ours to answer
            self.stats.frames_other_address += 1
            self.stats.other_address = frame.source
            return
        self.stats.frames_from_meter += 1
        late = physical != self.current
        for event in conn.handle_frame(frame):
            if isinstance(event, Connected):
                try:
                    stated: HdlcSettings | None = decode_parameters(frame.information)
                except DecodeError:
                    stated = None
                self.answers[physical] = Answer(physical, "UA", stated, late=late)
                await self.send(conn.disconnect())  # leave no session open
            elif isinstance(event, Disconnected) and physical in self.answers:
                self.answers[physical].released = True
            elif isinstance(event, PeerRejected) and physical not in self.answers:
                self.answers[physical] = Answer(physical, event.kind.value, late=late)
        answer = self.answers.get(physical)
        if not late and answer is not None and (answer.kind != "UA" or answer.released):
            done.set()


async def scan_bus(
    opener: StreamOpener,
    addresses: Iterable[int],
    *,
    client_sap: int = 16,
    logical_address: int = 1,
    address_size: int = 0,
    timeout: float = 0.3,
    trace: Trace | None = None,
) -> ScanResult:
    """SNRM each address (``timeout`` seconds for its UA, and as long for the UA to the DISC
    that follows); the addresses that answered, each link closed again."""
    reader, writer = await opener()
    scan = _Scan(reader, writer, HdlcAddress(client_sap), trace)
    result = ScanResult(stats=scan.stats)
    try:
        for physical in addresses:
            result.tried += 1
            remote = HdlcAddress(logical_address, physical, address_size)
            conn = HdlcConnection(Role.CLIENT, scan.client, remote)
            scan.conns[physical] = conn
            scan.current = physical
            done = asyncio.Event()
            await scan.send(conn.connect())
            await scan.pump(timeout, done)
            answer = scan.answers.get(physical)
            if answer is not None and answer.kind == "UA" and not answer.released:
                await scan.pump(timeout, done)  # the UA to our DISC
        scan.current = -1
        open_links = [a for a in scan.answers.values() if a.kind == "UA" and not a.released]
        if open_links:  # late answers: wait once more for the UA to their DISC
            await scan.pump(timeout, asyncio.Event())
    finally:
        await scan.stream.close()
    result.answers = [scan.answers[k] for k in sorted(scan.answers)]
    return result
