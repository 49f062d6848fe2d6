"""Three ``hes serve --node`` processes on loopback, one PostgreSQL, the real simulator:
one node is SIGKILLed while it reads a bus, and the stored data still equals the ground
truth, with no duplicate and no bus that ever saw two sessions at once.

The leader splits the daily profile tick into a job per bus and per two TCP meters; the
nodes claim them. The node killed holds a bus job part-way (its progress says so); its
lease runs out, another node claims the job (a second attempt), takes the bus's lease and
reads the bus's remaining meters (the read path skips what the dead node stored). The
simulator's bus servers count every connection that found the line taken.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cluster_nodes import cluster, node_argv
from serve_harness import (
    ROOT,
    SEED,
    Service,
    SimThread,
    config_file,
    service_env,
    stored_vs_truth,
    write_inventory,
)
from test_collector_fleet import plan_text

from collector.inventory import import_inventory
from simulator import model
from simulator.bus_server import HdlcBus, HdlcTcpServer
from simulator.fleet import FleetSpec
from simulator.meter import SimulatedMeter
from storage import access, jobs
from storage.database import Database, open_database
from storage.jobs import JobRecord

PROFILE = """
[group.schedule.profile]
cron = "5 0 * * *"
until = "06:00"
"""
LEASE_S = 2.0
#: Buses at 9600 baud: a bus job takes seconds, long enough to kill its node part-way.
BAUD = 9600
#: A meter whose clock lags by this much still holds the whole of yesterday's profile
#: (unless the test runs in the first minutes after midnight UTC).
CLOCK_LAG_S = 900
NODES = ("north", "south", "west")
TIMEOUT = 120.0


def tick_jobs(db: Database) -> list[JobRecord]:
    return [j for j in jobs.list_jobs(db, limit=1000) if j.schedule == "all/profile"]


def usable_run(count: int, start: int, instants: list[float]) -> int:
    """First meter number of ``count`` consecutive meters that answer at every instant and
    whose clock lags by at most :data:`CLOCK_LAG_S`."""

    def usable(n: int) -> bool:
        spec, meter = model.meter_spec(n, SEED), SimulatedMeter(n, SEED)
        return all(meter.online(t) and model.meter_clock(spec, t) >= t - CLOCK_LAG_S
                   for t in instants)  # fmt: skip

    n = start
    while True:
        bad = next((k for k in range(count) if not usable(n + k)), None)
        if bad is None:
            return n
        n += bad + 1


def slow_bus_plan() -> str:
    """The test plan with request and frame timers for a 9600-baud bus."""
    return (
        plan_text(concurrency=10)
        .replace("request_s = 0.5", "request_s = 5.0")
        .replace("hdlc_frame_s = 0.15", "hdlc_frame_s = 2.0")
    )


def wait_for(what: str, cond: object, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def test_three_nodes_one_killed_mid_bus_store_the_ground_truth_once(
    tmp_path: Path, pg_url: str
) -> None:
    now = time.time()
    spec = FleetSpec(
        seed=SEED,
        tcp_meters=6,
        buses=3,
        meters_per_bus=4,
        baudrate=BAUD,
        tcp_port=0,
        first_address="127.7.23.1",
        first_meter=usable_run(18, 300, [now, now + 600]),
    )
    with SimThread(spec) as fleet:
        ids = write_inventory(fleet, tmp_path / "meters.csv")
        db = open_database(pg_url)
        import_inventory(db, tmp_path / "meters.csv")
        plan = slow_bus_plan() + PROFILE + f"\n[cluster]\nlease_s = {LEASE_S}\ngprs_batch = 2\n"
        # one scheduled job at a time per node (the other slot is kept on demand)
        conf = config_file(tmp_path, plan, db=pg_url, poll_s=0.1, drain_s=2.0, max_jobs=2)
        with cluster(NODES, conf, service_env(ids, tmp_path)) as nodes:
            # A second process under a live node's name is refused: it would share its leases.
            twin = subprocess.run(
                node_argv(NODES[0], conf),
                cwd=ROOT,
                env=service_env(ids, tmp_path),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert twin.returncode == 1 and f"node {NODES[0]!r} is alive" in twin.stderr
            # The leader enqueues the tick: a job per bus, one per two TCP meters.
            wait_for("the tick's jobs", lambda: len(tick_jobs(db)) == 6)
            links = sorted(j.link for j in tick_jobs(db))
            assert links == sorted(
                [m.link_id for m in db.meters() if m.transport != "tcp"][::4]
                + [
                    f"tcp:{m}"
                    for m in sorted(m.meter_id for m in db.meters() if m.transport == "tcp")
                ][::2]
            )

            def bus_part_way() -> JobRecord | None:
                for j in tick_jobs(db):
                    if (
                        j.state == "running"
                        and not j.link.startswith("tcp:")
                        and 0 < j.progress_done < j.progress_total
                    ):
                        return j
                return None

            wait_for("a bus read part-way", lambda: bus_part_way() is not None)
            victim_job = bus_part_way()
            assert victim_job is not None and victim_job.owner in nodes
            victim = victim_job.owner
            nodes[victim].proc.send_signal(signal.SIGKILL)
            nodes[victim].proc.wait(timeout=10)
            killed_at = time.monotonic()

            wait_for(
                "every job of the tick to end",
                lambda: all(j.final for j in tick_jobs(db)),
            )
            done = {j.id: j for j in tick_jobs(db)}
            assert {j.state for j in done.values()} == {"done"}, [
                (j.link, j.state, j.error) for j in done.values()
            ]
            again = done[victim_job.id]
            assert again.attempts == 2 and again.owner != victim  # redelivered, once
            assert len({j.owner for j in done.values()}) >= 2  # the work was shared
            # the survivor could only take the bus once the dead node's lease ran out
            assert time.monotonic() - killed_at >= LEASE_S / 2
            day = date.fromisoformat(again.params["day"])
            for meter_id in ids:
                assert stored_vs_truth(db, meter_id, day) == [], meter_id
            # no bus ever had two sessions at once (nor a connection refused as busy)
            for server in fleet.bus_servers:
                assert (server.stats.line_contended, server.stats.rejected_busy) == (0, 0)
                assert server.stats.sessions_in_flight == 0
            survivors = [n for n in NODES if n != victim]
            on_demand_through_any_node(db, nodes, survivors, ids[-1], day)
            for name in survivors:
                assert nodes[name].stop() == 128 + signal.SIGTERM
            # the stopped nodes are gone; the killed one is listed, not alive
            (dead,) = run_hes("nodes", "--db", pg_url, "--json")
            assert (dead["name"], dead["alive"], dead["state"]) == (victim, False, "running")
        db.close()


def run_hes(*args: str) -> list[dict[str, Any]]:
    """A ``hes`` command's JSON lines."""
    out = subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def on_demand_through_any_node(
    db: Database, nodes: dict[str, Service], survivors: list[str], bus_meter: str, day: date
) -> None:
    """The operator's side: the nodes listed (the dead one not alive), one drained, and a
    read submitted through one node's API, run by the node still claiming, seen through
    the other's."""
    token = access.create_token(db, "ops", "operator")
    head = {"Authorization": f"Bearer {token}"}
    listed = {n["name"]: n for n in run_hes("nodes", "--db", str(db.url), "--json")}
    assert {n for n, v in listed.items() if v["alive"]} == set(survivors)
    drained, working = survivors
    assert run_hes("nodes", "drain", drained, "--db", str(db.url)) == [
        {"node": drained, "state": "draining"}
    ]
    with httpx.Client(base_url=nodes[drained].url, headers=head, timeout=30) as http:
        wait_for(
            "the drained node to stop leading",
            lambda: http.get("/api/nodes").json()["leader"] == working,
        )
        api = {n["name"]: n for n in http.get("/api/nodes").json()["items"]}
        assert api[drained]["state"] == "draining" and api[working]["alive"]
        # a bus meter's registers and the day collected, through the drained node
        first = datetime.combine(day, datetime.min.time(), UTC)
        window = {"from": first.isoformat(), "to": (first + timedelta(days=1)).isoformat()}
        made = http.post(f"/api/meters/{bus_meter}/read", json={"profile": window})
        assert made.status_code == 201, made.text
        job_id = made.json()["id"]
    with httpx.Client(base_url=nodes[working].url, headers=head, timeout=30) as http:
        wait_for("the read", lambda: http.get(f"/api/jobs/{job_id}").json()["state"] != "queued")
        wait_for("the read", lambda: http.get(f"/api/jobs/{job_id}").json()["finished_at"])
        job = http.get(f"/api/jobs/{job_id}").json()
    assert (job["state"], job["owner"]) == ("done", working), job
    assert job["result"]["complete"] == 1


async def test_the_bus_server_counts_a_second_session_on_the_line() -> None:
    """The check the test above relies on: a connection that finds the line taken."""
    server = HdlcTcpServer(HdlcBus({}), "127.0.0.1", 0, busy_wait_s=0.2)
    await server.start()
    try:
        _, first = await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.sleep(0.05)
        reader, second = await asyncio.open_connection("127.0.0.1", server.port)
        assert await reader.read() == b""  # refused once the wait is over
        assert (server.stats.line_contended, server.stats.rejected_busy) == (1, 1)
        first.close()
        second.close()
    finally:
        await server.close()
