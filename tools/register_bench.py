"""Write speed and bytes per row of register reads and events on SQLite, public API only.

Why public API only: run with ``PYTHONPATH`` on an older checkout, the same script measures
the schema before a change and after it on one machine in one run, e.g.::

    python -m tools.register_bench /tmp/after.db --meters 20000
    PYTHONPATH=/tmp/old-tree python /path/to/tools/register_bench.py /tmp/before.db

Registers go through ``Database.store_sessions`` (4 a meter, batches of 500 sessions, as the
collector's recorder hands them over), events through ``Database.insert_events`` (2 a meter).
Bytes are SQLite's ``dbstat`` pages of each table and its indexes after a checkpoint.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage.database import open_database
from storage.records import Event, RegisterRead, SessionWrite

OBIS = ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.3.8.0.255", "1.0.4.8.0.255")
READ_AT = datetime(2026, 3, 11, 0, 7, tzinfo=UTC)
#: Tables a version of hes kept register reads, events and their dictionaries in.
REGISTER_TABLES = ("register_reads", "register_values")
EVENT_TABLES = ("events", "meter_events")
DICTIONARIES = ("obis_codes",)


def table_bytes(con: sqlite3.Connection, tables: tuple[str, ...]) -> tuple[int, list[str]]:
    """Pages (bytes) of the ``tables`` that exist and their indexes, and their names."""
    marks = ",".join("?" * len(tables))
    names = [
        str(r[0])
        for r in con.execute(f"SELECT name FROM sqlite_master WHERE tbl_name IN ({marks})", tables)
    ]
    if not names:
        return 0, []
    marks = ",".join("?" * len(names))
    rows = con.execute(f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({marks})", names)
    return int(rows.fetchone()[0] or 0), names


def run(path: Path, meters: int) -> list[str]:
    """Store the rows, measure; the report lines."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = open_database(path)
    writes = [
        SessionWrite(
            [],
            [
                RegisterRead(f"M{n:06d}", o, READ_AT, 1_000_000 + 7 * n + k, -1, 30)
                for k, o in enumerate(OBIS)
            ],
            [],
            [],
            None,
        )
        for n in range(meters)
    ]
    t0 = time.perf_counter()
    for lo in range(0, meters, 500):
        db.store_sessions(writes[lo : lo + 500])
    reg_s = time.perf_counter() - t0
    again = db.insert_register_reads(r for w in writes[:1000] for r in w.registers)
    events = [
        Event(f"M{n:06d}", "0.0.99.98.0.255", READ_AT + timedelta(seconds=n % 3600), 40, "event")
        for n in range(meters)
    ] + [
        Event(f"M{n:06d}", "0.0.99.98.1.255", READ_AT - timedelta(hours=1), 1, "power down")
        for n in range(meters)
    ]
    t0 = time.perf_counter()
    new_events = sum(db.insert_events(events[lo : lo + 5000]) for lo in range(0, len(events), 5000))
    ev_s = time.perf_counter() - t0
    db.close()
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        reg_b, reg_names = table_bytes(con, REGISTER_TABLES)
        ev_b, ev_names = table_bytes(con, EVENT_TABLES)
        dict_b, _ = table_bytes(con, DICTIONARIES)
    finally:
        con.close()
    n_regs = 4 * meters
    return [
        f"registers: {n_regs} rows through store_sessions in {reg_s:.2f} s "
        f"({n_regs / reg_s:,.0f} rows/s), {reg_b / n_regs:.1f} bytes/row {reg_names}; "
        f"stored again: {again} new",
        f"events: {new_events} rows through insert_events in {ev_s:.2f} s "
        f"({new_events / ev_s:,.0f} rows/s), {ev_b / new_events:.1f} bytes/row {ev_names}",
        f"OBIS dictionary: {dict_b} bytes",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path, help="SQLite file to create (replaced if it exists)")
    parser.add_argument("--meters", type=int, default=20_000)
    args = parser.parse_args(argv)
    if args.meters < 1:
        parser.error(f"--meters must be at least 1, not {args.meters}")
    for line in run(args.db, args.meters):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
