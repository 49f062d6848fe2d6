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


def test_a_fresh_session_is_stored_as_the_merge_stores_it(shared_db: Database) -> None:
    # A new day written whole by one session takes the batch-packing path; the same reads
    # in two writes of one batch take the merge: the day rows must be the same bytes.
    db = shared_db
    meters = [f"FAST{next(_meter_numbers):06d}" for _ in range(2)]
    db.upsert_meters(
        [MeterRecord(m, "tcp", "127.0.0.1", 4059, None, None, 1, 16, "none", m) for m in meters]
    )
    chans = ("1.0.1.8.0.255:2", "1.0.2.8.0.255:2", "1.0.32.7.0.255:2", "1.0.3.8.0.255:2")
    slots = [s for s in range(96) if not 40 <= s < 47]

    def rows(meter: str) -> list[IntervalRead]:
        out = []
        for s in slots:
            for c, channel in enumerate(chans):
                value = {0: 5_000_000_000 + 3 * s, 1: 7, 2: 230 + s % 3 * 70_000, 3: -(s**3)}[c]
                status = {0: None, 1: 0x80 if s == 47 else None, 2: 0, 3: s % 2}[c]
                out.append(IntervalRead(meter, channel, T0 + s * Q, value, -c, status))
        return out

    cov = [Coverage(m, ch, T0, T0 + 95 * Q) for m in meters for ch in chans]
    chan_rows = [Channel(m, ch, 30, 0, 900) for m in meters for ch in chans]
    whole = rows(meters[0])
    halves = rows(meters[1])
    writes = [
        SessionWrite(chan_rows[:4], [], whole, cov[:4], None),
        SessionWrite(chan_rows[4:], [], halves[: len(halves) // 2], cov[4:], None),
        SessionWrite([], [], halves[len(halves) // 2 :], [], None),
    ]
    assert db.store_sessions(writes) == [len(whole), len(halves) // 2, len(halves) // 2]
    with db.reading() as conn:
        stored = conn.exec_driver_sql(
            "SELECT m.meter_id, c.channel, d.day, d.period_s, d.scaler, d.missing, d.n_values, "
            "d.present, d.complete, d.vals, d.nulls, d.status FROM interval_days d "
            "JOIN interval_meters m ON m.meter_key = d.meter_key "
            "JOIN interval_channels c ON c.channel_key = d.channel_key "
            f"WHERE m.meter_id IN ('{meters[0]}', '{meters[1]}')"
        ).all()
    by_meter: dict[str, dict[str, tuple[object, ...]]] = {m: {} for m in meters}
    for meter_id, channel, *row in stored:
        by_meter[meter_id][channel] = tuple(bytes(v) if isinstance(v, memoryview) else v
                                            for v in row)  # fmt: skip
    assert set(by_meter[meters[0]]) == set(chans)
    assert by_meter[meters[0]] == by_meter[meters[1]]
    for channel in chans:
        got = db.interval_reads(meters[0], channel, T0, T0 + 96 * Q)
        assert got == [r for r in whole if r.channel == channel]
