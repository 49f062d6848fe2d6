"""Export speed and memory: one day of N meters to Parquet with ``hes export``, as a child.

Fills a fresh SQLite database through the collector's own write path
(``Database.store_sessions``: meters, channels with units, 96 intervals a day on four
channels) and times ``hes export --format parquet`` in a subprocess twice: the whole day, and
one area of a quarter of the meters. The two peak RSS figures (``wait4``'s ``ru_maxrss`` of
the child) show whether memory grows with the range: it must not. Figures go to
bench/export_bench.json; nothing is asserted. ``--db PATH`` keeps the filled database there
and reuses it on the next run (filling 200,000 meters takes minutes; the export is what is
measured).

    .venv/bin/python -m bench.export_bench [--meters 20000] [--db PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from storage.database import open_database
from storage.records import Channel, IntervalRead, MeterRecord, SessionWrite

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 3, 10)
#: The simulator's four energy channels: A+ and A- in Wh, R+ and R- in varh, scaler 0.
CHANNELS: tuple[tuple[str, int], ...] = (
    ("1.0.1.8.0.255", 30),
    ("1.0.2.8.0.255", 30),
    ("1.0.3.8.0.255", 32),
    ("1.0.4.8.0.255", 32),
)
AREAS = 4
#: Meters per store_sessions call (one transaction, as the collector batches them).
FILL_BATCH = 500


def fill(db_path: Path, meters: int) -> dict[str, Any]:
    """N meters' day written as the collector writes it; returns rows and seconds."""
    db = open_database(db_path)
    started = time.monotonic()
    try:
        ids = [f"M{n:07d}" for n in range(meters)]
        db.upsert_meters(
            [
                MeterRecord(m, "tcp", "127.0.0.1", 4059, None, None, 1, 16, "none", f"L{n}",
                            f"A{n % AREAS}")
                for n, m in enumerate(ids)
            ]
        )  # fmt: skip
        start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
        stamps = [start + timedelta(minutes=15 * k) for k in range(96)]
        rows = 0
        for first in range(0, meters, FILL_BATCH):
            writes = []
            for n in range(first, min(first + FILL_BATCH, meters)):
                m = ids[n]
                intervals = [
                    IntervalRead(m, c, ts, n * 7919 + i * 1_000_000 + k * (13 + i), 0, 0)
                    for i, (c, _unit) in enumerate(CHANNELS)
                    for k, ts in enumerate(stamps)
                ]
                rows += len(intervals)
                chans = [Channel(m, c, unit, 0, 900) for c, unit in CHANNELS]
                writes.append(SessionWrite(chans, [], intervals, [], None))
            db.store_sessions(writes)
    finally:
        db.close()
    return {"rows": rows, "fill_s": round(time.monotonic() - started, 1)}


def reused(db_path: Path, meters: int) -> dict[str, Any]:
    """The rows of a database an earlier run filled (``--db``), which must hold ``meters``."""
    db = open_database(db_path)
    try:
        held = db.count_rows("meters")
        if held != meters:
            raise SystemExit(f"{db_path} holds {held} meters, not {meters}: give another --db")
        rows = db.count_interval_values()
    finally:
        db.close()
    return {"rows": rows, "fill_s": None}


def export(db_path: Path, out: Path, *extra: str) -> dict[str, Any]:
    """``hes export --format parquet`` of DAY in a child: wall and CPU time (its threads
    together), peak RSS, stderr."""
    argv = [
        sys.executable, "-m", "cli", "export", "--db", str(db_path), "--from", DAY.isoformat(),
        "--to", (DAY + timedelta(days=1)).isoformat(), "--format", "parquet", "--out", str(out),
        *extra,
    ]  # fmt: skip
    started = time.monotonic()
    child = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr = child.stderr.read() if child.stderr is not None else ""
    if child.returncode != 0:
        raise SystemExit(f"hes export failed ({child.returncode}): {stderr}")
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(out).metadata.num_rows
    return {
        "args": " ".join(extra) or "(all meters)",
        "rows": rows,
        "wall_s": round(wall, 1),
        "rows_per_s": round(rows / wall),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "file_mib": round(out.stat().st_size / 2**20, 1),
        "stderr": stderr.strip(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "export_bench.json")
    parser.add_argument("--db", type=Path, help="keep the filled database here, reuse it if there")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hes-export-bench-") as tmp:
        db_path = args.db or Path(tmp) / "hes.db"
        if db_path.exists():
            filled = reused(db_path, args.meters)
            print(f"reusing {db_path}: {args.meters} meters, {filled['rows']} rows")
        else:
            filled = fill(db_path, args.meters)
            print(f"filled {args.meters} meters, {filled['rows']} rows in {filled['fill_s']} s")
        runs = []
        for extra in ((), ("--area", "A0")):
            run = export(db_path, Path(tmp) / "day.parquet", *extra)
            print(json.dumps(run))
            runs.append(run)
        db_mib = round(db_path.stat().st_size / 2**20, 1)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "meters": args.meters,
        "day": DAY.isoformat(),
        "db_mib": db_mib,
        **filled,
        "exports": runs,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
