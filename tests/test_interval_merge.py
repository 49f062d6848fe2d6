"""Any sequence of partial, overlapping and repeated reads leaves the ground truth and the
right gaps: the merge of day rows checked against a brute-force model, on both dialects."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.database import Database, open_database
from storage.gaps import expected_epochs
from storage.records import Channel, Coverage, IntervalRead, MeterRecord, SessionWrite

T0 = datetime(2024, 3, 10, tzinfo=UTC)
Q = timedelta(minutes=15)
SLOTS = 2 * 96  # two UTC days
CHANNELS = ("1.0.1.8.0.255:2", "1.0.2.8.0.255:2")
_meter_numbers = itertools.count()


def truth_of(seed: int, outage: tuple[int, int]) -> dict[tuple[str, int], tuple[int, int | None]]:
    """(channel, slot) -> (value, status) of a meter with an outage (slots without entries)."""
    out = {}
    for c, channel in enumerate(CHANNELS):
        value = 10_000 * (c + 1) + seed
        for slot in range(SLOTS):
            value += (seed * 7 + slot * 13) % 50
            if outage[0] <= slot < outage[1]:
                continue
            out[(channel, slot)] = (value, 0x80 if slot == outage[1] else None)
    return out


read = st.tuples(
    st.sampled_from(CHANNELS),
    st.integers(0, SLOTS - 1),
    st.integers(1, 60),
    st.sampled_from(["full", "partial", "repeat"]),
    st.integers(0, 2**16),
    st.booleans(),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """One database for every example of a test (each example reads a meter of its own)."""
    if request.param == "sqlite":
        db = open_database(tmp_path / "hes.db")
    else:
        db = open_database(request.getfixturevalue("pg_url"))
    yield db
    db.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 10_000),
    outage=st.tuples(st.integers(0, SLOTS), st.integers(0, 20)).map(lambda t: (t[0], t[0] + t[1])),
    reads=st.lists(read, min_size=1, max_size=12),
    offset_min=st.sampled_from([0, 330, -345, 600]),
)
def test_reads_in_any_order_leave_truth_and_gaps(
    shared_db: Database,
    seed: int,
    outage: tuple[int, int],
    reads: list[tuple[str, int, int, str, int, bool]],
    offset_min: int,
) -> None:
    db = shared_db
    meter = f"PROP{next(_meter_numbers):06d}"
    db.upsert_meters(
        [MeterRecord(meter, "tcp", "127.0.0.1", 4059, None, None, 1, 16, "none", meter)]
    )
    truth = truth_of(seed, outage)
    stored: set[tuple[str, int]] = set()
    covered: set[tuple[str, int]] = set()
    previous: list[IntervalRead] = []
    for channel, first, length, kind, pick, as_session in reads:
        last = min(SLOTS - 1, first + length - 1)
        span = [s for s in range(first, last + 1) if (channel, s) in truth]
        if kind == "repeat" and previous:
            rows = previous
        else:
            if kind == "partial":  # a read cut short: some entries of the range, no coverage
                span = [s for k, s in enumerate(span) if pick >> (k % 16) & 1]
            rows = [
                IntervalRead(
                    meter, channel, T0 + s * Q, truth[(channel, s)][0], -1, truth[(channel, s)][1]
                )
                for s in span
            ]
        cov = [Coverage(meter, channel, T0 + first * Q, T0 + last * Q)] if kind == "full" else []
        expected_new = len({(r.channel, (r.ts - T0) // Q) for r in rows} - stored)
        if as_session:
            write = SessionWrite([Channel(meter, channel, 30, -1, 900)], [], rows, cov, None)
            new = db.store_sessions([write])[0]
        else:
            new = db.insert_interval_reads(rows, cov)
        assert new == expected_new
        stored |= {(r.channel, (r.ts - T0) // Q) for r in rows}
        if kind == "full":
            covered |= {(channel, s) for s in range(first, last + 1)}
        previous = rows

    window = (T0, T0 + SLOTS * Q)
    for channel in CHANNELS:
        got = db.interval_reads(meter, channel, *window)
        want = [
            IntervalRead(
                meter, channel, T0 + s * Q, truth[(channel, s)][0], -1, truth[(channel, s)][1]
            )
            for s in range(SLOTS)
            if (channel, s) in stored
        ]
        assert got == want
        missing = [s for s in range(SLOTS) if (channel, s) not in stored | covered]
        gaps = db.missing_intervals(meter, channel, *window)
        assert [s for a, b in gaps for s in range((a - T0) // Q, (b - T0) // Q + 1)] == missing

    # a day in another zone starts mid-row: the fleet count agrees with brute force
    start = T0 + timedelta(minutes=offset_min) + timedelta(hours=12)
    end = start + timedelta(days=1)
    stamps = [int((T0 + s * Q).timestamp()) for s in range(SLOTS)]
    brute = 0
    for channel in CHANNELS:
        for e in expected_epochs(start, end, 900):
            s = stamps.index(e) if e in stamps else None
            if s is None or (channel, s) not in stored | covered:
                brute += 1
    assert db.missing_counts(start, end, CHANNELS, 900, meter_ids=[meter]) == {meter: brute}
