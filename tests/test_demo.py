"""`hes demo` (what `make run` runs): simulate, import, collect and report, as real processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_collects_every_meter_into_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "demo",
            "--db",
            str(db),
            "--tcp-meters",
            "12",
            "--buses",
            "1",
            "--meters-per-bus",
            "4",
            "--faults",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "100.000 %" in done.stdout
    with sqlite3.connect(db) as conn:
        meters = conn.execute("select count(*) from meters").fetchone()[0]
        with_reads = conn.execute(
            "select count(distinct meter_key) from interval_days where n_values > 0"
        ).fetchone()[0]
    assert meters == 16
    assert with_reads == 16
