"""One collector host and one simulator host, as two network namespaces on a bridge of the
test's own (``bench.netns``), with the machine's real PostgreSQL reached over the bridge.

The proof of the harness the multi-node tests stand on: ``hes simulate`` in host ``sim``
serves GPRS meters on a private range routed to it and two RS-485 buses on its address;
``hes meters import`` and ``hes collect`` run in host ``node1`` and store into PostgreSQL
through the forwarder on the bridge. Stored data equals the simulator's ground truth, the
bytes crossed the node's veth, and the simulator saw one client per bus at a time.

Skips, with the reason, where namespaces cannot be made (not root, no iproute2); under
``HES_REQUIRE_SERVICES=1`` (``.ci/run``) it fails instead.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from test_collector_fleet import CHANNELS, plan_text

from bench.netns import ROOT, Simulator, TestNet, env_for, link_bytes, start_simulator, url_via
from simulator import model
from simulator.fleet import meter_id_text
from simulator.meter import SimulatedMeter
from storage.database import Database, open_database
from storage.gaps import day_window

TIMEOUT = 120.0
SEED = 7151


def online_block(
    count: int, seed: int = SEED, *, for_s: float = 900.0, holds: float | None = None
) -> int:
    """A random first meter number from which ``count`` consecutive meters answer from now
    for ``for_s`` seconds (random, so concurrent runs use different ids) and, given
    ``holds``, whose clocks have passed that instant (their profile holds it already)."""
    rng = random.Random()
    now = time.time()

    def usable(number: int) -> bool:
        meter = SimulatedMeter(number, seed)
        if not (meter.online(now) and meter.online(now + for_s)):
            return False
        return holds is None or model.meter_clock(model.meter_spec(number, seed), now) > holds

    while True:
        first = rng.randrange(100_000, 900_000_000)
        if all(usable(n) for n in range(first, first + count)):
            return first


def collection_day() -> date:
    """Two days ago: a day every meter holds whole, whatever its clock drift."""
    return datetime.now(UTC).date() - timedelta(days=2)


def stored_vs_truth(db: Database, number: int, day: date, seed: int = SEED) -> list[str]:
    """Every difference between the stored intervals and the ground truth (empty: equal)."""
    start, end = day_window(day)
    truth = model.ground_truth(number, seed, start.timestamp(), end.timestamp()).load_profile
    problems = []
    for k, channel in enumerate(CHANNELS):
        want = [(datetime.fromtimestamp(r[0], UTC), r[2 + k], r[1]) for r in truth]
        got = [
            (r.ts, r.value, r.status)
            for r in db.interval_reads(meter_id_text(number), channel, start, end)
        ]
        if got != want:
            problems.append(f"meter {number} {channel}: {len(got)} stored, {len(want)} true")
    return problems


def hes_in(net: TestNet, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``hes ARGS`` in test host ``name``, to its end."""
    return net[name].run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, env=env_for(), timeout=TIMEOUT
    )


def fleet_args(first: int, tcp: int, buses: int, per_bus: int, inventory: Path) -> list[str]:
    return [
        "--tcp-meters", str(tcp), "--buses", str(buses), "--meters-per-bus", str(per_bus),
        "--seed", str(SEED), "--first-meter", str(first), "--port", "4059", "--baud", "0",
        "--duration", str(TIMEOUT * 3), "--inventory", str(inventory),
    ]  # fmt: skip


def assert_buses_never_shared(stats: dict[str, object], buses: int) -> None:
    lines = stats["bus_lines"]
    assert isinstance(lines, list) and len(lines) == buses
    for line in lines:
        assert line["connections"] >= 1, line
        assert (line["peak_clients"], line["overlaps"]) == (1, 0), line


def test_collect_across_namespaces_stores_the_ground_truth(
    test_hosts: Callable[[Sequence[str]], TestNet], pg_url: str, tmp_path: Path
) -> None:
    net = test_hosts(["sim", "node1"])
    db_url = url_via(pg_url, net.forward())
    tcp, buses, per_bus = 12, 2, 4
    first = online_block(tcp + buses * per_bus)
    numbers = range(first, first + tcp + buses * per_bus)
    inventory = tmp_path / "fleet.csv"
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text(concurrency=8), encoding="utf-8")
    day = collection_day()

    sim: Simulator = start_simulator(net, "sim", fleet_args(first, tcp, buses, per_bus, inventory))
    try:
        assert sim.info["tcp"]["first_address"] == "10.77.0.1"
        assert {b["host"] for b in sim.info["buses"]} == {net["sim"].address}
        imported = hes_in(net, "node1", "meters", "import", str(inventory), "--db", db_url)
        assert imported.returncode == 0, imported.stderr
        assert json.loads(imported.stdout)["inserted"] == len(numbers)
        before = link_bytes(net["node1"])
        run = hes_in(
            net, "node1", "collect", "--db", db_url, "--config", str(plan),
            "--day", day.isoformat(), "--seed", "1",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        after = link_bytes(net["node1"])
    finally:
        stats = sim.stop()
    summary = json.loads(run.stdout)
    assert summary["complete"] == len(numbers), summary
    # The sessions and the database rows crossed the node's own veth, both ways.
    assert after[0] - before[0] > 50_000 and after[1] - before[1] > 20_000
    assert stats["tcp"]["connections"] >= tcp
    assert_buses_never_shared(stats, buses)
    db = open_database(pg_url)
    try:
        for number in numbers:
            assert stored_vs_truth(db, number, day) == []
    finally:
        db.close()
