"""The KPI must be right: which meters a day expects, final versus first-pass rate.

Every test runs on SQLite and on real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from storage.database import Database, open_database
from storage.records import Attempt, IntervalRead, MeterRecord
from storage.report import DayRate, daily_report, success_rates

CH = "1.0.1.8.0.255"
DAY = date(2024, 3, 10)
T0 = datetime(2024, 3, 10, tzinfo=UTC)
Q = timedelta(minutes=15)
H = timedelta(hours=1)


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


def meter(
    i: int, area: str | None = "north", link: str | None = None, installed: date | None = None
) -> MeterRecord:
    mid = f"M{i:03d}"
    return MeterRecord(
        mid, "tcp", "10.0.0.1", 4059, None, None, 1, 16, "none", link or mid, area,
        installed_on=installed,
    )  # fmt: skip


def whole_day(mid: str, day: date = DAY) -> list[IntervalRead]:
    t0 = datetime.combine(day, datetime.min.time(), UTC)
    return [IntervalRead(mid, CH, t0 + k * Q, k, 0, 0) for k in range(96)]


def attempt(mid: str, at: datetime, outcome: str, cls: str | None = None) -> Attempt:
    return Attempt(mid, f"run-{at:%H%M}", DAY, at, at + Q, outcome, cls, cls and f"{cls}!")


def test_a_night_where_every_meter_failed_is_zero(db: Database) -> None:
    db.upsert_meters([meter(1), meter(2)])
    db.record_attempts([attempt(f"M00{i}", T0 + H, "failed", "timeout") for i in (1, 2)])
    rep = daily_report(db, DAY, [CH])
    assert rep["success_rate"] == 0.0 and rep["first_pass_rate"] == 0.0
    assert (rep["expected_meters"], rep["failed_meters"], rep["not_collected_meters"]) == (2, 2, 0)
    assert rep["intervals_missing"] == rep["intervals_expected"] == 2 * 96
    assert rep["by_area"]["north"]["failed"] == 2
    assert rep["by_area"]["north"]["success_rate"] == 0.0
    assert {w["last_error"] for w in rep["worst_meters"]} == {"timeout!"}


def test_a_day_before_installation_is_not_expected(db: Database) -> None:
    db.upsert_meters([meter(1), meter(2, installed=DAY + timedelta(days=1)), meter(3, "south")])
    db.insert_interval_reads(whole_day("M001") + whole_day("M003"))
    db.record_attempts([attempt("M001", T0 + H, "ok"), attempt("M003", T0 + H, "ok")])
    rep = daily_report(db, DAY, [CH])
    assert (rep["expected_meters"], rep["not_expected_meters"]) == (2, 1)
    assert rep["success_rate"] == 1.0 and rep["incomplete_meters"] == 0
    assert rep["worst_meters"] == []
    north = rep["by_area"]["north"]
    assert (north["expected"], north["not_expected"], north["complete"]) == (1, 1, 1)
    # from its installation day on it is expected, and nothing was read: not collected
    after = daily_report(db, DAY + timedelta(days=1), [CH])
    assert (after["expected_meters"], after["not_expected_meters"]) == (3, 0)
    assert after["not_collected_meters"] == 3
    # installed on the day itself: expected that day
    db.upsert_meters([meter(2, installed=DAY)])
    assert daily_report(db, DAY, [CH])["expected_meters"] == 3


def test_a_disabled_meter_is_not_expected(db: Database) -> None:
    db.upsert_meters([meter(1), meter(2), meter(3, area=None)])
    db.insert_interval_reads(whole_day("M001"))
    db.record_attempts([attempt("M001", T0 + H, "ok"), attempt("M002", T0 + H, "failed", "link")])
    assert daily_report(db, DAY, [CH])["success_rate"] == pytest.approx(1 / 3)
    assert db.set_enabled(["M002", "M003"], False) == ["M002", "M003"]
    rep = daily_report(db, DAY, [CH])
    assert (rep["expected_meters"], rep["not_expected_meters"]) == (1, 2)
    assert rep["success_rate"] == 1.0 and rep["failed_meters"] == 0
    # the disabled meter's attempts are still attempts of the day
    assert rep["attempts_by_outcome"] == {"ok": 1, "failed": 1}
    # an area whose every meter is not expected: counted, no rate (no data, not 0 or 100 %)
    assert rep["by_area"][""] == {
        "expected": 0,
        "not_expected": 1,
        "complete": 0,
        "incomplete": 0,
        "failed": 0,
        "not_collected": 0,
        "first_pass": 0,
        "intervals_missing": 0,
        "success_rate": None,
        "first_pass_rate": None,
    }
    db.set_enabled(["M001"], False)
    nothing = daily_report(db, DAY, [CH])
    assert nothing["expected_meters"] == 0 and nothing["not_expected_meters"] == 3
    assert nothing["success_rate"] is None and nothing["first_pass_rate"] is None


def test_first_pass_and_final_differ_when_a_meter_succeeded_on_a_retry(db: Database) -> None:
    db.upsert_meters([meter(i, link="bus1") for i in range(1, 6)])
    db.insert_interval_reads([r for i in (1, 2, 3, 4) for r in whole_day(f"M00{i}")])
    db.record_attempts(
        [
            # M001: one ok session
            attempt("M001", T0 + H, "ok"),
            # M002: failed first, ok on the retry (stored before the first one: order by
            # started, not by id)
            attempt("M002", T0 + 2 * H, "ok"),
            attempt("M002", T0 + H, "failed", "timeout"),
            # M003: an ok session that left ranges missing, completed by a second one
            attempt("M003", T0 + H, "ok"),
            attempt("M003", T0 + 3 * H, "ok"),
            # M004 complete without a session that day (a later run's gap re-read): final only
            # M005: tried twice, still failing
            attempt("M005", T0 + H, "failed", "timeout"),
            attempt("M005", T0 + 2 * H, "partial", "bad_frame"),
        ]
    )
    rep = daily_report(db, DAY, [CH])
    assert rep["success_rate"] == pytest.approx(4 / 5)
    assert rep["first_pass_meters"] == 1
    assert rep["first_pass_rate"] == pytest.approx(1 / 5)
    assert rep["by_area"]["north"]["first_pass"] == 1
    assert rep["by_link"]["bus1"]["failed"] == 1
    assert rep["by_link"]["bus1"]["first_pass_rate"] == pytest.approx(1 / 5)
    # the worst meter's last error is its last attempt's, by time
    [worst] = rep["worst_meters"]
    assert (worst["meter_id"], worst["last_error_class"]) == ("M005", "bad_frame")
    assert rep["incomplete_by_last_error_class"] == {"bad_frame": 1}
    [row] = success_rates(db, DAY, 1, [CH])
    assert row == DayRate(DAY, 0.8, 0.2, 4, 5, 1, 0, 0)


def _statements(db: Database, fn: Any) -> int:
    count = 0

    def on_execute(*_args: Any) -> None:
        nonlocal count
        count += 1

    event.listen(db.engine, "before_cursor_execute", on_execute)
    try:
        fn()
    finally:
        event.remove(db.engine, "before_cursor_execute", on_execute)
    return count


def test_the_report_is_grouped_queries_whatever_the_fleet(db: Database) -> None:
    """The same number of statements for 10 meters as for 600: nothing per meter."""

    def fill(first: int, n: int) -> None:
        db.upsert_meters([meter(i, area=f"a{i % 7}", link=f"L{i % 13}") for i in range(first, n)])
        attempts = [attempt(f"M{i:03d}", T0 + H, "failed", "timeout") for i in range(first, n)]
        attempts += [attempt(f"M{i:03d}", T0 + 2 * H, "ok") for i in range(first, n, 2)]
        db.record_attempts(attempts)
        db.insert_interval_reads([r for i in range(first, n, 2) for r in whole_day(f"M{i:03d}")])

    fill(0, 10)
    small = _statements(db, lambda: daily_report(db, DAY, [CH]))
    fill(10, 600)
    big = _statements(db, lambda: daily_report(db, DAY, [CH]))
    assert big == small
    rep = daily_report(db, DAY, [CH])
    assert rep["expected_meters"] == 600 and rep["complete_meters"] == 300
    assert rep["failed_meters"] == 300 and rep["first_pass_meters"] == 0
