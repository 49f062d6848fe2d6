"""A cluster node's parts on the real PostgreSQL (collector.cluster): a tick split into a job
per link, drain, the leader's failover between nodes, a job stopped when its lease is lost,
and a bus whose lease another node holds.

The nodes here are :class:`ClusterNode` objects of one test process, each with its own
database handle, driven beat by beat; tests/test_cluster_e2e.py runs real processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_collector_fleet import plan_text

from collector.cluster import ClusterNode, link_batches
from collector.plan import Plan, parse_plan
from collector.schedule_jobs import job_for_tick, planned_schedules
from storage import cluster, jobs
from storage.database import Database, open_database
from storage.errors import StorageError
from storage.jobs import JobRequest
from storage.records import MeterRecord

LEASE = 0.6
T0 = datetime(2026, 12, 7, 0, 5, tzinfo=UTC)


def meter(meter_id: str, link: str | None = None) -> MeterRecord:
    if link is None:
        return MeterRecord(meter_id, "tcp", "127.0.0.1", 4059, None, None, 1, 16, "none", meter_id)
    address = 16 + int(meter_id[-2:])
    return MeterRecord(meter_id, "hdlc-tcp", "127.0.0.1", 5000, None, address, 1, 16, "none", link)


FLEET = [
    *(meter(f"B1-{k:02d}", "bus-1") for k in range(3)),
    *(meter(f"B2-{k:02d}", "bus-2") for k in range(3)),
    *(meter(f"T-{k:02d}") for k in range(5)),
]


@pytest.fixture
def plan() -> Plan:
    return parse_plan(plan_text())


@pytest.fixture
def dbs(pg_url: str) -> Iterator[list[Database]]:
    handles = [open_database(pg_url) for _ in range(2)]
    handles[0].upsert_meters(FLEET)
    yield handles
    for db in handles:
        db.close()


def node(db: Database, plan: Plan, name: str) -> ClusterNode:
    return ClusterNode(db, plan, name, host="test", pid=1, lease_s=LEASE, gprs_batch=2)


def test_link_batches_keep_a_bus_whole_and_batch_tcp_meters() -> None:
    assert link_batches(list(reversed(FLEET)), 2) == [
        ("bus-1", ["B1-00", "B1-01", "B1-02"]),
        ("bus-2", ["B2-00", "B2-01", "B2-02"]),
        ("tcp:T-00", ["T-00", "T-01"]),
        ("tcp:T-02", ["T-02", "T-03"]),
        ("tcp:T-04", ["T-04"]),
    ]
    with pytest.raises(ValueError, match="at least 1"):
        link_batches(FLEET, 0)


async def test_a_tick_becomes_a_job_per_link_once(dbs: list[Database], plan: Plan) -> None:
    a, b = node(dbs[0], plan, "a"), node(dbs[1], plan, "b")
    (planned,) = [p for p in planned_schedules(plan) if p.task == "profile"]
    tick = job_for_tick(planned, T0, T0)
    first, created = await a.queue.submit(tick)
    assert created and first.link == "bus-1"
    again, created = await b.queue.submit(tick)  # a second leader, the same tick
    assert not created and again.id == first.id
    stored = [j for j in jobs.list_jobs(dbs[0]) if j.schedule == planned.name]
    assert sorted((j.link, tuple(j.meters or ())) for j in stored) == [
        ("bus-1", ("B1-00", "B1-01", "B1-02")),
        ("bus-2", ("B2-00", "B2-01", "B2-02")),
        ("tcp:T-00", ("T-00", "T-01")),
        ("tcp:T-02", ("T-02", "T-03")),
        ("tcp:T-04", ("T-04",)),
    ]
    assert {(j.kind, j.params["day"], j.tick) for j in stored} == {("collect", "2026-12-06", T0)}
    # an on-demand job is stored as the embedded service stores it
    read, created = await a.queue.submit(JobRequest("read", {}, meters=["T-00"]))
    assert created and (read.link, read.schedule) == ("", None)


async def test_a_draining_node_claims_nothing_and_gives_up_the_lead(
    dbs: list[Database], plan: Plan
) -> None:
    a = node(dbs[0], plan, "a")
    assert await a.queue.recover() == []  # registers the node
    await a.beat(lambda _job: None)
    assert a.accepting and a.leads
    jobs.submit(dbs[0], JobRequest("read", {}, meters=["T-00"]), T0)
    assert cluster.set_state(dbs[0], "a", "draining")
    await a.beat(lambda _job: None)
    assert not a.accepting and not a.leads and cluster.leader(dbs[0]) is None
    assert await a.queue.claim() is None
    assert cluster.set_state(dbs[0], "a", "running")
    await a.beat(lambda _job: None)
    claimed = await a.queue.claim()
    assert claimed is not None and claimed.owner == "a" and a.queue.held == {claimed.id}


async def test_the_leader_fails_over_within_a_lease(dbs: list[Database], plan: Plan) -> None:
    a, b = node(dbs[0], plan, "a"), node(dbs[1], plan, "b")
    for n in (a, b):
        await n.queue.recover()
        await n.beat(lambda _job: None)
    assert (a.leads, b.leads) == (True, False)
    started = time.monotonic()
    while not b.leads:  # a stops beating (dead or hung); b keeps beating
        await asyncio.sleep(b.beat_s)
        await b.beat(lambda _job: None)
        assert time.monotonic() - started < LEASE + 2 * b.beat_s + 1.0
    assert not a.leads  # by a's own clock too: its lease ran out
    await a.beat(lambda _job: None)  # a, back: b keeps the lead
    assert (a.leads, b.leads) == (False, True)


async def test_a_job_whose_lease_is_lost_is_stopped(dbs: list[Database], plan: Plan) -> None:
    a, b = node(dbs[0], plan, "a"), node(dbs[1], plan, "b")
    job, _ = jobs.submit(dbs[0], JobRequest("read", {}, meters=["T-00"]), T0)
    claimed = await a.queue.claim()
    assert claimed is not None and claimed.id == job.id
    await asyncio.sleep(LEASE * 1.5)  # a hangs past its lease
    assert (await b.queue.claim()) is not None
    abandoned: list[int] = []
    await a.beat(abandoned.append)
    assert abandoned == [job.id] and a.queue.held == set()
    with pytest.raises(StorageError, match="no longer holds"):
        await a.queue.finish(job.id, "done")
    assert (await b.queue.finish(job.id, "done")).state == "done"


async def test_a_bus_leased_by_another_node_waits_for_it(dbs: list[Database], plan: Plan) -> None:
    a, b = node(dbs[0], plan, "a"), node(dbs[1], plan, "b")
    entered = asyncio.Event()

    async def b_session() -> None:
        async with b.links.hold("bus-1", jobs.ON_DEMAND, shared_line=True):
            entered.set()

    async with a.links.hold("bus-1", jobs.SCHEDULED, shared_line=True):
        assert a.links.leased == {"bus-1"} and a.links.in_use == {"bus-1": 1}
        waiter = asyncio.create_task(b_session())
        await asyncio.sleep(LEASE / 2)
        assert not entered.is_set() and b.links.waits >= 1
        await a.links.renew()  # in use: renewed, kept
        assert a.links.leased == {"bus-1"}
    assert not entered.is_set()  # a keeps the line for its next session a moment
    await a.links.release_all()
    await asyncio.wait_for(entered.wait(), 5)
    await waiter
    # TCP meters are links of their own: no lease, no wait
    async with a.links.hold("T-00", jobs.SCHEDULED, shared_line=False):
        assert "T-00" not in a.links.leased


def test_a_cluster_node_needs_postgresql(tmp_path: Path, plan: Plan) -> None:
    with open_database(f"{tmp_path}/hes.db") as db:
        with pytest.raises(StorageError, match="needs a PostgreSQL database"):
            node(db, plan, "a")


async def test_a_session_on_a_bus_whose_lease_ran_out_under_a_frozen_node_is_cut(
    dbs: list[Database], plan: Plan
) -> None:
    a = node(dbs[0], plan, "a")
    went_on = False

    async def long_session() -> None:  # renewed by the heartbeat: runs past one lease
        async with a.links.hold("bus-1", jobs.SCHEDULED, shared_line=True):
            for _ in range(4):
                await asyncio.sleep(LEASE / 3)
                await a.links.renew()

    await long_session()
    assert a.links.cut == 0

    async def frozen_session() -> None:
        nonlocal went_on
        async with a.links.hold("bus-1", jobs.SCHEDULED, shared_line=True):
            time.sleep(LEASE * 1.5)  # the whole node freezes: no heartbeat, no timer
            assert cluster.take_link(dbs[1], "b", "bus-1", 30.0)  # another node's now
            await asyncio.sleep(0.01)  # the node wakes up, waiting for the meter's answer
            went_on = True

    task = asyncio.create_task(frozen_session())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not went_on and a.links.cut == 1
    await a.links.renew()
    assert a.links.leased == set()  # lost, and a knows it
