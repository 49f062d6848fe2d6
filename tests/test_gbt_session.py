"""The collector Session in general block transfer over a real TCP wrapper link: a block of
the meter's window lost on the way is asked for again after a silence, and the value read
equals the one read without GBT."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from collector.session import Session
from collector.transport import TcpWrapperTransport
from protocols.xdlms.gbt import GBT_TAG, decode_gbt
from simulator.meter import SimulatedMeter
from simulator.quirks import Quirks
from simulator.server import WrapperServer

NOW = 1772409600 + 10 * 86400 + 13 * 3600 + 17.5
LOAD_PROFILE = "1.0.99.1.0.255"


class LosingTransport(TcpWrapperTransport):
    """Our TCP transport, losing the meter's GBT blocks numbered in ``lose`` (once each)."""

    def __init__(self, port: int, lose: set[int]) -> None:
        super().__init__("127.0.0.1", port)
        self.lose = set(lose)
        self.lost: list[int] = []

    async def receive(self, timeout: float) -> bytes:
        while True:
            apdu = await super().receive(timeout)
            if apdu[:1] == bytes((GBT_TAG,)):
                number = decode_gbt(apdu).block_number
                if number in self.lose:
                    self.lose.discard(number)
                    self.lost.append(number)
                    continue
            return apdu


@pytest.fixture
async def port() -> AsyncIterator[int]:
    meter = SimulatedMeter(3, 42, quirks=Quirks(gbt_window=2))
    server = WrapperServer(lambda ip, port: meter, "127.0.0.1", 0, clock=lambda: NOW)
    await server.start()
    try:
        yield server.port
    finally:
        await server.close()


async def _buffer(transport: TcpWrapperTransport, gbt_window: int) -> bytes:
    async with Session(
        transport, max_pdu_size=256, gbt_window=gbt_window, request_timeout=0.5
    ) as session:
        assert session.gbt == bool(gbt_window)
        return await session.get_raw(7, LOAD_PROFILE, 2)


@pytest.mark.parametrize(
    "lose",
    [
        {3},  # inside a window: the block that ends it shows the gap, the rest comes again
        {5},  # the block that ends a window: silence, then the acknowledgement asks again
        {3, 9, 10},
    ],
)
async def test_lost_blocks_of_a_window_are_sent_again(port: int, lose: set[int]) -> None:
    plain = await _buffer(TcpWrapperTransport("127.0.0.1", port), 0)
    transport = LosingTransport(port, lose)
    assert await _buffer(transport, 4) == plain
    assert sorted(transport.lost) == sorted(lose)
    assert len(plain) > 20 * 256  # dozens of blocks
