"""The real ``hes`` CLI in a subprocess against a simulator fleet serving from a thread.

End to end: import the inventory, collect a day through injected faults, check every stored
value against ground truth, report; kill the collector with SIGKILL mid-run and restart it
(nothing lost, nothing duplicated); stop it with SIGTERM across worker processes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from test_collector_fleet import (
    DAY,
    Fleet,
    FleetThread,
    online_meter_ids,
    outage_meter_ids,
    plan_text,
    stored_vs_truth,
    truth_rows,
)

from app.collect import CollectOptions, collect_async
from collector.inventory import import_inventory
from collector.mqtt_payloads import iso_utc
from collector.plan import load_plan
from simulator.faults import FaultPlan, FaultSpec
from storage.database import open_database

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60


def hes(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(cwd),
    )


def _env(tmp: Path) -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp)}


def start_hes(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(cwd),
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Fleet, Path, Path]]:
    """A fleet (28 + 2 outage TCP meters, 2 buses of 5, 25 % transient session faults,
    1 ms per answer) with its inventory CSV and a test plan file."""
    ids = online_meter_ids(38, 2000)
    fleet = Fleet(
        [*ids[:28], *outage_meter_ids(2, 6000)],
        [ids[28:33], ids[33:38]],
        faults=FaultPlan(FaultSpec.transient(0.25), seed=11),
        latency=0.001,
    )
    with FleetThread(fleet):
        csv = fleet.write_csv(tmp_path / "meters.csv")
        plan = tmp_path / "plan.toml"
        plan.write_text(plan_text(concurrency=20), encoding="utf-8")
        yield fleet, csv, plan


def expected_rows(fleet: Fleet) -> int:
    return 4 * sum(len(truth_rows(s, DAY)) for s in fleet.all_ids)


def stored_values(db_path: Path) -> int:
    """Interval values stored (a day row holds one per slot, so a value read twice is one)."""
    db = open_database(db_path)
    try:
        return db.count_interval_values()
    finally:
        db.close()


def check_values(fleet: Fleet, db_path: Path) -> None:
    db = open_database(db_path)
    try:
        for sim_id in fleet.all_ids:
            assert stored_vs_truth(db, sim_id, DAY) == []
    finally:
        db.close()


def test_import_collect_report_end_to_end(served: tuple[Fleet, Path, Path], tmp_path: Path) -> None:
    fleet, csv, plan = served
    db = tmp_path / "hes.db"
    imported = hes("meters", "import", str(csv), "--db", str(db), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["inserted"] == 40

    run = hes(
        "collect",
        "--db",
        str(db),
        "--config",
        str(plan),
        "--day",
        DAY.isoformat(),
        "--seed",
        "1",
        "--log-file",
        str(tmp_path / "collect.jsonl"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["complete"] == 40
    assert summary["success_rate"] == 1.0
    assert summary["retries"] > 0
    check_values(fleet, db)
    assert stored_values(db) == expected_rows(fleet)
    for server in fleet.bus_servers:
        assert server.stats.rejected_busy == 0
        assert server.stats.peak_sessions_in_flight == 1
        assert (server.clients.peak_clients, server.clients.overlaps) == (1, 0)
    events = [json.loads(line) for line in (tmp_path / "collect.jsonl").read_text().splitlines()]
    attempts = [e for e in events if e["event"] == "attempt"]
    assert len(attempts) == summary["attempts"]
    assert {e["outcome"] for e in attempts} <= {"ok", "failed", "partial"}
    assert events[-1]["event"] == "run_end"

    report = hes(
        "report", "--date", DAY.isoformat(), "--db", str(db), "--format", "json", cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert (data["expected_meters"], data["complete_meters"]) == (40, 40)
    assert data["success_rate"] == 1.0
    assert data["intervals_missing"] == 0
    assert sum(data["failures_by_error_class"].values()) == summary["attempts"] - 40
    table = hes("report", "--date", DAY.isoformat(), "--db", str(db), cwd=tmp_path)
    assert table.returncode == 0
    assert "100.000 %" in table.stdout


def test_sigkill_mid_run_then_restart_stores_exactly_the_ground_truth(
    served: tuple[Fleet, Path, Path], tmp_path: Path
) -> None:
    fleet, csv, plan = served
    fleet.latency = 0.03  # slow meters, so the kill lands mid-run
    db = tmp_path / "hes.db"
    assert hes("meters", "import", str(csv), "--db", str(db), cwd=tmp_path).returncode == 0
    args = [
        "collect",
        "--db",
        str(db),
        "--config",
        str(plan),
        "--day",
        DAY.isoformat(),
        "--concurrency",
        "2",
        "--seed",
        "2",
    ]
    proc = start_hes(*args, cwd=tmp_path)
    try:
        deadline = time.monotonic() + TIMEOUT
        while stored_values(db) == 0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    rows_at_kill = stored_values(db)
    assert 0 < rows_at_kill < expected_rows(fleet)

    fleet.latency = 0.001
    rerun = hes(*args[:-4], "--seed", "3", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["complete"] + summary["skipped_complete"] == 40
    assert summary["intervals_stored"] == expected_rows(fleet) - rows_at_kill
    assert stored_values(db) == expected_rows(fleet)
    check_values(fleet, db)


def test_sigint_stops_a_single_process_collect_with_130(
    served: tuple[Fleet, Path, Path], tmp_path: Path
) -> None:
    fleet, csv, plan = served
    fleet.latency = 0.03
    db = tmp_path / "hes.db"
    assert hes("meters", "import", str(csv), "--db", str(db), cwd=tmp_path).returncode == 0
    args = ["collect", "--db", str(db), "--config", str(plan), "--day", DAY.isoformat(),
            "--concurrency", "2", "--seed", "5"]  # fmt: skip
    proc = start_hes(*args, cwd=tmp_path)
    try:
        deadline = time.monotonic() + TIMEOUT
        while stored_values(db) == 0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        fleet.latency = 0.001
    assert proc.returncode == 128 + signal.SIGINT, err
    stopped = json.loads(out)
    assert stopped["interrupted"] is True
    assert stopped["complete"] < 40


def test_sigterm_stops_worker_processes_cleanly_and_a_rerun_completes(
    served: tuple[Fleet, Path, Path], tmp_path: Path
) -> None:
    fleet, csv, plan = served
    fleet.latency = 0.03
    db = tmp_path / "hes.db"
    assert hes("meters", "import", str(csv), "--db", str(db), cwd=tmp_path).returncode == 0
    args = [
        "collect",
        "--db",
        str(db),
        "--config",
        str(plan),
        "--day",
        DAY.isoformat(),
        "--workers",
        "2",
        "--concurrency",
        "2",
        "--seed",
        "4",
    ]
    proc = start_hes(*args, cwd=tmp_path)
    deadline = time.monotonic() + TIMEOUT
    while stored_values(db) == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 128 + signal.SIGTERM, err
    stopped = json.loads(out)
    assert stopped["interrupted"] is True
    assert stopped["workers"] == 2
    assert stopped["complete"] < 40
    assert len(stopped["incomplete"]) == min(20, 40 - stopped["complete"])
    assert stopped["incomplete_more"] == 40 - stopped["complete"] - len(stopped["incomplete"])

    fleet.latency = 0.001
    rerun = hes(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["complete"] + summary["skipped_complete"] == 40
    assert stored_values(db) == expected_rows(fleet)
    check_values(fleet, db)


def test_bad_plan_and_bad_inventory_exit_with_a_clear_message(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text().replace("period_s = 900", "period_s = 7"), encoding="utf-8")
    run = hes("collect", "--db", str(tmp_path / "x.db"), "--config", str(plan), cwd=tmp_path)
    assert run.returncode == 2
    assert f"{plan}: group[0].profile.period_s: 7 outside 60..86400" in run.stderr
    bad = tmp_path / "m.csv"
    bad.write_text("meter_id,transport,host\nA,tcp,\n", encoding="utf-8")
    imp = hes("meters", "import", str(bad), "--db", str(tmp_path / "x.db"), cwd=tmp_path)
    assert imp.returncode == 1
    assert f"{bad}:2: host is required for transport tcp" in imp.stderr
    report = hes("report", "--date", "2026-13-01", "--db", str(tmp_path / "x.db"), cwd=tmp_path)
    assert report.returncode == 2
    assert "--date '2026-13-01' is not a date" in report.stderr


async def test_mqtt_gets_every_completed_read(tmp_path: Path, mqtt_broker: tuple[str, int]) -> None:
    """``hes collect --mqtt-url`` path: every meter's intervals arrive on hes/<meter>/profile."""
    host, port = mqtt_broker
    ids = online_meter_ids(8, 3000)
    fleet = Fleet(ids[:5], [ids[5:]], faults=FaultPlan(FaultSpec.transient(0.3), seed=5))
    await fleet.start()
    db = tmp_path / "hes.db"
    database = open_database(db)
    import_inventory(database, fleet.write_csv(tmp_path / "m.csv"))
    database.close()
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text(), encoding="utf-8")
    got: dict[str, list[dict[str, Any]]] = {}
    names = {Fleet.name(s) for s in ids}
    opts = CollectOptions(
        db=str(db),
        config=str(plan),
        day=DAY,
        run_id=f"mqtt-{uuid.uuid4().hex[:8]}",
        concurrency=None,
        once=False,
        seed=1,
        log_file=None,
        mqtt_url=f"mqtt://{host}:{port}",
        mqtt_spool=str(tmp_path / "spool.db"),
    )
    try:
        async with aiomqtt.Client(host, port, identifier=f"t-{opts.run_id}") as client:
            await client.subscribe("hes/+/profile", qos=1)

            async def listen() -> None:
                async for message in client.messages:
                    payload = json.loads(bytes(message.payload))
                    if payload.get("run_id") == opts.run_id:
                        got.setdefault(payload["meter_id"], []).append(payload)
                        if set(got) == names:
                            return

            listener = asyncio.create_task(listen())
            summary, signum = await collect_async(opts, load_plan(plan))
            await asyncio.wait_for(listener, TIMEOUT)
    finally:
        await fleet.close()
    assert signum is None
    assert summary.stats.complete == 8
    assert set(got) == names
    for sim_id in ids:
        (message,) = got[Fleet.name(sim_id)]
        assert message["complete"] is True
        assert message["kind"] == "profile"
        a_plus = {
            i["ts"]: i["raw"] for i in message["intervals"] if i["channel"] == "1.0.1.8.0.255"
        }
        truth = {iso_utc(datetime.fromtimestamp(r[0], UTC)): r[2] for r in truth_rows(sim_id, DAY)}
        assert a_plus == truth
        assert len(message["intervals"]) == 4 * len(truth)
