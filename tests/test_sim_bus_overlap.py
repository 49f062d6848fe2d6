"""The simulator's count of clients per bus: a second client while one holds the line is an
overlap, whether the terminal-server port queues it or refuses it; a client that closed
before reconnecting is not.

This is the counter the multi-node tests read to show that no bus had two sessions at once.
"""

from __future__ import annotations

import asyncio

import pytest

from collector.session import Session
from collector.transport import open_transport
from simulator.fleet import Fleet, FleetSpec, LoopbackRange

SEED = 11
NOW = 1773999600.0


def bus_spec() -> FleetSpec:
    return FleetSpec(seed=SEED, buses=2, meters_per_bus=2, tcp_port=0, baudrate=None)


async def read_energy(fleet: Fleet, number: int) -> None:
    async with Session(open_transport(fleet.target(number)), request_timeout=5) as s:
        await s.read_register("1.0.1.8.0.255")


async def test_sessions_one_after_another_never_overlap() -> None:
    async with Fleet(bus_spec(), clock=lambda: NOW) as fleet:
        for number in (1, 2, 1, 3, 4):
            await read_energy(fleet, number)
        lines = fleet.bus_lines()
    assert [(b["link_id"], b["connections"]) for b in lines] == [("bus000", 3), ("bus001", 2)]
    assert [(b["peak_clients"], b["overlaps"]) for b in lines] == [(1, 0), (1, 0)]


async def test_a_second_client_while_one_holds_the_bus_is_counted() -> None:
    async with Fleet(bus_spec(), clock=lambda: NOW) as fleet:
        server = fleet.bus_servers[0]
        first = fleet.target(1)
        assert first.host is not None and first.port is not None
        _, holder = await asyncio.open_connection(first.host, first.port)
        await asyncio.sleep(0.05)
        # The port queues this one (busy_wait_s) and then serves it once the holder leaves.
        waiting = asyncio.create_task(read_energy(fleet, 2))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        assert (server.clients.peak_clients, server.clients.overlaps) == (2, 1)
        holder.close()
        await holder.wait_closed()
        await asyncio.wait_for(waiting, 10)
        # The other bus saw nothing of it.
        await read_energy(fleet, 3)
        stats = fleet.stats()
    assert [(b["peak_clients"], b["overlaps"]) for b in stats["bus_lines"]] == [(2, 1), (1, 0)]


async def test_a_refused_second_client_is_still_an_overlap() -> None:
    async with Fleet(bus_spec(), clock=lambda: NOW) as fleet:
        server = fleet.bus_servers[0]
        server.busy_wait_s = 0.1
        target = fleet.target(1)
        assert target.host is not None and target.port is not None
        _, holder = await asyncio.open_connection(target.host, target.port)
        await asyncio.sleep(0.05)
        reader, late = await asyncio.open_connection(target.host, target.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # refused as busy
        late.close()
        holder.close()
        await holder.wait_closed()
        assert server.stats.rejected_busy == 1
        assert (server.clients.peak_clients, server.clients.overlaps) == (2, 1)


async def test_a_client_that_closed_and_reconnects_at_once_is_one_client() -> None:
    """The old connection's FIN reached the kernel but the port is still busy with its last
    bytes (their wire time at 9600 baud) when the client reconnects: one client, no overlap.
    """
    spec = FleetSpec(seed=SEED, buses=1, meters_per_bus=2, tcp_port=0, baudrate=9600)
    async with Fleet(spec, clock=lambda: NOW) as fleet:
        server = fleet.bus_servers[0]
        server.busy_wait_s = 10.0
        target = fleet.target(1)
        assert target.host is not None and target.port is not None
        _, old = await asyncio.open_connection(target.host, target.port)
        old.write(bytes(960))  # 1 s on the line, no frame in it
        await old.drain()
        await asyncio.sleep(0.1)
        old.close()
        await old.wait_closed()
        await read_energy(fleet, 1)
        assert server.stats.connections == 2
        assert (server.clients.peak_clients, server.clients.overlaps) == (1, 0)


def test_meter_addresses_on_another_device_must_be_private() -> None:
    assert list(LoopbackRange("10.77.0.254", 3, "veth0")) == [
        "10.77.0.254",
        "10.77.0.255",
        "10.77.1.0",
    ]
    with pytest.raises(ValueError, match="private range"):
        LoopbackRange("8.8.8.8", 2, "veth0")
    with pytest.raises(ValueError, match="private range"):
        LoopbackRange("10.255.255.254", 3, "veth0")
    with pytest.raises(ValueError, match="do not fit in 127"):
        LoopbackRange("10.0.0.1", 2)
