"""Write speed and bytes per read attempt on SQLite or PostgreSQL, public API only.

Why public API only: run with ``PYTHONPATH`` on an older checkout, the same script measures
the schema before a change and after it on one machine in one run, e.g.::

    python -m tools.attempt_bench /tmp/after.db --meters 20000
    PYTHONPATH=/tmp/old-tree python /path/to/tools/attempt_bench.py /tmp/before.db

A night of ``--meters`` meters: one attempt each through ``Database.store_sessions`` (batches
of 500 sessions, as the collector's recorder hands them over), 2 % failing first with an
error class and message and read again (a second attempt), then the daily report of the
night. Bytes: SQLite's ``dbstat`` pages of the attempt tables and their indexes after a
checkpoint; PostgreSQL's ``pg_total_relation_size`` of them (a URL ``postgresql://...``:
the script works in a schema of its own, dropped at the end). The meter keys
(``interval_meters``) are not counted: every meter with a value has one anyway.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import bindparam, create_engine, text

from storage.database import Database, open_database
from storage.records import Attempt, MeterRecord, SessionWrite

DAY = date(2026, 3, 10)
START = datetime(2026, 3, 11, 0, 5, tzinfo=UTC)
RUN = "20260311T000500-1a2b3c4d"
#: Tables a version of hes kept read attempts and their dictionaries in.
ATTEMPT_TABLES = ("read_attempts", "collection_runs")


def night(meters: int) -> list[Attempt]:
    """The attempts of a night: every meter once, every 50th failing first."""
    out: list[Attempt] = []
    for n in range(meters):
        mid = f"M{n:06d}"
        at = START + timedelta(microseconds=n * 180_123)
        if n % 50 == 7:
            error = f"no answer from {mid} within 30.0 s (HDLC frame 3 of 9)"
            out.append(Attempt(mid, RUN, DAY, at, at + timedelta(seconds=30), "failed",
                               "timeout", error, 412, 1_877, 6))  # fmt: skip
            at += timedelta(minutes=40)
        out.append(Attempt(mid, RUN, DAY, at, at + timedelta(seconds=11, microseconds=n % 997),
                           "ok", None, None, 1_530 + n % 13, 31_402 + n % 101, 41))  # fmt: skip
    return out


def inventory(meters: int) -> list[MeterRecord]:
    return [
        MeterRecord(f"M{n:06d}", "tcp", "10.0.0.1", 4059 + n, None, None, 1, 16, "none", "l1")
        for n in range(meters)
    ]


def sqlite_bytes(path: Path) -> tuple[int, list[str]]:
    """Pages (bytes) of the attempt tables that exist and their indexes, and their names."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        marks = ",".join("?" * len(ATTEMPT_TABLES))
        names = [
            str(r[0])
            for r in con.execute(
                f"SELECT name FROM sqlite_master WHERE tbl_name IN ({marks})", ATTEMPT_TABLES
            )
        ]
        marks = ",".join("?" * len(names))
        rows = con.execute(f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({marks})", names)
        return int(rows.fetchone()[0] or 0), names
    finally:
        con.close()


def pg_bytes(db: Database) -> tuple[int, list[str]]:
    """``pg_total_relation_size`` of the attempt tables that exist (VACUUMed first)."""
    names = [
        str(n)
        for (n,) in db.execute_read(
            text(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename IN :names"
            ).bindparams(bindparam("names", ATTEMPT_TABLES, expanding=True))
        )
    ]
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for name in names:
            conn.execute(text(f"VACUUM ANALYZE {name}"))
        total = sum(
            int(conn.execute(text(f"SELECT pg_total_relation_size('{n}')")).scalar_one())
            for n in names
        )
    return total, names


def run(db: Database, meters: int) -> tuple[list[str], int]:
    """Store the night, report on it; the report lines and the attempts stored."""
    attempts = night(meters)
    db.upsert_meters(inventory(meters))
    writes = [SessionWrite([], [], [], [], a) for a in attempts]
    t0 = time.perf_counter()
    for lo in range(0, len(writes), 500):
        db.store_sessions(writes[lo : lo + 500])
    write_s = time.perf_counter() - t0
    again = db.record_attempts(attempts[:1000])
    t0 = time.perf_counter()
    report = db.daily_report(DAY, ["1.0.1.8.0.255:2"])
    report_s = time.perf_counter() - t0
    n = len(attempts)
    assert report["attempts_by_outcome"] == {"ok": meters, "failed": n - meters}, report
    return [
        f"attempts: {n} rows through store_sessions in {write_s:.2f} s ({n / write_s:,.0f} "
        f"rows/s); recorded again: {again} new",
        f"daily report of {meters} meters: {report_s:.2f} s",
    ], n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="SQLite file to create (replaced) or a PostgreSQL URL")
    parser.add_argument("--meters", type=int, default=20_000)
    args = parser.parse_args(argv)
    if args.meters < 1:
        parser.error(f"--meters must be at least 1, not {args.meters}")
    if args.db.startswith("postgresql"):
        schema = f"hes_attempt_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(args.db, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            sep = "&" if "?" in args.db else "?"
            with open_database(f"{args.db}{sep}options=-csearch_path%3D{schema}") as db:
                lines, n = run(db, args.meters)
                size, names = pg_bytes(db)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    else:
        path = Path(args.db)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        with open_database(path) as db:
            lines, n = run(db, args.meters)
        size, names = sqlite_bytes(path)
    lines.append(f"bytes per attempt: {size / n:.1f} ({size} bytes in {names})")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
