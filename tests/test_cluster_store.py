"""Cluster mode's storage on the real PostgreSQL (storage.cluster): leases that run out and
are claimed again, fencing of a node that lost its lease, the leader's failover, a tick
enqueued once by two leaders racing, link leases, node registration and drain, and the
refusal of SQLite.

Leases here are a fraction of a second so that expiry is seen without waiting; every lease
is counted by the database's clock, so the test waits on real time past it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage import cluster, jobs
from storage.cluster import LeaseLost, NodeNameTaken
from storage.database import Database, open_database
from storage.errors import StorageError
from storage.jobs import SCHEDULED, JobRequest

T0 = datetime(2026, 12, 7, 0, 5, tzinfo=UTC)
LEASE = 0.4


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    with open_database(pg_url) as database:
        yield database


def read(meter: str = "M1") -> JobRequest:
    return JobRequest("read", {}, meters=[meter], requested_by="ops")


def tick_jobs(links: list[tuple[str, list[str]]], tick: datetime = T0) -> list[JobRequest]:
    return [
        JobRequest(
            "collect",
            {"day": "2026-12-06", "group": "all"},
            meters=ids,
            origin="schedule",
            requested_by="schedule",
            priority=SCHEDULED,
            schedule="all/profile",
            tick=tick,
            link=link,
        )
        for link, ids in links
    ]


def test_a_lease_that_runs_out_is_claimed_by_another_node(db: Database) -> None:
    job, _ = jobs.submit(db, read(), T0)
    first = cluster.claim(db, "a", LEASE)
    assert first is not None and (first.id, first.owner, first.attempts) == (job.id, "a", 1)
    assert cluster.claim(db, "b", LEASE) is None  # leased: not for another node
    assert cluster.renew_jobs(db, "a", [job.id], LEASE) == {job.id}  # a renews in time
    time.sleep(LEASE / 2)
    assert cluster.claim(db, "b", LEASE) is None
    time.sleep(LEASE * 1.5)  # a stops renewing: dead or hung
    again = cluster.claim(db, "b", LEASE)
    assert again is not None and (again.id, again.owner, again.attempts) == (job.id, "b", 2)
    assert again.state == "running"


def test_a_node_that_lost_its_lease_can_neither_end_nor_renew_the_job(db: Database) -> None:
    job, _ = jobs.submit(db, read(), T0)
    assert cluster.claim(db, "a", LEASE) is not None
    time.sleep(LEASE * 1.5)
    # the lease ran out: even before another node claims the job, a cannot end it
    with pytest.raises(LeaseLost, match="no longer holds job"):
        cluster.finish(db, "a", job.id, "done", result={"by": "a"})
    assert cluster.claim(db, "b", 30.0) is not None
    assert cluster.renew_jobs(db, "a", [job.id], 30.0) == set()
    with pytest.raises(LeaseLost):
        cluster.finish(db, "a", job.id, "failed", error="late")
    assert cluster.requeue(db, "a", job.id) is False
    cluster.progress(db, "a", job.id, 5, 9)
    held = jobs.get(db, job.id)
    assert held is not None and (held.state, held.owner, held.progress_done) == ("running", "b", 0)
    cluster.progress(db, "b", job.id, 1, 1)
    done = cluster.finish(db, "b", job.id, "done", result={"by": "b"})
    assert (done.state, done.result, done.owner, done.lease_until) == (
        "done",
        {"by": "b"},
        "b",
        None,
    )
    assert done.progress_done == 1
    with pytest.raises(LeaseLost):  # ended: nobody ends it twice
        cluster.finish(db, "b", job.id, "done")


def test_a_requeued_job_goes_to_any_node_at_once(db: Database) -> None:
    job, _ = jobs.submit(db, read(), T0)
    assert cluster.claim(db, "a", 30.0) is not None
    assert cluster.requeue(db, "a", job.id) is True
    again = cluster.claim(db, "b", 30.0)
    assert again is not None and again.id == job.id and again.attempts == 2


def test_claims_honour_priority_and_on_demand_slots(db: Database) -> None:
    night, _ = jobs.submit(db, tick_jobs([("bus-1", ["M1"])])[0], T0)
    now, _ = jobs.submit(db, read("M2"), T0)
    assert cluster.claim(db, "a", 30.0, max_priority=jobs.ON_DEMAND).id == now.id  # type: ignore[union-attr]
    assert cluster.claim(db, "a", 30.0, max_priority=jobs.ON_DEMAND) is None
    assert cluster.claim(db, "a", 30.0).id == night.id  # type: ignore[union-attr]


def test_concurrent_claims_on_many_connections_never_share_a_job(pg_url: str) -> None:
    with open_database(pg_url) as db:
        for k in range(40):
            jobs.submit(db, read(f"M{k}"), T0)
    won: list[int] = []
    barrier = threading.Barrier(4)

    def node(name: str) -> None:
        with open_database(pg_url) as own:
            barrier.wait()
            while (job := cluster.claim(own, name, 30.0)) is not None:
                won.append(job.id)

    threads = [threading.Thread(target=node, args=(f"n{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == sorted(set(won)) and len(won) == 40


def test_the_leader_is_replaced_one_lease_after_it_stops_renewing(db: Database) -> None:
    assert cluster.lead(db, "a", LEASE) is True
    assert cluster.lead(db, "b", LEASE) is False  # a live leader is never displaced
    assert cluster.leader(db) == "a"
    time.sleep(LEASE / 2)
    assert cluster.lead(db, "a", LEASE) is True  # renewed
    time.sleep(LEASE / 2)
    assert cluster.lead(db, "b", LEASE) is False
    time.sleep(LEASE * 1.5)
    assert cluster.leader(db) is None
    assert cluster.lead(db, "b", LEASE) is True
    assert cluster.lead(db, "a", LEASE) is False  # the old leader, back: not the leader
    cluster.resign(db, "a")  # not a's to give up
    assert cluster.leader(db) == "b"
    cluster.resign(db, "b")
    assert cluster.lead(db, "a", LEASE) is True  # a resignation hands over at once


def test_two_leaders_racing_enqueue_a_tick_once(pg_url: str) -> None:
    links = [("bus-1", ["M1", "M2"]), ("tcp:M3", ["M3", "M4"])]
    results: list[tuple[list[int], bool]] = []

    def leader(requests: list[JobRequest], barrier: threading.Barrier) -> None:
        with open_database(pg_url) as own:
            barrier.wait()
            stored, created = cluster.submit_tick(own, requests, T0)
            results.append(([j.id for j in stored], created))

    ticks = [T0 + timedelta(minutes=k) for k in range(5)]
    for tick in ticks:
        results.clear()
        # the second leader saw another inventory (a bus more): still no job of its own
        splits = [tick_jobs(links, tick), tick_jobs([*links, ("bus-2", ["M5"])], tick)]
        barrier = threading.Barrier(len(splits))
        threads = [threading.Thread(target=leader, args=(s, barrier)) for s in splits]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(created for _, created in results) == [False, True]
        assert results[0][0] == results[1][0]
    with open_database(pg_url) as db:
        per_tick: dict[datetime | None, list[str]] = {}
        for job in jobs.list_jobs(db, limit=100):
            per_tick.setdefault(job.tick, []).append(job.link)
        assert sorted(per_tick) == ticks
        assert all(sorted(v) in (["bus-1", "tcp:M3"], ["bus-1", "bus-2", "tcp:M3"])
                   for v in per_tick.values())  # fmt: skip
        # the same tick again (a leader catching up after a failover): nothing new
        again, created = cluster.submit_tick(db, tick_jobs(links), T0)
        assert not created and sorted(j.link for j in again) == sorted(per_tick[T0])
        assert jobs.last_tick(db, "all/profile") == ticks[-1]


def test_a_bus_lease_is_held_by_one_node_until_it_runs_out(db: Database) -> None:
    assert cluster.take_link(db, "a", "bus-1", LEASE) is True
    assert cluster.take_link(db, "b", "bus-1", LEASE) is False
    assert cluster.take_link(db, "a", "bus-1", LEASE) is True  # confirmed before a session
    assert cluster.renew_links(db, "a", ["bus-1", "bus-9"], LEASE) == {"bus-1"}
    time.sleep(LEASE * 1.5)
    assert cluster.take_link(db, "b", "bus-1", 30.0) is True
    assert cluster.renew_links(db, "a", ["bus-1"], 30.0) == set()  # lost: a learns it
    assert cluster.take_link(db, "a", "bus-1", 30.0) is False
    cluster.release_links(db, "a")  # a releases nothing of b's
    assert cluster.take_link(db, "a", "bus-1", 30.0) is False
    cluster.release_links(db, "b", ["bus-1"])
    assert cluster.take_link(db, "a", "bus-1", 30.0) is True


def test_nodes_register_heartbeat_drain_and_list(db: Database) -> None:
    assert cluster.register_node(db, "a", "host-a", 100, LEASE, http="10.0.0.1:8080") == []
    assert cluster.register_node(db, "b", "host-b", 200, 30.0) == []
    with pytest.raises(NodeNameTaken, match="node 'b' is alive as pid 200 on host-b"):
        cluster.register_node(db, "b", "host-c", 300, 30.0)
    job, _ = jobs.submit(db, read(), T0)
    assert cluster.claim(db, "b", 30.0) is not None
    assert cluster.take_link(db, "b", "bus-1", 30.0)
    assert cluster.lead(db, "b", 30.0)
    assert cluster.heartbeat(db, "b", jobs_held=1, links_held=1, sessions=2) == "running"
    assert cluster.set_state(db, "b", "draining") is True
    assert cluster.heartbeat(db, "b", jobs_held=1, links_held=1, sessions=0) == "draining"
    assert cluster.set_state(db, "nobody", "draining") is False
    time.sleep(LEASE * 1.5)  # a stops beating
    nodes = {n.name: n for n in cluster.list_nodes(db)}
    assert (nodes["a"].alive, nodes["a"].leader, nodes["a"].http) == (False, False, "10.0.0.1:8080")
    b = nodes["b"]
    assert (b.alive, b.leader, b.state, b.jobs, b.links, b.sessions) == (
        True, True, "draining", [job.id], ["bus-1"], 0,
    )  # fmt: skip
    assert b.heartbeat_age_s >= LEASE and b.as_dict()["heartbeat_at"].endswith("+00:00")
    # b restarts under its name (after its lease): its running job is back in the queue
    with pytest.raises(NodeNameTaken):
        cluster.register_node(db, "b", "host-b", 201, 30.0)
    cluster.set_state(db, "b", "gone")
    assert cluster.register_node(db, "b", "host-b", 201, 30.0) == [job.id]
    requeued = jobs.get(db, job.id)
    assert requeued is not None and (requeued.state, requeued.owner) == ("queued", None)
    assert cluster.take_link(db, "a", "bus-1", 30.0)  # b's line leases went with it
    assert [n.name for n in cluster.list_nodes(db)] == ["a", "b"]
    cluster.set_state(db, "a", "gone")
    assert [n.name for n in cluster.list_nodes(db)] == ["b"]
    assert len(cluster.list_nodes(db, include_gone=True)) == 2


def test_cluster_mode_refuses_sqlite(tmp_path: Path) -> None:
    with open_database(tmp_path / "hes.db") as db:
        with pytest.raises(StorageError, match="needs a PostgreSQL database"):
            cluster.register_node(db, "a", "h", 1, 30.0)
        with pytest.raises(StorageError, match="cannot be shared between hosts"):
            cluster.list_nodes(db)
