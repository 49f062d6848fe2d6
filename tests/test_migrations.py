"""Alembic migrations: a fresh database reaches the metadata, a database of the release
before Alembic keeps every value, a database of a newer hes is refused."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import tomllib
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from setuptools import find_packages
from sqlalchemy import text

from storage import access, cluster, jobs, keystore, operations, push_setups, queries, schema
from storage.database import SCHEMA_VERSION, Database, open_database
from storage.errors import StorageError
from storage.migration import SCRIPT_LOCATION, head, known_revisions, revision_of
from storage.records import Attempt, Event, IntervalRead, RegisterRead

ROOT = Path(__file__).resolve().parent.parent
#: A SQLite database written by hes at schema version 6 (commit 728c5ab, the last before
#: Alembic) through its own API: open_database, upsert_meters, set_enabled, channels,
#: interval reads (a gap, a NULL value, 2**62), coverage, registers, events, attempts,
#: tokens (one revoked), the audit trail, jobs (one cancelled), a command, a clock
#: correction, an outage, a sealed meter key and an invocation counter; dumped by sqlite3.
SCHEMA_6_DUMP = Path(__file__).parent / "data" / "hes_schema6.sql"
ALL_METADATA = [
    schema.metadata,
    keystore.security_metadata,
    jobs.metadata,
    access.metadata,
    operations.metadata,
    push_setups.metadata,
    cluster.metadata,
]
T0 = datetime(2024, 3, 10, tzinfo=UTC)
#: The tables revision 0007 made (interval values in day rows).
NEW_IN_7 = {"interval_days", "interval_extra", "interval_meters", "interval_channels"}
#: The tables revision 0009 made (register values and events with integer keys and stamps).
NEW_IN_9 = {"register_values", "meter_events", "obis_codes"}
#: The tables revision 0010 made (read attempts with integer keys, day and stamps).
NEW_IN_10 = {"read_attempts", "collection_runs"}
#: The table revision 0012 made (push setups as read back).
NEW_IN_12 = {"push_setups"}
#: The tables revision 0013 made (cluster mode: nodes, link leases, the leader).
NEW_IN_13 = {"cluster_nodes", "link_leases", "cluster_leader"}
#: Wide enough for every stamp of the dump.
FAR = (datetime(1900, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def _stamp(ts: datetime | None) -> str | None:
    """A time stamp as version 6's SQLite text held it."""
    return None if ts is None else f"{ts.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}"


def attempt_text(a: Attempt) -> tuple[Any, ...]:
    """An attempt as version 6's SQLite row held it (without its id)."""
    return (a.meter_id, a.run_id, a.day.isoformat(), _stamp(a.started), _stamp(a.finished),
            *a[5:])  # fmt: skip


def _not_a_partition(obj: Any, name: str | None, type_: str, *_rest: Any) -> bool:
    """Monthly partitions of interval_days are made by writes, not by the metadata."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", "")
    return not re.fullmatch(r"interval_days_\d{6}", table or "")


def differences(db: Database) -> list[Any]:
    """What Alembic's autogenerate finds between the database and the metadata of hes."""
    with db.engine.connect() as conn:
        opts = {"compare_type": True, "include_object": _not_a_partition}
        ctx = MigrationContext.configure(conn, opts=opts)
        return list(compare_metadata(ctx, ALL_METADATA))


def alembic_revisions(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def table_rows(path: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every user table's columns and rows, in a stable order."""
    con = sqlite3.connect(path)
    try:
        names = [
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        out = {}
        for name in names:
            cols = [r[1] for r in con.execute(f'PRAGMA table_info("{name}")')]
            order = ", ".join(f'"{c}"' for c in cols)
            rows = con.execute(f'SELECT {order} FROM "{name}" ORDER BY {order}').fetchall()
            out[name] = (cols, rows)
        return out
    finally:
        con.close()


def schema_6_database(tmp_path: Path) -> Path:
    path = tmp_path / "v6.db"
    con = sqlite3.connect(path)
    con.executescript(SCHEMA_6_DUMP.read_text())
    con.close()
    return path


def test_revisions_are_the_schema_versions() -> None:
    assert head() == revision_of(SCHEMA_VERSION) == "0013"
    assert known_revisions() == {revision_of(v) for v in range(1, SCHEMA_VERSION + 1)}


def test_fresh_sqlite_database_reaches_head_and_equals_the_metadata(tmp_path: Path) -> None:
    with open_database(tmp_path / "fresh.db") as db:
        assert alembic_revisions(db) == [head()]
        assert db.schema_version() == SCHEMA_VERSION
        assert differences(db) == []
        # what a release from before Alembic reads to refuse a newer database
        assert db.count_rows("schema_version") == 1


def test_fresh_postgres_database_reaches_head_and_equals_the_metadata(pg_url: str) -> None:
    with open_database(pg_url) as db:
        assert alembic_revisions(db) == [head()]
        assert db.schema_version() == SCHEMA_VERSION
        assert differences(db) == []


def test_database_of_the_release_before_alembic_keeps_every_value(tmp_path: Path) -> None:
    path = schema_6_database(tmp_path)
    before = table_rows(path)
    assert "alembic_version" not in before
    assert before["schema_version"][1] == [(6,)]
    assert len(before["interval_reads"][1]) > 1000

    with open_database(path) as db:
        assert alembic_revisions(db) == [head()]
        assert db.schema_version() == SCHEMA_VERSION
        assert differences(db) == []
        # through the API too: the values read back as hes wrote them
        assert len(db.meters()) == 9
        assert db.disabled_meter_ids() == {"M000003"}
        assert db.get_meter("M000005") is not None
        assert db.get_meter("M000005").installed_on == date(2024, 1, 6)  # type: ignore[union-attr]
        gap = db.missing_intervals("M000002", "1.0.1.8.0.255:2", T0, T0 + timedelta(days=1))
        assert gap == [(T0 + 40 * timedelta(minutes=15), T0 + 49 * timedelta(minutes=15))]
        assert [t.name for t in access.tokens(db) if t.revoked_at is None] == ["ops"]
        assert {j.state for j in jobs.list_jobs(db)} == {"queued", "cancelled"}
        assert [o.duration_s for o in operations.outages_of(db, "M000004")] == [5400]

        # revision 0007 moved every interval value into day rows: each reads back as stored
        old_reads = before["interval_reads"][1]
        keys = sorted({(m, c) for m, c, *_ in old_reads})
        far = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
        got = [
            (r.meter_id, r.channel, f"{r.ts:%Y-%m-%d %H:%M:%S.%f}", r.value, r.scaler, r.status)
            for m, c in keys
            for r in db.interval_reads(m, c, *far)
        ]
        assert got == sorted(old_reads)
        assert db.count_interval_values() == len(old_reads)

        # revision 0009 moved every register read and event: each reads back through the
        # API's queries as version 6 stored it (aware UTC datetimes, same values)
        old_regs = before["register_reads"][1]
        assert len(old_regs) > 5 and any(r[6] is None for r in old_regs)
        got_regs = [
            (r.meter_id, r.obis, _stamp(r.ts), r.value, r.scaler, r.unit, _stamp(r.capture_time))
            for m in sorted({r[0] for r in old_regs})
            for r in queries.register_reads(db, m, *FAR)
        ]
        assert got_regs == sorted(old_regs)
        for reg in (
            r for m in {r[0] for r in old_regs} for r in queries.register_reads(db, m, *FAR)
        ):
            assert reg.ts.tzinfo is UTC
        old_events = before["events"][1]
        assert len(old_events) > 5
        got_events = [
            (e.meter_id, e.log_obis, _stamp(e.ts), e.code, e.name)
            for m in sorted({e[0] for e in old_events})
            for e in queries.events_of(db, m, None, None)
        ]
        assert sorted(got_events) == sorted(old_events)
        assert db.count_rows("register_values") == len(old_regs)
        assert db.count_rows("meter_events") == len(old_events)

        # revision 0010 moved every read attempt: each reads back as version 6 stored it
        old_attempts = before["read_attempts"][1]
        assert len(old_attempts) > 5 and any(a[5] is None for a in old_attempts)
        assert sorted(attempt_text(a) for a in db.attempts()) == sorted(a[1:] for a in old_attempts)
        assert db.count_rows("read_attempts") == len(old_attempts)

    after = table_rows(path)
    assert after.pop("alembic_version") == (["version_num"], [(head(),)])
    assert after.pop("schema_version") == (["version"], [(SCHEMA_VERSION,)])
    # version 8 adds meters.role (NULL: a customer), version 11 meters.profile (NULL: none)
    columns, meters = after.pop("meters")
    assert columns == [*before["meters"][0], "role", "profile"]
    assert sorted(m[:-2] for m in meters) == before["meters"][1]
    assert {m[-2:] for m in meters} == {(None, None)}
    # version 13 adds the cluster columns to jobs ("" link, no owner, no lease)
    columns, job_rows = after.pop("jobs")
    assert columns == [*before["jobs"][0], "link", "owner", "lease_until"]
    assert sorted(j[:-3] for j in job_rows) == sorted(before["jobs"][1])
    assert {j[-3:] for j in job_rows} == {("", None, None)}
    moved = {"interval_reads", "read_coverage", "register_reads", "events", "read_attempts"}
    kept = {*moved, "schema_version", "meters", "jobs"}
    new = NEW_IN_7 | NEW_IN_9 | NEW_IN_10 | NEW_IN_12 | NEW_IN_13
    assert {k: v for k, v in before.items() if k not in kept} == {
        k: v for k, v in after.items() if k not in new
    }
    # opened again: nothing to do, nothing changes
    with open_database(path) as db:
        assert db.schema_version() == SCHEMA_VERSION
    assert (
        table_rows(path).keys()
        == ({*before, "alembic_version", *NEW_IN_7, *NEW_IN_9} - moved)
        | NEW_IN_10
        | NEW_IN_12
        | NEW_IN_13
    )


def test_postgres_database_of_the_release_before_alembic_is_adopted(pg_url: str) -> None:
    reads = [
        IntervalRead("A", "1.0.1.8.0.255:2", T0 + k * timedelta(minutes=15), k) for k in range(96)
    ]
    with open_database(pg_url) as db:
        db.insert_interval_reads(reads)
        with db.transaction() as conn:
            # what the release before Alembic left: schema_version 6, no alembic_version
            conn.execute(text("DROP TABLE alembic_version"))
        assert db.schema_version() == 0
    with open_database(pg_url) as db:
        assert alembic_revisions(db) == [head()]
        assert db.interval_reads("A", "1.0.1.8.0.255:2", T0, T0 + timedelta(days=1)) == reads
        assert differences(db) == []


def test_a_revision_newer_than_this_hes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    with open_database(path) as db:
        db.upsert_meters([])
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = '0099'")
    con.commit()
    con.close()
    with pytest.raises(StorageError, match="schema revision '0099', unknown to this hes") as info:
        open_database(path)
    assert f"(newest '{head()}'): upgrade hes" in str(info.value)
    con = sqlite3.connect(path)
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("0099",)]
    con.close()


def test_a_newer_revision_is_refused_on_postgres(pg_url: str) -> None:
    with open_database(pg_url) as db, db.transaction() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(StorageError, match="schema revision '0099', unknown to this hes"):
        open_database(pg_url)


def test_open_database_migrates_without_the_alembic_command(tmp_path: Path) -> None:
    # No alembic.ini anywhere, no alembic executable on PATH, another working directory.
    assert not list(ROOT.glob("**/alembic.ini"))
    code = (
        "import sys; from storage.database import open_database\n"
        "db = open_database(sys.argv[1]); print(db.schema_version()); db.close()\n"
    )
    env = {**os.environ, "PATH": "", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "cli.db")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == str(SCHEMA_VERSION)


def test_the_revisions_ship_in_the_package() -> None:
    # setuptools' package discovery (pyproject's include list) finds the Alembic environment,
    # so a wheel of hes carries env.py and every revision.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = set(find_packages(str(ROOT), include=include))
    assert {"storage.migrations", "storage.migrations.versions"} <= packages
    assert (SCRIPT_LOCATION / "env.py").is_file()
    assert len(list((SCRIPT_LOCATION / "versions").glob("r0*.py"))) == SCHEMA_VERSION


def test_postgres_version_6_interval_reads_move_into_day_rows(pg_url: str) -> None:
    """A PostgreSQL database at version 6 (made by running the revisions up to 0006) with
    reads of every shape: each value reads back after the upgrade, gaps and coverage hold."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    q = timedelta(minutes=15)
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
        config.attributes["connection"] = conn
        command.upgrade(config, "0006")
        rows = [("A", "1.0.1.8.0.255:2", T0 + k * q, 10_000 + 7 * k, -1, 0) for k in range(96)]
        rows = [r for r in rows if not 40 <= (r[2] - T0) // q < 50]  # an outage: 10 stamps
        rows += [
            ("A", "1.0.2.8.0.255:2", T0, None, 0, None),
            ("A", "1.0.2.8.0.255:2", T0 + q, 2**62, 3, 0x80),
            ("B", "1.0.1.8.0.255:2", T0 + timedelta(seconds=7), 5, 0, None),  # off the grid
            ("B", "1.0.1.8.0.255:2", T0 + q, 6, 0, None),
            ("B", "1.0.1.8.0.255:2", T0 + 2 * q, 70, -1, None),  # another scaler
        ]
        for m, c, ts, v, s, st in rows:
            conn.execute(
                text("INSERT INTO interval_reads VALUES (:m, :c, :ts, :v, :s, :st)"),
                {"m": m, "c": c, "ts": ts, "v": v, "s": s, "st": st},
            )
        conn.execute(
            text("INSERT INTO read_coverage VALUES (:m, :c, :a, :b, :at)"),
            {"m": "A", "c": "1.0.1.8.0.255:2", "a": T0, "b": T0 + 95 * q, "at": T0},
        )
    engine.dispose()
    with open_database(pg_url) as db:
        assert db.schema_version() == SCHEMA_VERSION
        day = (T0, T0 + timedelta(days=1))
        got = [
            (r.meter_id, r.channel, r.ts, r.value, r.scaler, r.status)
            for m, c in (
                ("A", "1.0.1.8.0.255:2"),
                ("A", "1.0.2.8.0.255:2"),
                ("B", "1.0.1.8.0.255:2"),
            )
            for r in db.interval_reads(m, c, *day)
        ]
        # B's day is held at its finer scaler: 6 x 10**0 reads back as 60 x 10**-1; a null
        # value has none of its own and reads back with its day's
        nulls = {
            ("A", "1.0.2.8.0.255:2", T0, None, 0, None): ("A", "1.0.2.8.0.255:2", T0, None, 3, None)
        }
        expected = [nulls.get(r, r) for r in rows if r[0] == "A"] + [
            ("B", "1.0.1.8.0.255:2", T0 + timedelta(seconds=7), 5, 0, None),
            ("B", "1.0.1.8.0.255:2", T0 + q, 60, -1, None),
            ("B", "1.0.1.8.0.255:2", T0 + 2 * q, 70, -1, None),
        ]
        assert got[:-3] == expected[:-3]
        assert sorted(got[-3:]) == sorted(expected[-3:])
        assert db.count_interval_values() == len(rows)
        # the outage lies inside the answered range: nothing missing on A's first channel
        assert db.missing_intervals("A", "1.0.1.8.0.255:2", *day) == []
        assert db.missing_intervals("A", "1.0.2.8.0.255:2", *day) == [(T0 + 2 * q, T0 + 95 * q)]
        assert differences(db) == []


def _upgraded_to(pg_url: str, revision: str) -> Any:
    """An engine on the PostgreSQL test database brought to ``revision`` by Alembic."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    engine = create_engine(pg_url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return engine


#: Register reads and events of every shape version 8 could hold: sub-second stamps, a
#: stamp before 1970, one given in another zone, NULL value / unit / capture time, 2**62.
ZONE = timezone(timedelta(hours=2))
V8_REGISTERS = [
    ("A", "1.0.1.8.0.255", T0 + timedelta(microseconds=250_001), 2**62, -2, 30, T0),
    ("A", "1.0.1.8.0.255", T0 + timedelta(days=1), 7, -2, 30, T0 + timedelta(hours=23)),
    ("A", "0.0.96.1.0.255", datetime(1969, 12, 31, 23, 59, 59, 500_000, UTC), None, 0, None, None),
    ("B", "1.0.2.8.0.255", datetime(2024, 3, 10, 2, 0, tzinfo=ZONE), -5, 3, 32, None),
]
V8_EVENTS = [
    ("A", "0.0.99.98.0.255", T0 + timedelta(milliseconds=10), 40, "event, ünïcode"),
    ("A", "0.0.99.98.0.255", T0 + timedelta(milliseconds=10), 41, None),
    ("A", operations.PUSH_LOG, T0 + timedelta(seconds=5), 42, "pushed"),
    ("B", "0.0.99.98.1.255", datetime(2024, 3, 10, 1, 0, tzinfo=ZONE), 1, "power down"),
]


def _check_registers_and_events(db: Database) -> None:
    """Every row of V8_REGISTERS and V8_EVENTS reads back through the API's queries."""
    regs = [tuple(r) for m in ("A", "B") for r in queries.register_reads(db, m, *FAR)]
    want = sorted(V8_REGISTERS, key=lambda r: (r[0], r[1], r[2]))
    assert regs == want
    assert all(r[2].tzinfo is UTC for r in regs)
    latest = queries.latest_registers(db, "A")
    assert [(r.obis, r.value) for r in latest] == [("0.0.96.1.0.255", None), ("1.0.1.8.0.255", 7)]
    events = [tuple(e) for m in ("A", "B") for e in queries.events_of(db, m, None, None)]
    assert events == sorted(V8_EVENTS, key=lambda e: (e[0], e[2], e[1], e[3]))
    assert [a.code for a in queries.alarms(db, None, None)] == [42]
    assert operations.last_event_time(db, "B", "0.0.99.98.1.255") == V8_EVENTS[3][2]
    assert operations.pending_power_down(db, "B", "0.0.99.98.1.255") == V8_EVENTS[3][2]
    assert operations.event_codes_at(db, "A", "0.0.99.98.0.255", V8_EVENTS[0][2]) == {40, 41}


def test_postgres_version_8_registers_and_events_move_into_compact_rows(pg_url: str) -> None:
    """A PostgreSQL database at version 8 whose meter B already has a key (interval values):
    every register read and event reads back after the upgrade, B keeps its one key."""
    engine = _upgraded_to(pg_url, "0008")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO interval_meters (meter_id) VALUES ('B')"))
        for row in V8_REGISTERS:
            conn.execute(
                text("INSERT INTO register_reads VALUES (:m, :o, :t, :v, :s, :u, :c)"),
                dict(zip("motvsuc", row, strict=True)),
            )
        for row in V8_EVENTS:
            conn.execute(
                text("INSERT INTO events VALUES (:m, :l, :t, :c, :n)"),
                dict(zip("mltcn", row, strict=True)),
            )
    engine.dispose()
    with open_database(pg_url) as db:
        assert db.schema_version() == SCHEMA_VERSION
        _check_registers_and_events(db)
        keys = db.execute_read(
            schema.interval_meters.select().order_by(schema.interval_meters.c.meter_id)
        )
        assert [(k, m) for k, m in keys] == [(2, "A"), (1, "B")]
        assert differences(db) == []
        # written again after the upgrade: nothing new
        assert db.insert_register_reads([RegisterRead(*r) for r in V8_REGISTERS]) == 0
        assert db.insert_events([Event(*e) for e in V8_EVENTS]) == 0


def test_sqlite_version_6_registers_and_events_of_every_shape_move(tmp_path: Path) -> None:
    path = schema_6_database(tmp_path)
    con = sqlite3.connect(path)
    con.execute("DELETE FROM register_reads")
    con.execute("DELETE FROM events")
    con.executemany(
        "INSERT INTO register_reads VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(*r[:2], _stamp(r[2]), *r[3:6], _stamp(r[6])) for r in V8_REGISTERS],
    )
    con.executemany(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
        [(*e[:2], _stamp(e[2]), *e[3:]) for e in V8_EVENTS],
    )
    con.commit()
    con.close()
    with open_database(path) as db:
        _check_registers_and_events(db)


def test_a_sqlite_stamp_of_another_form_refuses_the_upgrade(tmp_path: Path) -> None:
    path = schema_6_database(tmp_path)
    con = sqlite3.connect(path)
    con.execute(
        "INSERT INTO register_reads VALUES ('M000001', '1.0.1.8.0.255', "
        "'2024-03-12T00:00:00', 1, 0, NULL, NULL)"
    )
    con.commit()
    con.close()
    before = table_rows(path)
    with pytest.raises(StorageError, match=r"register_reads\.ts holds 1 time stamps not of the"):
        open_database(path)
    assert table_rows(path) == before


#: Read attempts of every shape version 9 could hold (the version-1 table): sub-second stamps,
#: NULL finished / error, a day before 1970, unicode, 2**62 bytes, two attempts of one meter
#: at one instant (the later id is the later attempt), a meter with a key (interval values)
#: and one with none. (meter, run, day, started, finished, outcome, class, error, tx, rx, rt)
V9_ATTEMPTS = [
    ("A", "run-1", date(2024, 3, 10), T0 + timedelta(microseconds=250_001), None,
     "failed", "timeout", "no answer from 'A', ünïcode", 10, 0, 1),
    ("A", "run-2", date(2024, 3, 10), T0 + timedelta(hours=2), T0 + timedelta(hours=2, seconds=3),
     "partial", "bad_frame", "fcs", 2**62, 7, 3),
    ("A", "run-3", date(2024, 3, 10), T0 + timedelta(hours=2), T0 + timedelta(hours=3),
     "ok", None, None, 5, 6, 7),
    ("B", "run-1", date(1969, 12, 31), datetime(1969, 12, 31, 23, 59, 59, 500_000, UTC),
     datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), "ok", None, None, 0, 0, 0),
    ("C", "run-2", date(2024, 3, 10), datetime(2024, 3, 10, 2, 0, tzinfo=ZONE),
     datetime(2024, 3, 10, 2, 0, 1, tzinfo=ZONE), "failed", "link", "refused", 1, 2, 3),
]  # fmt: skip


def _check_attempts(db: Database) -> None:
    """Every row of V9_ATTEMPTS reads back, and the report sees A's last attempt as last."""
    assert sorted(db.attempts()) == sorted(Attempt(*a) for a in V9_ATTEMPTS)
    assert all(a.started.tzinfo is UTC for a in db.attempts())
    rep = db.daily_report(date(2024, 3, 10), ["1.0.1.8.0.255:2"])
    assert rep["attempts_by_outcome"] == {"failed": 2, "partial": 1, "ok": 1}
    assert rep["failures_by_error_class"] == {"bad_frame": 1, "link": 1, "timeout": 1}
    worst = {w["meter_id"]: w for w in rep["worst_meters"]}
    assert (worst["A"]["last_outcome"], worst["A"]["last_error_class"]) == ("ok", None)
    assert (worst["C"]["last_outcome"], worst["C"]["last_error"]) == ("failed", "refused")
    # recorded again after the upgrade: nothing new
    assert db.record_attempts(Attempt(*a) for a in V9_ATTEMPTS) == 0


def _v9_attempt_params(a: tuple[Any, ...], sqlite_text: bool) -> dict[str, Any]:
    meter, run, day, started, finished, *rest = a
    if sqlite_text:
        day, started, finished = day.isoformat(), _stamp(started), _stamp(finished)
    return dict(zip("mrdsf", (meter, run, day, started, finished), strict=True)) | dict(
        zip("ocetxn", rest, strict=True)
    )


_V9_INSERT = (
    "INSERT INTO read_attempts (meter_id, run_id, day, started, finished, outcome, error_class, "
    "error, bytes_tx, bytes_rx, round_trips) VALUES (:m, :r, :d, :s, :f, :o, :c, :e, :t, :x, :n)"
)


def test_postgres_version_9_attempts_move_into_compact_rows(pg_url: str) -> None:
    engine = _upgraded_to(pg_url, "0009")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO interval_meters (meter_id) VALUES ('C')"))
        conn.execute(
            text("INSERT INTO meters (meter_id, transport, logical_address, client_sap, "
                 "authentication, link_id, created_at, updated_at) "
                 "SELECT v, 'tcp', 1, 16, 'none', 'l1', now(), now() "
                 "FROM (VALUES ('A'), ('C')) AS ids (v)")
        )  # fmt: skip
        for a in V9_ATTEMPTS:
            conn.execute(text(_V9_INSERT), _v9_attempt_params(a, sqlite_text=False))
    engine.dispose()
    with open_database(pg_url) as db:
        assert db.schema_version() == SCHEMA_VERSION
        _check_attempts(db)
        keys = db.execute_read(
            schema.interval_meters.select().order_by(schema.interval_meters.c.meter_id)
        )
        assert [(k, m) for k, m in keys] == [(2, "A"), (3, "B"), (1, "C")]
        assert differences(db) == []


def test_sqlite_version_6_attempts_of_every_shape_move(tmp_path: Path) -> None:
    path = schema_6_database(tmp_path)
    con = sqlite3.connect(path)
    con.execute("DELETE FROM read_attempts")
    con.execute("DELETE FROM meters WHERE meter_id NOT IN ('M000001', 'M000002')")
    con.execute("UPDATE meters SET meter_id = 'A' WHERE meter_id = 'M000001'")
    con.execute("UPDATE meters SET meter_id = 'C' WHERE meter_id = 'M000002'")
    for a in V9_ATTEMPTS:
        con.execute(_V9_INSERT, _v9_attempt_params(a, sqlite_text=True))
    con.commit()
    con.close()
    with open_database(path) as db:
        _check_attempts(db)


def test_a_sqlite_attempt_day_of_another_form_refuses_the_upgrade(tmp_path: Path) -> None:
    path = schema_6_database(tmp_path)
    con = sqlite3.connect(path)
    con.execute("UPDATE read_attempts SET day = '2024-3-10' WHERE id = 1")
    con.commit()
    con.close()
    before = table_rows(path)
    with pytest.raises(StorageError, match=r"read_attempts\.day holds 1 values not of the form"):
        open_database(path)
    assert table_rows(path) == before
