"""Three collector nodes on three test hosts, the simulator on a fourth, the real PostgreSQL:
issue 15's proof that a cluster collects exactly the ground truth when a node dies.

Each host is a network namespace on the test's own bridge (``bench.netns``). ``hes serve
--node nodeK`` runs in host ``nodeK``, all three on the same database (through the
forwarder on the bridge), with 3 s leases. Their leader enqueues the day's tick split into
link jobs (a bus a job, GPRS meters in batches); every node claims jobs, takes a bus's link
lease before each session on it, reads and stores. Once data is flowing, the node that
holds a bus's lease and running jobs is SIGKILLed: its jobs and its bus come back to the
others when their leases run out. At the end:

- every meter's stored day equals the simulator's ground truth, and the database holds
  exactly the ground truth's number of values (a value stored twice would show);
- the simulator's per-bus counters say no bus ever had a second client while one held it
  (``peak_clients`` 1, ``overlaps`` 0), though the killed node's bus moved to another node;
- the killed node's jobs were finished by the survivors.

Skips, with the reason, where namespaces cannot be made; under ``HES_REQUIRE_SERVICES=1``
(``.ci/run``) it fails instead.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
from conftest import PG_DB, PG_HOST, PG_PORT, PG_USER
from test_collector_fleet import plan_text
from test_netns_collect import SEED, assert_buses_never_shared, online_block, stored_vs_truth

from bench.cluster_bench import Node, days_back_schedule, node_config, start_node, stop_nodes
from bench.netns import ROOT, TestNet, env_for, start_simulator, url_via, wait_for
from simulator import model
from storage.database import open_database
from storage.gaps import day_window

TIMEOUT = 240.0
NODES = ("node1", "node2", "node3")
#: The test plan with timeouts for buses at 9600 baud (a profile block takes a second).
PLAN = (
    plan_text(concurrency=6)
    .replace("request_s = 0.5", "request_s = 10.0")
    .replace("hdlc_frame_s = 0.15", "hdlc_frame_s = 3.0")
)


def query(pg: dict[str, Any], schema: str, sql: str, *params: Any) -> list[Any]:
    """Rows of ``sql`` in the test's schema, on a connection of its own."""
    with psycopg.connect(**pg, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return list(conn.execute(sql, params).fetchall())


def schema_of(pg_url: str) -> str:
    return pg_url.rsplit("search_path%3D", 1)[1]


def test_three_nodes_one_killed_store_exactly_the_ground_truth(
    test_hosts: Callable[[Sequence[str]], TestNet], pg_url: str, tmp_path: Path
) -> None:
    pg = {"host": PG_HOST, "port": PG_PORT, "user": PG_USER, "dbname": PG_DB}
    schema = schema_of(pg_url)
    net = test_hosts(["sim", *NODES])
    db_url = url_via(pg_url, net.forward())
    tcp, buses, per_bus = 20, 4, 6
    schedule, day = days_back_schedule(datetime.now(UTC))
    start, end = day_window(day)
    first = online_block(tcp + buses * per_bus, for_s=TIMEOUT, holds=end.timestamp() + 60)
    numbers = range(first, first + tcp + buses * per_bus)
    inventory = tmp_path / "fleet.csv"
    sim = start_simulator(
        net,
        "sim",
        [
            "--tcp-meters", str(tcp), "--buses", str(buses), "--meters-per-bus", str(per_bus),
            "--seed", str(SEED), "--first-meter", str(first), "--port", "4059",
            "--baud", "9600", "--duration", str(TIMEOUT * 2),
            "--inventory", str(inventory),
        ],
    )  # fmt: skip
    nodes: list[Node] = []
    try:
        imported = net["node1"].run(
            [sys.executable, "-m", "cli", "meters", "import", str(inventory), "--db", db_url],
            cwd=ROOT,
            env=env_for(),
            timeout=120,
        )
        assert imported.returncode == 0, imported.stderr
        for name in NODES:
            config = node_config(
                tmp_path, name, db_url, PLAN + schedule, lease_s=3.0, gprs_batch=5, poll_s=0.1
            )
            nodes.append(start_node(net, name, config))

        def victim() -> str | None:
            """A node in the middle of a bus: its lease held, some of its meters read."""
            rows = query(
                pg,
                schema,
                "SELECT l.owner FROM link_leases l JOIN jobs j ON j.owner = l.owner "
                "AND j.link = l.link WHERE l.lease_until > clock_timestamp() "
                "AND j.state = 'running' AND j.progress_done >= 1 "
                "AND j.progress_done < j.progress_total LIMIT 1",
            )
            return str(rows[0][0]) if rows else None

        def diagnosis() -> str:
            jobs = query(pg, schema, "SELECT id, state, link, owner, attempts, result FROM jobs")
            leases = query(pg, schema, "SELECT * FROM link_leases")
            logs = "\n".join(f"--- {n.name}\n{n.log()}" for n in nodes)
            days = query(
                pg,
                schema,
                "SELECT m.meter_id, count(*), sum(d.missing) FROM interval_days d JOIN "
                "interval_meters m USING (meter_key) WHERE d.day = %s GROUP BY m.meter_id",
                (day - date(1970, 1, 1)).days,
            )
            partial = [r for r in days if (r[1], r[2]) != (4, 0)]
            return (
                f"jobs {jobs}\nleases {leases}\n{len(days)} meters stored, partial {partial}"
                f"\n{logs}"
            )

        chosen: list[str] = []

        def pick() -> bool:
            name = victim()
            if name is not None:
                chosen.append(name)
            return name is not None

        try:
            wait_for(pick, 120, "a node in the middle of a bus")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; {diagnosis()}") from None
        killed = chosen[0]
        dead = next(n for n in nodes if n.name == killed)
        dead.proc.send_signal(signal.SIGKILL)
        dead.proc.wait(timeout=30)
        held = [
            r[0]
            for r in query(
                pg, schema, "SELECT id FROM jobs WHERE owner = %s AND state = 'running'", killed
            )
        ]
        assert held, diagnosis()

        def complete() -> bool:
            rows = query(
                pg,
                schema,
                "SELECT count(*) FROM (SELECT meter_key FROM interval_days WHERE day = %s "
                "GROUP BY meter_key HAVING count(*) = 4 AND sum(missing) = 0) AS whole",
                (day - date(1970, 1, 1)).days,
            )
            return int(rows[0][0]) == len(numbers)

        try:
            wait_for(complete, TIMEOUT, "every meter's day stored", step=0.5)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; killed {killed}; {diagnosis()}") from None
        finished = query(pg, schema, "SELECT id, state, owner FROM jobs WHERE id = ANY(%s)", held)
        assert {(state, owner != killed) for _, state, owner in finished} == {("done", True)}, (
            f"killed {killed}, held {held}: {diagnosis()}"
        )
    finally:
        stop_nodes(nodes)
        stats = sim.stop()

    assert_buses_never_shared(stats, buses)
    db = open_database(pg_url)
    try:
        for number in numbers:
            assert stored_vs_truth(db, number, day) == [], f"killed {killed}: {diagnosis()}"
        truth = sum(
            len(model.ground_truth(n, SEED, start.timestamp(), end.timestamp()).load_profile)
            for n in numbers
        )
        assert db.count_interval_values() == 4 * truth, f"killed {killed}: {diagnosis()}"
    finally:
        db.close()
