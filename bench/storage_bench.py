"""Scenario 5 of ``hes bench``: storage ingest, bytes on disk per value, ``hes report`` of a day.

Measured through public interfaces only, so the figures follow whatever interval schema is in
place (the schema is being redesigned; nothing here names its tables):

1. **Ingest** through the collector's own write path: finished sessions
   (:class:`collector.recorder.SessionResult`, one meter-day each: 4 profile channels x 96
   quarter-hours with status, coverage of the day, 4 registers, the channel rows) are built
   first, then handed to :class:`collector.recorder.Recorder` all at once, whose batcher
   groups them into ``Database.store_sessions`` calls of the collector's batch size on a
   storage thread, exactly as ``hes collect`` stores them. Values/s is set against a
   baseline of the same run on the same backend (bare ``sqlite3`` executemany, psycopg
   COPY, of as many ``(int, int, int)`` rows) so figures of noisy machines compare.
2. **Bytes per value**: the database's growth over the ingest (SQLite: the file after a
   ``wal_checkpoint(TRUNCATE)``, split per table and index from ``dbstat``; PostgreSQL:
   ``pg_total_relation_size`` over every table of the schema and its partitions) divided
   by the interval values stored, with the tables that hold the bytes.
3. **``hes report``** of a day of many meters (built the same way) as a child process: wall
   seconds and peak RSS, and its figures checked against the data built (every meter
   expected and complete, nothing missing) so a fast wrong answer fails the scenario.

Values come from the simulator's model (:mod:`simulator.model`): the day of a few template
meters, each reused with its own offset on the cumulative registers, so deltas, status
bytes and outage gaps are the model's without computing 200,000 model days.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import harness
from bench.child_usage import run_measured
from bench.disk_usage import growth, pg_sizes, sqlite_sizes
from bench.harness import PG_BASE, SEED, BenchError, Sizes, _fmt, _r, _rate
from collector.jobs import MeterJob
from collector.plan import load_plan
from collector.profile_reader import Readout
from collector.recorder import Recorder, SessionResult
from collector.service import GC_THRESHOLDS
from simulator import model
from storage.database import Database, open_database
from storage.interval_columns import IntervalColumns
from storage.records import Channel, Coverage, MeterRecord, RegisterRead, SessionWrite

DAY = date(2026, 3, 10)
PERIOD_S = 900
#: The simulator's profile channels (A+, A-, R+, R-) and their units (Wh 30, varh 32).
CHANNELS: tuple[tuple[str, int], ...] = (
    ("1.0.1.8.0.255", 30),
    ("1.0.2.8.0.255", 30),
    ("1.0.3.8.0.255", 32),
    ("1.0.4.8.0.255", 32),
)
#: Model meters whose day is reused (with an offset) by every meter of the bench.
TEMPLATES = 64
#: Wh added to the cumulative registers per reuse of a template: distinct meters' values.
OFFSET_STEP = 10_007
AREAS = 4
#: Meters built (then stored) at a time: bounds the harness's memory at 200,000 meters.
CHUNK_METERS = 4000
#: Storage threads of the collector (``Collector(db_threads=4)``).
DB_THREADS = 4
REPORT_TIMEOUT_S = 600.0


# -- the data ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Template:
    """One model meter's day: (stamp index, status, 4 cumulative values) rows, registers."""

    rows: tuple[tuple[int, int, tuple[int, ...]], ...]
    registers: tuple[int, int, int, int]


def templates(day: date = DAY, count: int = TEMPLATES) -> list[Template]:
    """The model's day of ``count`` meters (rows an outage skipped are absent, as on a meter)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    end = start + 86400
    out = []
    for k in range(count):
        spec = model.meter_spec(k, SEED)
        rows = tuple(
            (int(t - start) // PERIOD_S, status, tuple(values))
            for t, status, *values in model.load_profile(spec, start, end)
        )
        reg = model.registers(spec, end)
        regs = (reg.active_import, reg.active_export, reg.reactive_import, reg.reactive_export)
        out.append(Template(rows, regs))
    return out


def meter_ids(count: int) -> list[str]:
    return [f"SB{n:07d}" for n in range(count)]


def inventory(ids: Sequence[str]) -> list[MeterRecord]:
    """GPRS meters, each its own link, in four areas (as the simulator's inventory)."""
    return [
        MeterRecord(m, "tcp", "127.0.0.1", 4059, None, None, 1, 1, "none", m, f"A{n % AREAS}")
        for n, m in enumerate(ids)
    ]


class SessionBuilder:
    """Finished sessions (what ``Collector`` hands its recorder) for meters of the fleet."""

    def __init__(self, day: date = DAY) -> None:
        self.day = day
        self.templates = templates(day)
        self.group = load_plan(None).groups[0]
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        self.stamps = [start + timedelta(seconds=PERIOD_S * k) for k in range(86400 // PERIOD_S)]
        self.read_at = start + timedelta(days=1, minutes=7)

    def session(self, n: int, record: MeterRecord) -> SessionResult:
        """Meter ``n``'s day, read in full by one ``ok`` session."""
        tpl = self.templates[n % len(self.templates)]
        offset = (n // len(self.templates)) * OFFSET_STEP
        m = record.meter_id
        stamps = self.stamps
        # as the profile reader takes a buffer: a stamps, a status and a value column per channel
        intervals = IntervalColumns(m, [ch for ch, _ in CHANNELS], [0] * len(CHANNELS))
        intervals.extend(
            [stamps[k] for k, _, _ in tpl.rows],
            [[vs[j] + offset for _, _, vs in tpl.rows] for j in range(len(CHANNELS))],
            [status for _, status, _ in tpl.rows],
        )
        readout = Readout(
            channels=[Channel(m, ch, unit, 0, PERIOD_S) for ch, unit in CHANNELS],
            intervals=intervals,
            coverage=[Coverage(m, ch, stamps[0], stamps[-1]) for ch, _ in CHANNELS],
            registers=[
                RegisterRead(m, ch, self.read_at, v + offset, 0, unit)
                for (ch, unit), v in zip(CHANNELS, tpl.registers, strict=True)
            ],
        )
        job = MeterJob(meter=record, group=self.group, days=[self.day], deadline=math.inf)
        job.attempts = 1
        return SessionResult(
            job=job, readout=readout, outcome="ok", error_class=None, error=None,
            read_through=True, complete=True, started=self.read_at,
            finished=self.read_at + timedelta(seconds=3), bytes_tx=180, bytes_rx=9000,
            round_trips=7,
        )  # fmt: skip


# -- the write path ----------------------------------------------------------------------------


class TimedStore:
    """``Database.store_sessions`` as the recorder calls it, with its calls timed and sized."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.seconds = 0.0
        self.batches: list[int] = []

    def __call__(self, writes: Sequence[SessionWrite]) -> list[int]:
        t0 = time.perf_counter()
        counts = self.db.store_sessions(writes)
        self.seconds += time.perf_counter() - t0
        self.batches.append(len(writes))
        return counts


async def _record_all(recorder: Recorder, results: Sequence[SessionResult]) -> None:
    """Every session hands its result over at once (the recorder's batcher groups them)."""
    recorder.start()
    try:
        await asyncio.gather(*(recorder.record(r) for r in results))
    finally:
        await recorder.close()


def ingest(db: Database, builder: SessionBuilder, first: int, count: int) -> dict[str, Any]:
    """Store meters ``first .. first+count`` through the collector's recorder, built chunk by
    chunk before each is timed; the seconds are the recorder's, building excluded, with the
    collection process's GC thresholds (with the default ones, full collections over the
    harness's own objects slowed the recorder, the more so the fewer objects a session makes)."""
    ids = meter_ids(first + count)[first:]
    records = inventory(ids)
    db.upsert_meters(records)
    store = TimedStore(db)
    stored, wall, build = 0, 0.0, 0.0
    executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="sb-db")

    def count_rows(rows: int) -> None:
        nonlocal stored
        stored += rows

    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)  # as in a collection process (``hes collect``)
    try:
        for lo in range(0, count, CHUNK_METERS):
            t0 = time.perf_counter()
            chunk = [builder.session(first + lo + k, r)
                     for k, r in enumerate(records[lo : lo + CHUNK_METERS])]  # fmt: skip
            # The build leaves a full collection due (a chunk is 1.5 million fresh tuples the
            # collector never holds at once): paid here, with the build, not at a random
            # point of the timed ingest (it was a fifth of the ingest's seconds).
            gc.collect()
            t1 = time.perf_counter()
            recorder = Recorder(store, executor, run_id=f"storebench-{first + lo}",
                                day=builder.day, on_stored=count_rows)  # fmt: skip
            asyncio.run(_record_all(recorder, chunk))
            build += t1 - t0
            wall += time.perf_counter() - t1
            del chunk
    finally:
        gc.set_threshold(*thresholds)
        executor.shutdown()
    return {
        "meters": count,
        "values": stored,
        "batches": len(store.batches),
        "batch_size_max": max(store.batches, default=0),
        "build_s": _r(build),
        "seconds": _r(wall),
        "values_per_s": _rate(stored, wall),
        "store_sessions_s": _r(store.seconds),
        "store_sessions_values_per_s": _rate(stored, store.seconds),
    }


# -- baselines: the same number of bare rows, the backend's plain bulk path -------------------


def baseline_rows(values: int, batch: int) -> Iterator[list[tuple[int, int, int]]]:
    """``values`` (meter, stamp, value) rows in batches of ``batch``."""
    for lo in range(0, values, batch):
        yield [(k // 384, k % 384, 1_000_000 + k) for k in range(lo, min(values, lo + batch))]


def sqlite_baseline(path: Path, values: int, batch: int) -> dict[str, Any]:
    """executemany into a bare table (WAL, synchronous NORMAL: the Database's own pragmas),
    one transaction per batch."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE bare (a INTEGER, b INTEGER, c INTEGER)")
        seconds = 0.0
        for rows in baseline_rows(values, batch):
            t0 = time.perf_counter()
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO bare VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
            seconds += time.perf_counter() - t0
    finally:
        conn.close()
    return {"what": "sqlite3 executemany, bare (int, int, int) table", "rows": values,
            "seconds": _r(seconds), "rows_per_s": _rate(values, seconds)}  # fmt: skip


def pg_baseline(schema: str, values: int, batch: int) -> dict[str, Any]:
    """psycopg COPY into a bare table of the bench's schema, one transaction per batch."""
    import psycopg

    url = PG_BASE.replace("postgresql+psycopg", "postgresql")
    seconds = 0.0
    with psycopg.connect(url, options=f"-csearch_path={schema}", connect_timeout=5) as conn:
        conn.execute("CREATE TABLE bare (a integer, b integer, c bigint)")
        conn.commit()
        for rows in baseline_rows(values, batch):
            t0 = time.perf_counter()
            with conn.cursor() as cur, cur.copy("COPY bare (a, b, c) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            seconds += time.perf_counter() - t0
        conn.execute("DROP TABLE bare")
        conn.commit()
    return {"what": "psycopg COPY, bare (int, int, bigint) table", "rows": values,
            "seconds": _r(seconds), "rows_per_s": _rate(values, seconds)}  # fmt: skip


# -- hes report ----------------------------------------------------------------------------------


def check_report(data: dict[str, Any], meters: int, day: date) -> None:
    """BenchError unless the report says what was built: every meter expected and complete."""
    want = {"day": day.isoformat(), "expected_meters": meters, "complete_meters": meters,
            "incomplete_meters": 0, "intervals_missing": 0, "first_pass_meters": meters,
            "intervals_expected": meters * 96 * len(CHANNELS),
            "attempts_by_outcome": {"ok": meters}}  # fmt: skip
    wrong = {k: (data.get(k), v) for k, v in want.items() if data.get(k) != v}
    if wrong:
        raise BenchError(f"hes report of {meters} meters is wrong (got, expected): {wrong}")


def cli_start(workdir: Path) -> dict[str, Any]:
    """``hes report --help``: the interpreter and imports every run pays."""
    usage = run_measured(["report", "--help"], workdir / "storage-help.log", REPORT_TIMEOUT_S)
    return {"wall_s": _r(usage.wall_s), "peak_rss_mib": _r(usage.peak_rss_mib, 1)}


def report(db_url: str, meters: int, workdir: Path, name: str) -> dict[str, Any]:
    """``hes report --format json`` of the day in a child: wall seconds, peak RSS, checked."""
    usage = run_measured(
        ["report", "--date", DAY.isoformat(), "--format", "json", "--db", db_url],
        workdir / f"{name}-report.log", REPORT_TIMEOUT_S,
    )  # fmt: skip
    data = json.loads(usage.stdout)
    check_report(data, meters, DAY)
    return {"meters": meters, "wall_s": _r(usage.wall_s), "cpu_s": _r(usage.cpu_s),
            "peak_rss_mib": _r(usage.peak_rss_mib, 1), "success_rate": data["success_rate"],
            "json_bytes": len(usage.stdout)}  # fmt: skip


# -- the scenario --------------------------------------------------------------------------------


def _fresh(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def _ratio(a: float | None, b: float | None) -> float | None:
    return _r(a / b, 3) if a and b else None


def _with_baseline(figures: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    figures["baseline"] = base
    figures["over_baseline"] = _ratio(figures["values_per_s"], base["rows_per_s"])
    return figures


def _sqlite(sizes: Sizes, workdir: Path, builder: SessionBuilder) -> dict[str, Any]:
    path = _fresh(workdir / "storage-ingest.db")
    db = open_database(str(path))
    try:
        db.upsert_meters(inventory(meter_ids(sizes.storage_meters)))
    finally:
        db.close()
    before = sqlite_sizes(path)
    db = open_database(str(path))
    try:
        figures = ingest(db, builder, 0, sizes.storage_meters)
    finally:
        db.close()
    figures["disk"] = growth(before, sqlite_sizes(path), figures["values"])
    batch = figures["batch_size_max"] * 96 * len(CHANNELS)
    base = sqlite_baseline(workdir / "storage-baseline.db", figures["values"], batch or 1)
    figures = _with_baseline(figures, base)
    figures["report"] = report(str(path), sizes.storage_meters, workdir, "storage-sqlite")
    return figures


def _sqlite_report_day(sizes: Sizes, workdir: Path, builder: SessionBuilder) -> dict[str, Any]:
    """A day of ``storage_report_meters`` meters built through the recorder, then reported."""
    n = sizes.storage_report_meters
    path = _fresh(workdir / "storage-report.db")
    db = open_database(str(path))
    try:
        db.upsert_meters(inventory(meter_ids(n)))
    finally:
        db.close()
    before = sqlite_sizes(path)["file_bytes"]
    db = open_database(str(path))
    try:
        fill = ingest(db, builder, 0, n)
    finally:
        db.close()
    added = sqlite_sizes(path)["file_bytes"] - before
    fill["bytes_per_value"] = _r(added / fill["values"], 2) if fill["values"] else None
    return {"fill": fill, **report(str(path), n, workdir, "storage-sqlite-day")}


@contextmanager
def pg_schema() -> Iterator[str | None]:
    """A private schema (dropped afterwards), or None when PostgreSQL is not reachable."""
    try:
        import psycopg

        admin = psycopg.connect(PG_BASE.replace("postgresql+psycopg", "postgresql"),
                                autocommit=True, connect_timeout=5)  # fmt: skip
    except Exception:
        yield None
        return
    schema = f"hes_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        yield schema
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


def _postgresql(
    sizes: Sizes, workdir: Path, builder: SessionBuilder, schema: str
) -> dict[str, Any]:
    url = f"{PG_BASE}?options=-csearch_path%3D{schema}"
    db = open_database(url)
    try:
        db.upsert_meters(inventory(meter_ids(sizes.storage_meters)))
        before = pg_sizes(db)
        figures = ingest(db, builder, 0, sizes.storage_meters)
        figures["disk"] = growth(before, pg_sizes(db), figures["values"])
    finally:
        db.close()
    batch = figures["batch_size_max"] * 96 * len(CHANNELS)
    figures = _with_baseline(figures, pg_baseline(schema, figures["values"], batch or 1))
    figures["report"] = report(url, sizes.storage_meters, workdir, "storage-pg")
    return figures


def scenario_storage(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Ingest, bytes per value and ``hes report`` on SQLite and PostgreSQL."""
    builder = SessionBuilder()
    out: dict[str, Any] = {
        "description": "finished sessions (one meter-day: 4 channels x 96 values with status, "
        "coverage, 4 registers, channels, attempt) through the collector's Recorder "
        "(group commit of Database.store_sessions); bytes on disk per interval value; "
        "hes report of the day as a child",
        "day": DAY.isoformat(),
        "cli_start": cli_start(workdir),
        "sqlite": _sqlite(sizes, workdir, builder),
        "report_day": _sqlite_report_day(sizes, workdir, builder),
    }
    with pg_schema() as schema:
        if schema is None:
            out["postgresql"] = {"skipped": f"PostgreSQL not reachable at {PG_BASE}"}
        else:
            out["postgresql"] = _postgresql(sizes, workdir, builder, schema)
    return out


# -- markdown and targets ----------------------------------------------------------------------


def _tables(disk: dict[str, Any], top: int = 4) -> str:
    by_table = disk.get("by_table") or {}
    return ", ".join(
        f"{name} {_fmt(v['bytes_per_value'])}" for name, v in list(by_table.items())[:top]
    )


def storage_markdown(s: dict[str, Any]) -> list[str]:
    st = s.get("storage") or {}
    if "error" in st or "report_day" not in st:
        return []  # failed (the harness lists it), or figures of the earlier scenario 5
    lines = [
        f"## 5. Storage: ingest through the collector's recorder, bytes per value, "
        f"hes report ({st['day']})",
        "",
        "| backend | meters | values | values/s | store_sessions values/s | baseline rows/s "
        "| / baseline | bytes/value | largest tables (bytes/value) | hes report s / MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, key in (("SQLite", "sqlite"), ("PostgreSQL", "postgresql")):
        b = st.get(key) or {}
        if "values" not in b:
            lines.append(f"| {label} | - | - | {b.get('skipped', '-')} | | | | | | |")
            continue
        rep = b["report"]
        lines.append(
            f"| {label} | {_fmt(b['meters'])} | {_fmt(b['values'])} | "
            f"{_fmt(b['values_per_s'], 0)} | {_fmt(b['store_sessions_values_per_s'], 0)} | "
            f"{_fmt(b['baseline']['rows_per_s'], 0)} | {_fmt(b['over_baseline'], 3)} | "
            f"{_fmt(b['disk']['bytes_per_value'])} | {_tables(b['disk'])} | "
            f"{_fmt(rep['wall_s'])} / {_fmt(rep['peak_rss_mib'], 1)} |"
        )
    day = st["report_day"]
    fill = day["fill"]
    start = st.get("cli_start") or {}
    lines += [
        "",
        f"A day of {_fmt(day['meters'])} meters on SQLite (built the same way: "
        f"{_fmt(fill['values_per_s'], 0)} values/s, {_fmt(fill['bytes_per_value'])} bytes/value): "
        f"`hes report --format json` took {_fmt(day['wall_s'])} s and "
        f"{_fmt(day['peak_rss_mib'], 1)} MiB peak RSS, its figures checked against the data "
        f"(`hes report --help` alone: {_fmt(start.get('wall_s'))} s, "
        f"{_fmt(start.get('peak_rss_mib'), 1)} MiB).",
        "",
    ]
    return lines


def storage_targets(s: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Issue 13's storage targets, from scenario 5's figures."""
    st = s.get("storage") or {}
    if "error" in st or "report_day" not in st:
        return []
    ok = harness._ok
    out: list[tuple[str, str, str, str]] = []
    asked = (("SQLite", "sqlite", 8, 2e6), ("PostgreSQL", "postgresql", 12, 1e6))
    for label, key, bpv, rate in asked:
        b = st.get(key) or {}
        if "values" not in b:
            continue
        v, r = b["disk"]["bytes_per_value"], b["values_per_s"]
        n = f"{_fmt(b['meters'])} meters"
        out.append((f"{label} bytes per interval value", f"<= {bpv}", f"{_fmt(v)} ({n})",
                    ok(v, v is not None and v <= bpv)))  # fmt: skip
        out.append((f"{label} ingest (collector write path)", f">= {rate:,.0f} values/s",
                    f"{_fmt(r, 0)} ({n})", ok(r, r is not None and r >= rate)))  # fmt: skip
    day = st["report_day"]
    n = f"{_fmt(day['meters'])} meters"
    w, m = day["wall_s"], day["peak_rss_mib"]
    out.append(("hes report of a 200,000-meter day", "<= 2 s", f"{_fmt(w)} s ({n})",
                ok(w, w is not None and w <= 2)))  # fmt: skip
    out.append(("hes report peak RSS", "<= 200 MiB", f"{_fmt(m, 1)} MiB ({n})",
                ok(m, m is not None and m <= 200)))  # fmt: skip
    return out


harness.register("storage", scenario_storage, storage_markdown, storage_targets)
