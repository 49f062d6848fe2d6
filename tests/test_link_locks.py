"""collector.link_locks: one session per link across jobs, the most urgent waiter first."""

from __future__ import annotations

import asyncio

import pytest

from collector.link_locks import LinkArbiter, PrioritySlots


async def test_a_link_serves_on_demand_before_the_schedule_then_in_arrival_order() -> None:
    arbiter = LinkArbiter(turnaround_s=0.0)
    order: list[str] = []
    inside = 0
    peak = 0

    async def session(name: str, priority: int) -> None:
        nonlocal inside, peak
        async with arbiter.hold("bus-1", priority, shared_line=True):
            inside += 1
            peak = max(peak, inside)
            order.append(name)
            await asyncio.sleep(0.01)
            inside -= 1

    first = asyncio.create_task(session("night-1", 10))
    await asyncio.sleep(0)  # night-1 holds the bus
    waiters = [
        asyncio.create_task(session("night-2", 10)),
        asyncio.create_task(session("night-3", 10)),
        asyncio.create_task(session("operator", 0)),
    ]
    await asyncio.gather(first, *waiters)
    assert order == ["night-1", "operator", "night-2", "night-3"]
    assert peak == 1
    assert arbiter.busy_links == 0


async def test_other_links_run_together_under_the_global_cap() -> None:
    arbiter = LinkArbiter(max_sessions=2, turnaround_s=0.0)
    inside = 0
    peak = 0

    async def session(link: str) -> None:
        nonlocal inside, peak
        async with arbiter.hold(link, 10, shared_line=False):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(session(f"gprs-{i}") for i in range(6)))
    assert peak == 2 and arbiter.sessions == 0


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    slots = PrioritySlots(1)
    await slots.acquire(10)
    waiter = asyncio.create_task(slots.acquire(0))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    slots.release()
    assert slots.held == 0 and slots.waiting == 0
    await asyncio.wait_for(slots.acquire(5), 1)


async def test_the_bus_turnaround_is_kept_between_holders() -> None:
    arbiter = LinkArbiter(turnaround_s=0.05)
    loop = asyncio.get_running_loop()
    ended: list[float] = []
    started: list[float] = []

    async def session() -> None:
        async with arbiter.hold("bus-1", 10, shared_line=True):
            started.append(loop.time())
            await asyncio.sleep(0.01)
            ended.append(loop.time())

    await asyncio.gather(session(), session())
    assert started[1] - ended[0] >= 0.05


def test_no_slots_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        PrioritySlots(0)
