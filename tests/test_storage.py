"""Storage on both backends: every test runs on SQLite and on real PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.schema import CreateIndex, CreateTable

from storage import queries
from storage.database import SCHEMA_VERSION, Database, open_database
from storage.errors import StorageError
from storage.gaps import expected_epochs, group_missing, merge_ranges, missing_epochs
from storage.migrations.versions import r0004_jobs_and_access
from storage.records import (
    Attempt,
    Channel,
    Coverage,
    Event,
    IntervalRead,
    MeterRecord,
    RegisterRead,
    SessionWrite,
)

CH = "1.0.1.8.0.255:2"
CH2 = "1.0.2.8.0.255:2"
DAY = date(2024, 3, 10)
T0 = datetime(2024, 3, 10, tzinfo=UTC)
Q = timedelta(minutes=15)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = open_database(tmp_path / "hes.db")
    else:
        database = open_database(request.getfixturevalue("pg_url"))
    try:
        yield database
    finally:
        database.close()


def meter(i: int, link: str | None = None, area: str | None = "north") -> MeterRecord:
    mid = f"M{i:06d}"
    return MeterRecord(mid, "tcp", "10.0.0.1", 4059, None, None, 1, 16, "none", link or mid, area)


def day_rows(mid: str, channel: str = CH, skip: frozenset[int] = frozenset()) -> list[IntervalRead]:
    return [
        IntervalRead(mid, channel, T0 + k * Q, 1000 + k, -1, 0) for k in range(96) if k not in skip
    ]


def test_schema_created_and_versioned(db: Database) -> None:
    assert db.schema_version() == SCHEMA_VERSION
    assert db.migrate() == SCHEMA_VERSION  # idempotent
    for table in ("meters", "interval_days", "interval_meters", "read_attempts", "meter_events"):
        assert db.count_rows(table) == 0


def test_interval_reads_idempotent(db: Database) -> None:
    rows = day_rows("A") + day_rows("B")
    assert db.insert_interval_reads(rows) == 192
    assert db.insert_interval_reads(rows) == 0
    assert db.insert_interval_reads(rows[:10] + day_rows("C")[:5]) == 5
    assert db.count_interval_values() == 197
    got = db.interval_reads("A", CH, T0, T0 + timedelta(days=1))
    assert got == sorted(day_rows("A"), key=lambda r: r.ts)
    assert all(r.ts.tzinfo is not None for r in got)


def test_first_write_wins_on_reread(db: Database) -> None:
    db.insert_interval_reads([IntervalRead("A", CH, T0, 5, 0, None)])
    db.insert_interval_reads([IntervalRead("A", CH, T0, 6, 0, None)])
    assert [r.value for r in db.interval_reads("A", CH, T0, T0 + Q)] == [5]


def test_timestamps_any_zone_stored_as_utc(db: Database) -> None:
    plus2 = timezone(timedelta(hours=2))
    db.insert_interval_reads([IntervalRead("A", CH, T0.astimezone(plus2), 1)])
    (row,) = db.interval_reads("A", CH, T0, T0 + Q)
    assert row.ts == T0 and row.ts.utcoffset() == timedelta(0)
    assert db.insert_interval_reads([IntervalRead("A", CH, T0, 1)]) == 0


def test_naive_timestamp_rejected(db: Database) -> None:
    with pytest.raises(ValueError, match="naive"):
        db.insert_interval_reads([IntervalRead("A", CH, datetime(2024, 1, 1), 1)])
    assert db.count_interval_values() == 0


def test_null_values_and_big_values(db: Database) -> None:
    rows = [
        IntervalRead("A", CH, T0, None, 0, None),
        IntervalRead("A", CH, T0 + Q, 2**63 - 1, 3, 0x80),
    ]
    assert db.insert_interval_reads(rows) == 2
    # a null-data entry has no value to scale: it reads back with its day's scaler
    assert db.interval_reads("A", CH, T0, T0 + 2 * Q) == [rows[0]._replace(scaler=3), rows[1]]


def test_register_reads_events_attempts(db: Database) -> None:
    regs = [
        RegisterRead("A", "1.0.1.8.0.255", T0, 123456, -3, 30, T0 - Q),
        RegisterRead("A", "1.0.2.8.0.255", T0, None),
    ]
    assert db.insert_register_reads(regs) == 2
    assert db.insert_register_reads(regs) == 0
    evs = [Event("A", "0.0.99.98.0.255", T0, 1, "power down"), Event("A", "0.0.99.98.0.255", T0, 2)]
    assert db.insert_events(evs) == 2
    assert db.insert_events([*evs, Event("A", "0.0.99.98.0.255", T0 + Q, 1)]) == 1
    att = Attempt("A", "run1", DAY, T0, T0 + Q, "failed", "timeout", "no answer", 10, 20, 3)
    assert db.record_attempt(att) is True
    assert db.record_attempt(att) is False
    assert db.record_attempt(att._replace(started=T0 + Q, outcome="ok")) is True
    with pytest.raises(ValueError, match="outcome"):
        db.record_attempt(att._replace(outcome="maybe"))
    more = [att._replace(run_id="run2", meter_id=f"X{i}") for i in range(5)]
    assert db.record_attempts(more) == 5
    assert db.record_attempts(more) == 0
    assert db.count_rows("read_attempts") == 7
    # each reads back as recorded: aware UTC stamps, the outcome and the run by name
    assert db.attempts(DAY)[:2] == [att, att._replace(started=T0 + Q, outcome="ok")]
    assert sorted(db.attempts()) == sorted([att, att._replace(started=T0 + Q, outcome="ok"), *more])
    assert db.attempts(DAY - timedelta(days=1)) == []
    assert db.count_rows("register_values") == 2 and db.count_rows("meter_events") == 3


def test_a_failed_register_write_leaves_no_key_behind(db: Database) -> None:
    """The OBIS and meter keys a rolled-back write made are forgotten with it, so the next
    write makes them again and its rows read back (a stale cached key would hide them)."""
    regs = [
        RegisterRead("N", "1.0.9.8.0.255", T0, 1),
        RegisterRead("N", "1.0.9.8.0.255", T0 + Q, 2**64),  # beyond BIGINT: the write fails
    ]
    with pytest.raises(StorageError):
        db.insert_register_reads(regs)
    assert db.count_rows("obis_codes") == 0 and db.count_rows("interval_meters") == 0
    assert db.insert_register_reads(regs[:1]) == 1
    assert queries.register_reads(db, "N", T0, T0 + Q) == regs[:1]
    pushed = Event("N", "0.0.25.9.0.255", T0 + timedelta(microseconds=7), 40, "alarm")
    assert db.insert_events([pushed, pushed]) == 1
    assert queries.alarms(db, None, None) == [pushed]
    assert queries.alarms(db, None, None)[0].ts.tzinfo is UTC


def test_a_failed_attempt_write_leaves_no_run_key_behind(db: Database) -> None:
    """The run and meter keys a rolled-back attempt write made are forgotten with it."""
    att = Attempt("N", "run-9", DAY, T0, None, "partial", bytes_rx=2**64)  # beyond BIGINT
    with pytest.raises(StorageError):
        db.record_attempts([att])
    assert db.count_rows("collection_runs") == 0 and db.count_rows("interval_meters") == 0
    assert db.record_attempts([att._replace(bytes_rx=5)]) == 1
    assert db.attempts() == [att._replace(bytes_rx=5)]


def test_meters_upsert_and_channels(db: Database) -> None:
    assert db.upsert_meters([meter(1), meter(2)]) == (2, 0)
    changed = meter(2)._replace(host="10.9.9.9", area="south")
    assert db.upsert_meters([changed, meter(3)]) == (1, 1)
    assert db.get_meter("M000002") == changed
    assert db.get_meter("nope") is None
    assert [m.meter_id for m in db.meters()] == ["M000001", "M000002", "M000003"]
    db.upsert_channels([Channel("M000001", CH, 30, -1, 900)])
    db.upsert_channels([Channel("M000001", CH, 30, 0, 900)])
    assert db.count_rows("channels") == 1


def test_channel_requires_meter(db: Database) -> None:
    with pytest.raises(StorageError, match="writing channels"):
        db.upsert_channels([Channel("ghost", CH)])


def test_missing_intervals_merged_ranges(db: Database) -> None:
    skip = frozenset({0, 1, 2, 40, 94, 95})
    db.insert_interval_reads(day_rows("A", skip=skip))
    end = T0 + timedelta(days=1)
    assert db.missing_intervals("A", CH, T0, end) == [
        (T0, T0 + 2 * Q),
        (T0 + 40 * Q, T0 + 40 * Q),
        (T0 + 94 * Q, T0 + 95 * Q),
    ]
    assert db.missing_intervals("A", CH2, T0, end) == [(T0, end - Q)]
    assert db.missing_intervals("B", CH, T0, T0 + 4 * Q) == [(T0, T0 + 3 * Q)]
    assert db.missing_intervals("A", CH, T0 + 3 * Q, T0 + 40 * Q) == []
    # Non-aligned window start: first expected stamp is the next quarter hour.
    assert db.missing_intervals("A", CH, T0 + timedelta(minutes=1), T0 + 3 * Q) == [
        (T0 + Q, T0 + 2 * Q)
    ]
    assert db.missing_intervals("A", CH, T0, T0 + 4 * Q, period_s=3600) == [(T0, T0)]


def test_coverage_makes_outage_gap_complete(db: Database) -> None:
    db.upsert_meters([meter(1), meter(2)])
    outage = frozenset(range(20, 30))
    db.insert_interval_reads(day_rows("M000001", skip=outage))
    db.insert_interval_reads(day_rows("M000002", skip=outage))
    assert db.complete_meters(DAY, [CH]) == set()
    assert db.incomplete_meters(DAY, [CH]) == {"M000001": 10, "M000002": 10}
    # Meter 1 answered a range read over the gap with no entries: the gap is settled.
    db.record_coverage([Coverage("M000001", CH, T0 + 20 * Q, T0 + 29 * Q)])
    assert db.missing_intervals("M000001", CH, T0, T0 + timedelta(days=1)) == []
    assert db.complete_meters(DAY, [CH]) == {"M000001"}
    assert db.incomplete_meters(DAY, [CH]) == {"M000002": 10}
    # Partial coverage settles only what it covers.
    db.record_coverage([Coverage("M000002", CH, T0 + 18 * Q, T0 + 24 * Q)])
    assert db.incomplete_meters(DAY, [CH]) == {"M000002": 5}
    assert db.missing_intervals("M000002", CH, T0, T0 + timedelta(days=1)) == [
        (T0 + 25 * Q, T0 + 29 * Q)
    ]


def test_reads_and_coverage_written_together(db: Database) -> None:
    db.upsert_meters([meter(1)])
    rows = day_rows("M000001", skip=frozenset({5}))
    cov = [Coverage("M000001", CH, T0, T0 + 95 * Q)]
    assert db.insert_interval_reads(rows, cov) == 95
    assert db.insert_interval_reads(rows, cov) == 0
    assert db.count_rows("interval_days") == 1
    assert db.complete_meters(DAY, [CH]) == {"M000001"}


def test_complete_meters_many_channels_and_timezone(db: Database) -> None:
    db.upsert_meters([meter(i) for i in range(1, 5)])
    for mid in ("M000001", "M000002"):
        db.insert_interval_reads(day_rows(mid) + day_rows(mid, CH2))
    db.insert_interval_reads(day_rows("M000003"))
    db.insert_interval_reads(day_rows("M000004", skip=frozenset({3})) + day_rows("M000004", CH2))
    assert db.complete_meters(DAY, [CH, CH2]) == {"M000001", "M000002"}
    assert db.incomplete_meters(DAY, [CH, CH2]) == {"M000003": 96, "M000004": 1}
    assert db.complete_meters(DAY, [CH]) == {"M000001", "M000002", "M000003"}
    # In UTC+1 the local day starts an hour earlier: four intervals of the stored day fall
    # outside it and four are missing at its start.
    cet = timezone(timedelta(hours=1))
    assert db.incomplete_meters(DAY, [CH], tz=cet)["M000001"] == 4
    assert db.complete_meters(DAY + timedelta(days=5), []) == {f"M00000{i}" for i in range(1, 5)}


def test_complete_meters_scales_by_grouped_query(db: Database) -> None:
    n = 2000
    db.upsert_meters([meter(i) for i in range(n)])
    rows = [
        IntervalRead(f"M{i:06d}", CH, T0 + k * Q, k, 0, None)
        for i in range(n)
        for k in range(96)
        if not (i % 100 == 0 and k == 7)
    ]
    assert db.insert_interval_reads(rows) == len(rows)
    incomplete = db.incomplete_meters(DAY, [CH])
    assert incomplete == {f"M{i:06d}": 1 for i in range(0, n, 100)}
    assert len(db.complete_meters(DAY, [CH])) == n - n // 100


def test_daily_report(db: Database) -> None:
    db.upsert_meters(
        [meter(1, "bus1", "north"), meter(2, "bus1", "north"), meter(3, "bus2", "south")]
    )
    db.upsert_channels([Channel("M000001", CH, 30, 0, 900)])
    db.insert_interval_reads(day_rows("M000001"))
    db.insert_interval_reads(day_rows("M000002", skip=frozenset(range(10))))
    db.record_attempts(
        [
            Attempt("M000001", "r", DAY, T0, T0, "ok"),
            Attempt("M000002", "r", DAY, T0, T0, "failed", "timeout", "no answer"),
            Attempt("M000002", "r", DAY, T0 + Q, T0 + Q, "partial", "bad_frame", "fcs"),
            Attempt("M000003", "r", DAY, T0, T0, "failed", "authentication_failed", "lls"),
            Attempt("M000003", "r", DAY - timedelta(days=1), T0, T0, "failed", "link", "old"),
        ]
    )
    rep = db.daily_report(DAY)
    assert rep["channels"] == [CH]
    assert rep["expected_meters"] == 3 and rep["complete_meters"] == 1
    assert rep["success_rate"] == pytest.approx(1 / 3)
    assert rep["intervals_expected"] == 288 and rep["intervals_missing"] == 106
    assert rep["failures_by_error_class"] == {
        "authentication_failed": 1,
        "bad_frame": 1,
        "timeout": 1,
    }
    assert rep["attempts_by_outcome"] == {"ok": 1, "failed": 2, "partial": 1}
    assert rep["incomplete_by_last_error_class"] == {"authentication_failed": 1, "bad_frame": 1}
    assert rep["by_area"]["north"]["complete"] == 1 and rep["by_area"]["north"]["expected"] == 2
    assert rep["by_area"]["south"]["success_rate"] == 0.0
    assert set(rep["by_link"]) == {"bus1", "bus2"}
    assert [w["meter_id"] for w in rep["worst_meters"]] == ["M000003", "M000002"]
    assert rep["worst_meters"][0]["last_error_class"] == "authentication_failed"
    empty = db.daily_report(DAY, [CH], worst=1)
    assert len(empty["worst_meters"]) == 1


def test_daily_report_empty_inventory(db: Database) -> None:
    rep = db.daily_report(DAY, [CH])
    assert rep["expected_meters"] == 0 and rep["success_rate"] is None


# -- SQLite specifics ---------------------------------------------------------------------


def test_default_file_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_database(None) as db:
        assert db.schema_version() == SCHEMA_VERSION
    assert (tmp_path / "hes.db").exists()
    con = sqlite3.connect(tmp_path / "hes.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    with open_database(f"sqlite:///{tmp_path / 'x.db'}") as db, db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_reopen_keeps_data(tmp_path: Path) -> None:
    with open_database(tmp_path / "a.db") as db:
        db.insert_interval_reads(day_rows("A"))
    with open_database(tmp_path / "a.db") as db:
        assert db.count_interval_values() == 96


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mysql://u:secret@h/db", "unsupported database URL mysql://u:\\*\\*\\*@h/db"),
        ("postgresql+asyncpg://u:secret@h/db", "unsupported PostgreSQL driver"),
        ("postgresql+psycopg://u:secret@h", "no database name"),
        ("postgresql+psycopg://u:secret@h:notaport/db", "invalid database URL"),
        ("", "empty database path"),
        ("/nonexistent-dir-hes/x.db", "no directory /nonexistent-dir-hes"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(StorageError, match=match) as info:
        open_database(url)
    assert "secret" not in str(info.value)


def test_not_a_database_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"\x00\xffnot sqlite at all" * 100)
    with pytest.raises(StorageError, match="opening the database failed on sqlite"):
        open_database(path)


def test_newer_schema_refused(tmp_path: Path) -> None:
    with open_database(tmp_path / "n.db"):
        pass
    con = sqlite3.connect(tmp_path / "n.db")
    # a database of a release before Alembic (schema_version only), from a newer one
    con.execute("DROP TABLE alembic_version")
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(StorageError, match="schema version 99, newer"):
        open_database(tmp_path / "n.db")


def test_locked_database_gives_storage_error_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    db = open_database(path, busy_timeout_s=0.2)
    db.insert_interval_reads(day_rows("A"))
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageError, match="database is locked") as info:
            db.insert_interval_reads(day_rows("B"))
        assert info.value.transient
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert db.count_interval_values() == 96
    assert db.insert_interval_reads(day_rows("B")) == 96
    db.close()


def test_failed_batch_rolls_back_whole_transaction(tmp_path: Path) -> None:
    with open_database(tmp_path / "r.db") as db:
        good = day_rows("A")
        bad = [*good, IntervalRead("A", CH, T0 + 200 * Q, 2**70)]
        with pytest.raises(StorageError, match="writing interval reads"):
            db.insert_interval_reads(bad)
        assert db.count_interval_values() == 0


def test_gap_helpers() -> None:
    exp = expected_epochs(T0, T0 + 4 * Q, 900)
    assert len(exp) == 4
    assert merge_ranges([(5, 9), (1, 3), (4, 4), (20, 10), (8, 12)]) == [(1, 12)]
    assert missing_epochs(exp, [exp[1]], [(exp[3], exp[3] + 5)]) == [exp[0], exp[2]]
    assert group_missing([0, 900, 2700, 3600, 9000], 900) == [(0, 900), (2700, 3600), (9000, 9000)]
    with pytest.raises(ValueError):
        expected_epochs(T0, T0 + Q, 0)


def session_write(mid: str, n_rows: int = 96, outcome: str = "ok") -> SessionWrite:
    """A session's results as the collector hands them over: every kind of row."""
    rows = [
        IntervalRead(mid, ch, T0 + k * Q, 10 * k, -1, 0)
        for k in range(n_rows // 2)
        for ch in (CH, CH2)
    ]
    return SessionWrite(
        [Channel(mid, CH, 30, -1, 900), Channel(mid, CH2, 30, -1, 900)],
        [RegisterRead(mid, "1.0.1.8.0.255", T0, 123, 1, 30)],
        rows,
        [Coverage(mid, ch, T0, T0 + (n_rows // 2 - 1) * Q) for ch in (CH, CH2)],
        Attempt(mid, "run-1", DAY, T0, T0 + timedelta(seconds=3), outcome, bytes_tx=9),
    )


def test_store_sessions_stores_every_kind_and_counts_new_rows(db: Database) -> None:
    db.upsert_meters([meter(1), meter(2)])
    # 1,200 rows: more than one multi-row INSERT chunk on SQLite
    writes = [session_write("M000001", 1200), session_write("M000002", 96)]
    assert db.store_sessions(writes) == [1200, 96]
    assert db.count_interval_values() == 1296
    assert db.count_rows("channels") == 4
    assert db.count_rows("register_values") == 2
    assert db.count_rows("read_attempts") == 2
    got = db.interval_reads("M000002", CH2, T0, T0 + timedelta(days=1))
    assert got == [r for r in writes[1].intervals if r.channel == CH2]
    # 48 stamps a channel stored and covered: the rest of the day is what is missing
    assert db.missing_intervals("M000002", CH, T0, T0 + timedelta(days=1)) == [
        (T0 + 48 * Q, T0 + 95 * Q)
    ]
    # stored again (a retried batch): nothing new, nothing duplicated
    assert db.store_sessions(writes) == [0, 0]
    assert db.count_interval_values() == 1296
    assert db.count_rows("register_values") == 2
    assert db.attempts(DAY) == [w.attempt for w in writes]


def test_store_sessions_is_all_or_nothing(db: Database) -> None:
    db.upsert_meters([meter(1)])
    good = session_write("M000001")
    orphan = session_write("NO-SUCH-METER")  # its channels violate the meters foreign key
    with pytest.raises(StorageError, match=r"(?i)foreign key"):
        db.store_sessions([good, orphan])
    for table in (
        "interval_days",
        "interval_meters",
        "channels",
        "register_values",
        "obis_codes",
        "read_attempts",
        "collection_runs",
    ):
        assert db.count_rows(table) == 0, table
    with pytest.raises(ValueError, match="outcome"):
        db.store_sessions([session_write("M000001", outcome="great")])
    assert db.store_sessions([good]) == [96]


def test_installed_on_and_enabled_round_trip(db: Database) -> None:
    fresh = meter(1)._replace(installed_on=date(2024, 3, 5))
    db.upsert_meters([fresh, meter(2)])
    assert db.get_meter("M000001") == fresh
    assert db.set_enabled(["M000002", "NOPE"], False) == ["M000002"]
    assert db.disabled_meter_ids() == {"M000002"}
    assert [m.meter_id for m in db.meters(enabled_only=True)] == ["M000001"]
    # a re-import of the inventory leaves the operator's switch alone
    db.upsert_meters([meter(2)])
    assert db.disabled_meter_ids() == {"M000002"}
    db.set_enabled(["M000002"], True)
    assert db.disabled_meter_ids() == set()


#: Version 6's read_attempts as SQLite holds it (revision 0001).
V6_READ_ATTEMPTS = (
    "CREATE TABLE read_attempts (id INTEGER NOT NULL, meter_id VARCHAR(64) NOT NULL, "
    "run_id VARCHAR(64) NOT NULL, day DATE NOT NULL, started DATETIME NOT NULL, "
    "finished DATETIME, outcome VARCHAR(16) NOT NULL, error_class VARCHAR(64), error TEXT, "
    "bytes_tx BIGINT NOT NULL, bytes_rx BIGINT NOT NULL, round_trips INTEGER NOT NULL, "
    "PRIMARY KEY (id), CONSTRAINT ck_read_attempts_outcome CHECK (outcome IN ('ok', "
    "'partial', 'failed')), CONSTRAINT uq_read_attempts UNIQUE (meter_id, run_id, started))"
)


def _version_4_jobs_ddl() -> list[str]:
    """The job table and its index as revision 0004 froze them, in SQLite's DDL."""
    engine = create_engine("sqlite://")
    metadata = r0004_jobs_and_access._version_4_jobs()
    return [str(CreateTable(table).compile(engine)) for table in metadata.sorted_tables] + [
        str(CreateIndex(index).compile(engine))
        for t in metadata.tables.values()
        for index in t.indexes
    ]


def back_to_version_6(con: sqlite3.Connection) -> None:
    """Undo revisions 0007 and 0009-0013 on a fresh database: version 6's interval,
    register, event and attempt tables, its meters without a profile column, no push setups
    table, and its job table without the cluster's link and lease columns."""
    con.execute("ALTER TABLE meters DROP COLUMN profile")
    for table in ("cluster_nodes", "link_leases", "cluster_leader", "jobs"):
        con.execute(f"DROP TABLE {table}")
    for ddl in _version_4_jobs_ddl():
        con.execute(ddl)
    for table in (
        "interval_days",
        "interval_extra",
        "interval_meters",
        "interval_channels",
        "register_values",
        "meter_events",
        "obis_codes",
        "read_attempts",
        "collection_runs",
        "push_setups",
    ):
        con.execute(f"DROP TABLE {table}")
    con.execute(V6_READ_ATTEMPTS)
    con.execute("CREATE INDEX ix_read_attempts_day_meter ON read_attempts (day, meter_id)")
    con.execute(
        "CREATE TABLE register_reads (meter_id VARCHAR(64) NOT NULL, obis VARCHAR(32) NOT NULL, "
        "ts DATETIME NOT NULL, value BIGINT, scaler SMALLINT NOT NULL, unit SMALLINT, "
        "capture_time DATETIME, CONSTRAINT pk_register_reads PRIMARY KEY (meter_id, obis, ts)) "
        "WITHOUT ROWID"
    )
    con.execute(
        "CREATE TABLE events (meter_id VARCHAR(64) NOT NULL, log_obis VARCHAR(32) NOT NULL, "
        "ts DATETIME NOT NULL, code INTEGER NOT NULL, name VARCHAR(128), CONSTRAINT pk_events "
        "PRIMARY KEY (meter_id, log_obis, ts, code)) WITHOUT ROWID"
    )
    con.execute("CREATE INDEX ix_events_log_ts ON events (log_obis, ts)")
    con.execute(
        "CREATE TABLE interval_reads (meter_id VARCHAR(64) NOT NULL, channel VARCHAR(64) NOT "
        "NULL, ts DATETIME NOT NULL, value BIGINT, scaler SMALLINT NOT NULL, status INTEGER, "
        "CONSTRAINT pk_interval_reads PRIMARY KEY (meter_id, channel, ts)) WITHOUT ROWID"
    )
    con.execute(
        "CREATE TABLE read_coverage (meter_id VARCHAR(64) NOT NULL, channel VARCHAR(64) NOT "
        "NULL, first_ts DATETIME NOT NULL, last_ts DATETIME NOT NULL, recorded_at DATETIME NOT "
        "NULL, CONSTRAINT pk_read_coverage PRIMARY KEY (meter_id, channel, first_ts, last_ts)) "
        "WITHOUT ROWID"
    )


def test_version_4_database_upgrades_keeping_its_meters(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    with open_database(path) as db:
        db.upsert_meters([meter(1), meter(2)])
    con = sqlite3.connect(path)
    back_to_version_6(con)
    # what version 4 wrote: the meters table without the version-5 and -8 columns, no
    # version-6 indexes
    con.execute("DROP INDEX ix_events_log_ts")
    con.execute("DROP INDEX ix_meters_station")
    con.execute("ALTER TABLE meters DROP COLUMN role")
    con.execute("ALTER TABLE meters DROP COLUMN installed_on")
    con.execute("ALTER TABLE meters DROP COLUMN enabled")
    con.execute("DROP TABLE alembic_version")
    con.execute("UPDATE schema_version SET version = 4")
    con.commit()
    con.close()
    with open_database(path) as db:
        assert db.schema_version() == SCHEMA_VERSION
        assert [m.meter_id for m in db.meters(enabled_only=True)] == ["M000001", "M000002"]
        assert db.get_meter("M000001") == meter(1)


def test_version_5_database_gains_the_api_indexes(tmp_path: Path) -> None:
    path = tmp_path / "v5.db"
    open_database(path).close()
    con = sqlite3.connect(path)
    back_to_version_6(con)
    con.execute("DROP INDEX ix_events_log_ts")
    con.execute("DROP INDEX ix_meters_station")
    con.execute("ALTER TABLE meters DROP COLUMN role")
    con.execute("DROP TABLE alembic_version")
    con.execute("UPDATE schema_version SET version = 5")
    con.commit()
    con.close()
    with open_database(path) as db:
        assert db.schema_version() == SCHEMA_VERSION
    con = sqlite3.connect(path)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    con.close()
    # version 6's ix_events_log_ts went with the events table in version 9
    assert {"ix_meter_events_log_ts", "ix_meters_station"} <= names
