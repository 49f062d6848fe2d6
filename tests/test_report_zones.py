"""The daily report's set-based counting against brute force: UTC days (one grouped SUM),
days in other zones (rows cut mid-day), rows of another period, on both dialects."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.database import Database, open_database
from storage.gaps import day_window, expected_epochs
from storage.records import Attempt, Coverage, IntervalRead, MeterRecord
from storage.report import daily_report

CHANNELS = ("1.0.1.8.0.255:2", "1.0.2.8.0.255:2")
DAY = date(2024, 3, 10)
Q = timedelta(minutes=15)
ZONES = ["UTC", "Asia/Shanghai", "America/Caracas", "Asia/Kathmandu"]
_runs = iter(range(10**9))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (
        str(tmp_path / "hes.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    database = open_database(url)
    yield database
    database.close()


meter_state = st.tuples(
    st.integers(0, 3 * 96),  # first stored slot (from the day before, UTC)
    st.integers(0, 3 * 96),  # how many slots stored
    st.booleans(),  # covered (answered in full) over the stored span
    st.sampled_from([None, "fail-then-ok", "ok", "failed"]),
    st.booleans(),  # one channel read on a 30-minute grid instead
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(states=st.lists(meter_state, min_size=1, max_size=6), zone=st.sampled_from(ZONES))
def test_report_counts_equal_brute_force(
    db: Database, states: list[tuple[int, int, bool, str | None, bool]], zone: str
) -> None:
    run = next(_runs)
    tz = UTC if zone == "UTC" else ZoneInfo(zone)
    base = datetime.combine(DAY - timedelta(days=1), datetime.min.time(), UTC)
    area = f"z{run}"
    ids = [f"R{run:05d}-{i}" for i in range(len(states))]
    db.upsert_meters(
        [MeterRecord(m, "tcp", "127.0.0.1", 4059, None, None, 1, 16, "none", m, area) for m in ids]
    )
    start, end = day_window(DAY, tz)
    expected = list(expected_epochs(start, end, 900))
    want_missing: dict[str, int] = {}
    for m, (first, count, covered, attempts, odd) in zip(ids, states, strict=True):
        satisfied: dict[str, set[int]] = {c: set() for c in CHANNELS}
        rows, cov = [], []
        for c in CHANNELS:
            step = 2 if odd and c == CHANNELS[1] else 1
            for k in range(first, min(first + count, 3 * 96), step):
                ts = base + k * Q
                rows.append(IntervalRead(m, c, ts, k, 0, None))
                satisfied[c].add(int(ts.timestamp()))
            if covered and count and step == 1:
                lo, hi = base + first * Q, base + (min(first + count, 3 * 96) - 1) * Q
                cov.append(Coverage(m, c, lo, hi))
                satisfied[c] |= {
                    int((base + k * Q).timestamp()) for k in range(first, first + count)
                }
        if odd:
            # the 30-minute channel's rows are made on their own grid
            from storage.records import Channel, SessionWrite

            db.store_sessions(
                [SessionWrite([Channel(m, CHANNELS[1], 30, 0, 1800)], [], [], [], None)]
            )
        db.insert_interval_reads(rows, cov)
        want_missing[m] = sum(1 for c in CHANNELS for e in expected if e not in satisfied[c])
        t0 = base + timedelta(days=1, hours=1)
        if attempts == "fail-then-ok":
            db.record_attempts([Attempt(m, "a", DAY, t0, t0, "failed", "timeout", "x"),
                                Attempt(m, "b", DAY, t0 + Q, t0 + Q, "ok")])  # fmt: skip
        elif attempts is not None:
            db.record_attempts([Attempt(m, "a", DAY, t0, t0, attempts, None, None)])
    report = daily_report(db, DAY, list(CHANNELS), tz=tz, worst=100)
    mine = report["by_area"][area]
    incomplete = {m: n for m, n in want_missing.items() if n}
    assert mine["expected"] == len(ids)
    assert mine["incomplete"] == len(incomplete)
    assert mine["intervals_missing"] == sum(incomplete.values())
    got = {
        w["meter_id"]: w["intervals_missing"] for w in report["worst_meters"] if w["area"] == area
    }
    assert got == incomplete
    first_pass = sum(
        1 for m, s in zip(ids, states, strict=True) if s[3] == "ok" and m not in incomplete
    )
    assert mine["first_pass"] == first_pass
    tried = {m for m, s in zip(ids, states, strict=True) if s[3] is not None}
    assert mine["not_collected"] == len(set(incomplete) - tried)
