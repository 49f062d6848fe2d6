"""Scenario 5 of ``hes bench`` (bench/storage_bench.py) at a tiny size, and its parts.

The scenario runs as ``hes bench --scenario storage`` in a subprocess, as the smoke test runs
every scenario; the parts are checked on real databases: the sessions it builds follow the
simulator's model, a report that does not match the data built fails the scenario, and the
byte counts cover every table, partitions of a partitioned PostgreSQL table included.
Timings are figures, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.child_usage import run_measured
from bench.disk_usage import growth, pg_sizes, sqlite_sizes
from bench.harness import BenchError
from bench.storage_bench import (
    CHANNELS,
    DAY,
    SessionBuilder,
    check_report,
    ingest,
    inventory,
    meter_ids,
)
from simulator import model
from storage.database import open_database

ROOT = Path(__file__).resolve().parents[1]
CHANNEL_NAMES = [c for c, _ in CHANNELS]


def test_scenario_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "bench", "--scenario", "storage", "--storage-meters", "60",
         "--report-meters", "9", "--replace", "--out", str(out), "--workdir", str(tmp_path / "w")],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    st = data["scenarios"]["storage"]
    assert "error" not in st, st.get("error")
    backends = {"sqlite": st["sqlite"]}
    if "skipped" not in st["postgresql"]:
        backends["postgresql"] = st["postgresql"]
    for name, b in backends.items():
        assert b["meters"] == 60, name
        assert b["batches"] >= 1 and b["batch_size_max"] <= 60, name
        assert 0.9 * 60 * 384 <= b["values"] <= 60 * 384, name
        assert b["baseline"]["rows"] == b["values"] and b["over_baseline"] > 0, name
        disk = b["disk"]
        assert disk["bytes_added"] > 0 and disk["bytes_per_value"] > 0, name
        # tables are listed biggest first, whatever they are called
        sizes = [t["bytes"] for t in disk["by_table"].values()]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] > 0, (name, disk)
        assert b["report"] == {**b["report"], "meters": 60, "success_rate": 1.0}, name
    day = st["report_day"]
    assert day["meters"] == 9 and day["fill"]["meters"] == 9 and day["success_rate"] == 1.0
    assert day["peak_rss_mib"] > 10 and day["wall_s"] > 0
    md = out.with_suffix(".md").read_text()
    assert "## 5. Storage" in md and "SQLite bytes per interval value" in md


def test_sessions_follow_the_model() -> None:
    builder = SessionBuilder()
    ids = meter_ids(len(builder.templates) + 1)
    records = inventory(ids)
    first, again = builder.session(0, records[0]), builder.session(len(ids) - 1, records[-1])
    start = builder.stamps[0].timestamp()
    truth = model.load_profile(model.meter_spec(0, 2026), start, start + 86400)
    a_plus = [r.value for r in first.readout.intervals if r.channel == CHANNEL_NAMES[0]]
    assert a_plus == [row[2] for row in truth]
    # the template's day reused by another meter: same deltas, its own cumulative values
    reused = [r.value for r in again.readout.intervals if r.channel == CHANNEL_NAMES[0]]
    assert reused != a_plus
    assert [b - a for a, b in pairwise(reused)] == [b - a for a, b in pairwise(a_plus)]
    out = first.readout
    assert {c.channel for c in out.channels} == set(CHANNEL_NAMES)
    assert {r.obis for r in out.registers} == set(CHANNEL_NAMES)
    assert [(c.first, c.last) for c in out.coverage] == [
        (builder.stamps[0], builder.stamps[-1])
    ] * 4
    assert first.outcome == "ok" and first.complete and first.job.meter.meter_id == ids[0]


def _built(path: Path, meters: int, stored: int) -> dict[str, Any]:
    """``meters`` in the inventory, the first ``stored`` of them collected; the day's report."""
    with open_database(str(path)) as db:
        db.upsert_meters(inventory(meter_ids(meters)))
        figures = ingest(db, SessionBuilder(), 0, stored)
        assert figures["meters"] == stored
        return db.daily_report(DAY, CHANNEL_NAMES)


def test_a_wrong_report_fails_the_scenario(tmp_path: Path) -> None:
    check_report(_built(tmp_path / "full.db", 3, 3), 3, DAY)
    with pytest.raises(BenchError, match="expected_meters"):
        check_report(_built(tmp_path / "full2.db", 3, 3), 4, DAY)
    # one meter of the inventory never stored: the report must not pass for complete
    with pytest.raises(BenchError, match="complete_meters"):
        check_report(_built(tmp_path / "short.db", 3, 2), 3, DAY)


def test_sqlite_bytes_cover_every_table(tmp_path: Path) -> None:
    path = tmp_path / "hes.db"
    with open_database(str(path)) as db:
        db.upsert_meters(inventory(meter_ids(60)))
    before = sqlite_sizes(path)
    with open_database(str(path)) as db:
        values = ingest(db, SessionBuilder(), 0, 60)["values"]
    after = sqlite_sizes(path)
    assert after["file_bytes"] > before["file_bytes"]
    disk = growth(before, after, values)
    assert disk["bytes_added"] == after["file_bytes"] - before["file_bytes"]
    assert disk["bytes_per_value"] == round(disk["bytes_added"] / values, 2)
    if disk["by_table"] is None:
        pytest.skip("this SQLite has no dbstat")
    listed = sum(t["bytes"] for t in disk["by_table"].values())
    # every page the ingest added belongs to some table or index (none left unlisted)
    freed = after["free_pages"] - before["free_pages"]  # pages free before may be reused
    assert listed == disk["bytes_added"] - after["page_size"] * freed
    for table in disk["by_table"].values():
        assert sum(table["objects"].values()) == table["bytes"]


def test_postgresql_bytes_include_partitions(
    pg_url: str, pg_admin: psycopg.Connection[Any]
) -> None:
    schema = pg_url.rsplit("%3D", 1)[1]
    with open_database(pg_url) as db:
        before = pg_sizes(db)
        pg_admin.execute(
            f'CREATE TABLE "{schema}".sb_part (k int PRIMARY KEY, v text) PARTITION BY RANGE (k)'
        )
        for lo in (0, 1000):
            pg_admin.execute(
                f'CREATE TABLE "{schema}".sb_part_{lo} PARTITION OF "{schema}".sb_part '
                f"FOR VALUES FROM ({lo}) TO ({lo + 1000})"
            )
        pg_admin.execute(
            f"INSERT INTO \"{schema}\".sb_part SELECT k, repeat('x', 100) "
            "FROM generate_series(0, 1999) k"
        )
        after = pg_sizes(db)
    assert "sb_part" not in before["objects"]
    assert after["relations"]["sb_part"] == 2
    assert "sb_part_0" not in after["objects"]  # counted under the partitioned table
    assert after["objects"]["sb_part"] > 2000 * 100
    assert after["objects"]["sb_part (indexes)"] > 0
    disk = growth(before, after, 2000)
    assert next(iter(disk["by_table"])) == "sb_part"
    assert disk["by_table"]["sb_part"]["relations"] == 2


def test_peak_rss_is_the_commands_own(tmp_path: Path) -> None:
    # The test process holds 256 MiB; a child spawned straight from it would report at least
    # that (its ru_maxrss starts at the spawning process's RSS). The command's own is far less.
    held = bytearray(b"\1") * (256 * 2**20)
    usage = run_measured(["report", "--help"], tmp_path / "help.log", 120)
    assert "--date" in usage.stdout
    assert 10 < usage.peak_rss_mib < 200 and usage.wall_s > 0 and usage.cpu_s > 0
    assert held[-1] == 1


def test_a_failing_command_names_itself(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"hes report --date exited 2: .*2026-13-01"):
        run_measured(["report", "--date", "2026-13-01"], tmp_path / "bad.log", 120)
