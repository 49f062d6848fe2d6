"""Retention: readings before the horizon go (PostgreSQL: whole monthly partitions dropped),
the rest stays exactly; the CLI and the service apply it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.database import Database, open_database
from storage.records import Attempt, Coverage, IntervalRead, RegisterRead
from storage.retention import apply_retention

CH = "1.0.1.8.0.255:2"
Q = timedelta(minutes=15)
TODAY = date(2024, 5, 10)


def fill(db: Database, days: list[date]) -> None:
    for day in days:
        t0 = datetime(day.year, day.month, day.day, tzinfo=UTC)
        rows = [IntervalRead("A", CH, t0 + k * Q, 100 + k, 0, None) for k in range(96)]
        rows.append(IntervalRead("A", CH, t0 + timedelta(seconds=7), 1, 0, None))  # off-grid
        db.insert_interval_reads(rows, [Coverage("A", CH, t0, t0 + 95 * Q)])
        db.insert_register_reads([RegisterRead("A", "1.0.1.8.0.255", t0, 5)])
        db.record_attempt(Attempt("A", "r", day, t0, t0, "ok"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    url = (
        str(tmp_path / "hes.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    database = open_database(url)
    request.addfinalizer(database.close)
    return database


DAYS = [date(2024, 2, 27), date(2024, 3, 15), date(2024, 4, 1), date(2024, 4, 2), date(2024, 5, 9)]


def test_readings_before_the_horizon_go_the_rest_stays(db: Database) -> None:
    fill(db, DAYS)
    # keep 39 days: 2024-04-01 is the first kept day
    dry = apply_retention(db, 39, today=TODAY, dry_run=True)
    assert dry.first_kept == date(2024, 4, 1)
    assert (dry.interval_rows, dry.interval_values, dry.register_reads, dry.read_attempts) == (
        2,
        2 * 97,
        2,
        2,
    )
    assert db.count_interval_values() == 5 * 97  # a dry run removes nothing
    done = apply_retention(db, 39, today=TODAY)
    assert done.interval_values == 2 * 97 and not done.dry_run
    if db.dialect == "postgresql":
        assert done.partitions_dropped == ("interval_days_202402", "interval_days_202403")
        with db.transaction() as conn:
            names = set(conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'interval_days_%' "
                "AND schemaname = current_schema()"
            )).scalars())  # fmt: skip
        assert names == {"interval_days_202404", "interval_days_202405"}
    assert db.count_interval_values() == 3 * 97
    assert db.count_rows("register_values") == 3 and db.count_rows("read_attempts") == 3
    for day in DAYS[2:]:
        t0 = datetime(day.year, day.month, day.day, tzinfo=UTC)
        assert len(db.interval_reads("A", CH, t0, t0 + timedelta(days=1))) == 97
        assert db.missing_intervals("A", CH, t0, t0 + timedelta(days=1)) == []
    t0 = datetime(2024, 3, 15, tzinfo=UTC)
    assert db.interval_reads("A", CH, t0, t0 + timedelta(days=1)) == []
    # applied again: nothing more to remove
    again = apply_retention(db, 39, today=TODAY)
    assert (again.interval_values, again.partitions_dropped) == (0, ())


def test_a_horizon_inside_a_month_deletes_only_the_older_rows(db: Database) -> None:
    fill(db, DAYS)
    done = apply_retention(db, 38, today=TODAY)  # first kept: 2024-04-02
    assert done.interval_values == 3 * 97
    assert db.count_interval_values() == 2 * 97


def test_cli_retention(tmp_path: Path) -> None:
    path = tmp_path / "hes.db"
    with open_database(path) as db:
        fill(db, DAYS)
    hes = [sys.executable, "-m", "cli"]
    out = subprocess.run(
        [*hes, "retention", "--db", str(path), "--keep-days", "39", "--today", "2024-05-10"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert result["first_kept"] == "2024-04-01" and result["interval_values"] == 2 * 97
    bad = subprocess.run(
        [*hes, "retention", "--db", str(path), "--keep-days", "3", "--today", "yesterday"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "--today 'yesterday' is not a date" in bad.stderr
    assert "Traceback" not in bad.stderr
    zero = subprocess.run(
        [*hes, "retention", "--db", str(path), "--keep-days", "0"], capture_output=True, text=True
    )
    assert zero.returncode == 2 and "Traceback" not in zero.stderr
