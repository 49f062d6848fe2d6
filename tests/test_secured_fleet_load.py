"""A secured fleet at load-test size through the real CLI: LLS and HLS meters from the key
file the simulator writes.

``hes simulate --secure-share --lls-share --keys`` serves 300 meters (HLS-GMAC suite 0, LLS
and public ones) and writes the key-store import file (mode 0600) with every secured meter's
keys and every LLS meter's password; ``hes keys import`` seals them. Then, with no
``HES_PASSWORD_*`` in the environment, ``hes collect --clock-sync --events`` reads every meter
to the ground truth, corrects the drifting clocks of the LLS and HLS meters (as the model's
drift says) and stores their event logs (as the model's logs say); ``hes disconnect`` and
``hes reconnect`` switch every LLS and HLS meter's relay, read back; ``hes read --key-store``
of a corrected HLS meter finds its clock right, continuing the counters the collector
left in the key store. No key, in hex either case, is in any output, the log or the database.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import stat
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from test_collector_fleet import plan_text
from test_security_collect import (
    TIMEOUT,
    free_loopback_base,
    hes,
    leaks,
    online_block,
    secrets_of,
    stored_vs_truth,
)

from collector.events import POWER_FAILURE_LOG, STANDARD_EVENT_LOG
from simulator import model
from simulator.fleet import meter_id_text, meter_number
from simulator.objects import EVENT_LOG_CAPACITY, EVENT_LOG_DAYS
from storage.database import Database, open_database
from storage.operations import clock_corrections_of
from storage.queries import events_of

ROOT = Path(__file__).resolve().parents[1]
METERS = 300
SEED = 7207
THRESHOLD_S = 5.0
#: Event entries compared: those of the 20 days before the run (both logs held them all).
EVENT_SPAN = 20 * model.DAY


def events_truth(number: int, log: str, start: float, end: float) -> list[tuple[datetime, int]]:
    fn = model.events if log == STANDARD_EVENT_LOG else model.power_events
    rows = fn(model.meter_spec(number, SEED), start, end)
    return [(datetime.fromtimestamp(ts, UTC), code) for ts, code in rows]


def check_events(db: Database, number: int, run_start: float) -> list[str]:
    """The stored entries of both logs against the model over the span before the run."""
    end = run_start - 3600
    start = end - EVENT_SPAN
    problems = []
    for log in (STANDARD_EVENT_LOG, POWER_FAILURE_LOG):
        held = events_truth(number, log, run_start - EVENT_LOG_DAYS * model.DAY, run_start)
        held = held[-EVENT_LOG_CAPACITY:]
        assert not held or held[0][0].timestamp() < start or len(held) < EVENT_LOG_CAPACITY
        want = events_truth(number, log, start, end)
        got = [
            (e.ts, e.code)
            for e in events_of(
                db,
                meter_id_text(number),
                datetime.fromtimestamp(start, UTC),
                datetime.fromtimestamp(end, UTC),
                log_obis=log,
                limit=100_000,
            )
        ]
        if got != want:
            problems.append(f"meter {number} {log}: {len(got)} stored, {len(want)} true")
    return problems


def drift_at(number: int, t: float) -> float:
    return model.meter_clock(model.meter_spec(number, SEED), t) - t


def check_clock(db: Database, number: int, run_start: float, run_end: float) -> list[str]:
    """A clock off by more than the threshold (model drift) was corrected, and recorded with
    the drift measured; one well inside it was left alone."""
    drift, drift_end = drift_at(number, run_start), drift_at(number, run_end)
    rows = clock_corrections_of(db, meter_id_text(number))
    if min(abs(drift), abs(drift_end)) > THRESHOLD_S + 1.5:
        if len(rows) != 1:
            return [f"meter {number}: drift {drift:.1f} s, {len(rows)} corrections"]
        row = rows[0]
        lo, hi = sorted((drift, drift_end))
        if row.drift_s is None or not lo - 1.5 <= row.drift_s <= hi + 1.5:
            return [f"meter {number}: drift {drift:.1f} s recorded as {row.drift_s}"]
        if row.residual_s is None or abs(row.residual_s) > 1.5:
            return [f"meter {number}: residual {row.residual_s} s after the correction"]
    elif max(abs(drift), abs(drift_end)) < THRESHOLD_S - 1.5 and rows:
        return [f"meter {number}: drift {drift:.1f} s corrected anyway"]
    return []


async def test_lls_and_hls_fleet_from_the_simulators_key_file(tmp_path: Path) -> None:
    first = online_block(SEED, METERS)
    numbers = list(range(first, first + METERS))
    day = datetime.now(UTC).date() - timedelta(days=2)
    inventory, keys_csv, db = tmp_path / "fleet.csv", tmp_path / "keys.csv", tmp_path / "hes.db"
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text(concurrency=40), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HES_")}
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "simulate",
        "--tcp-meters", str(METERS), "--seed", str(SEED), "--first-meter", str(first),
        "--secure-share", "0.3", "--lls-share", "0.4",
        "--port", "0", "--first-address", free_loopback_base(),
        "--duration", str(TIMEOUT * 8),
        "--inventory", str(inventory), "--write-keys", str(keys_csv),
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    outputs: list[bytes] = []

    async def run(*args: str) -> dict[str, Any]:
        code, out, err = await hes(tmp_path, *args, master=True)
        outputs.extend([out, err])
        assert code == 0, (args[0], out.decode()[-2000:], err.decode()[-2000:])
        try:
            result: dict[str, Any] = json.loads(out)
        except json.JSONDecodeError:
            result = json.loads(out.splitlines()[-1])
        return result

    try:
        assert sim.stdout is not None
        info = json.loads(await asyncio.wait_for(sim.stdout.readline(), TIMEOUT))
        assert (info["meters"], info["secured_meters"], info["lls_meters"]) == (300, 90, 120)
        assert info["key_rows"] == 210
        assert stat.S_IMODE(keys_csv.stat().st_mode) == 0o600
        with inventory.open(encoding="utf-8") as fh:
            rows = {meter_number(r["meter_id"]): r for r in csv.DictReader(fh)}
        hls = sorted(n for n, r in rows.items() if r["authentication"] == "hls-gmac")
        lls = sorted(n for n, r in rows.items() if r["authentication"] == "lls")
        assert (len(hls), len(lls)) == (90, 120)
        assert all(rows[n]["password_ref"] == meter_id_text(n) for n in lls)
        assert {rows[n]["client_sap"] for n in hls + lls} == {"1"}

        await run("meters", "import", str(inventory), "--db", str(db))
        imported = await run("keys", "import", str(keys_csv), "--db", str(db))
        assert (imported["rows"], imported["lls_secrets"], imported["inserted"]) == (210, 120, 210)

        run_start = time.time()
        summary = await run(
            "collect", "--db", str(db), "--config", str(plan), "--day", day.isoformat(),
            "--clock-sync", str(THRESHOLD_S), "--events",
            "--log-file", str(tmp_path / "collect.jsonl"), "--no-progress",
        )  # fmt: skip
        run_end = time.time()
        assert summary["complete"] == METERS and summary["final_errors"] == {}, summary

        ids = tmp_path / "managed.txt"
        ids.write_text("".join(f"{meter_id_text(n)}\n" for n in hls + lls))
        for command, state in (("disconnect", "disconnected"), ("reconnect", "connected")):
            result = await run(command, "--file", str(ids), "--db", str(db), "--concurrency", "40")
            assert (result["ok"], result["failed"]) == (210, 0), result
            assert all(r["control_state"] == state for r in result["results"])

        # An HLS meter the collector corrected reads right, on the counters it left.
        corrected = next(
            n
            for n in hls
            if abs(model.meter_clock(model.meter_spec(n, SEED), run_start) - run_start) > 30
        )
        read = await run(
            "read", "--tcp", f"{rows[corrected]['host']}:{rows[corrected]['port']}",
            "--auth", "hls-gmac", "--key-store", meter_id_text(corrected), "--db", str(db),
        )  # fmt: skip
        assert abs(read["clock"]["error_s"]) < 2, read["clock"]
        assert read["security"]["keys_from"] == "key-store"
    finally:
        if sim.returncode is None:
            sim.terminate()
        await asyncio.wait_for(sim.communicate(), TIMEOUT)

    database = open_database(db)
    try:
        problems = [p for n in numbers for p in stored_vs_truth(database, n, SEED, day)]
        for n in hls + lls:
            problems += check_events(database, n, run_start)
            problems += check_clock(database, n, run_start, run_end)
        for n in sorted(set(numbers) - set(hls) - set(lls)):
            assert clock_corrections_of(database, meter_id_text(n)) == []  # public: no sync
        # the checks had something to check: corrections and events of both kinds of meter
        for group in (hls, lls):
            fixed = [n for n in group if clock_corrections_of(database, meter_id_text(n))]
            assert len(fixed) > len(group) // 3, (len(fixed), len(group))
            held = sum(len(events_of(database, meter_id_text(n), None, None)) for n in group)
            assert held > len(group), held
    finally:
        database.close()
    assert problems == [], problems[:20]

    secrets = secrets_of(SEED, hls)
    blobs = {"outputs": b"".join(outputs), "log": (tmp_path / "collect.jsonl").read_bytes()}
    blobs["db"] = db.read_bytes()
    for name, blob in blobs.items():
        assert leaks(blob, secrets) == [], f"key material in {name}"
    assert leaks(keys_csv.read_bytes(), secrets)  # the check can fail: the file holds them
