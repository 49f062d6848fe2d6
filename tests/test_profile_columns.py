"""A profile buffer taken as columns gives the entries the row-by-row path gives, and storage
stores a session's columns exactly as it stores the same reads as tuples."""

from __future__ import annotations

import itertools
import sqlite3
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.plan import ProfilePlan
from collector.profile_reader import _take_columns, _take_rows, _transposed
from protocols import axdr
from protocols.cosem import CosemDateTime, profile_rows
from protocols.errors import DecodeError
from storage.database import open_database
from storage.errors import StorageError
from storage.gaps import epoch
from storage.interval_batch import split_session
from storage.interval_columns import IntervalColumns
from storage.records import Channel, Coverage, IntervalRead, MeterRecord, SessionWrite

T0 = datetime(2024, 3, 10, tzinfo=UTC)
PERIOD = 900
CHANNELS = {2: "1.0.1.8.0.255", 3: "1.0.2.8.0.255", 5: "1.0.4.8.0.255"}
SPECS = [(col, name, -k) for k, (col, name) in enumerate(CHANNELS.items())]
WIDTH = 6  # clock, status, three channels and a column the plan does not read (4)
PLUS_ONE = timezone(timedelta(hours=1))


def plan(status: bool) -> ProfilePlan:
    return ProfilePlan("1.0.99.1.0.255", PERIOD, dict(CHANNELS), 1 if status else None)


def stamp_bytes(slot: int, offset_s: int, aware: bool) -> bytes:
    t = T0 + timedelta(seconds=slot * PERIOD + offset_s)
    return CosemDateTime.from_datetime(t if aware else t.replace(tzinfo=None)).to_bytes()


clock = st.one_of(
    st.builds(stamp_bytes, st.integers(0, 40), st.sampled_from([0, 0, 0, 7]), st.booleans()),
    st.none(),
    st.just(b"\xff" * 12),  # no single instant
    st.just(b"\x07"),  # not a date-time
    st.integers(0, 5),
)
value = st.one_of(
    st.integers(0, 2**20),
    st.integers(-(2**70), 2**70),
    st.none(),
    st.booleans(),
    st.builds(axdr.Enum, st.integers(0, 5)),
    st.just(b"\x01\x02"),
    st.just(1.5),
)
status = st.one_of(
    st.integers(0, 255), st.none(), st.booleans(), st.builds(axdr.Enum, st.integers(0, 3))
)
entry = st.one_of(
    st.tuples(clock, status, value, value, value, value),
    st.builds(list, st.tuples(clock, status, value, value, value, value)),  # an array entry
    st.tuples(clock, status, value),  # wrong width
)


def plain_entry(slot: int, v: int, s: int) -> tuple[Any, ...]:
    return (stamp_bytes(slot, 0, True), s, v, v + 1, 99, v + 2)


plain = st.lists(
    st.builds(plain_entry, st.integers(0, 40), st.integers(0, 2**40), st.integers(0, 255)),
    min_size=1,
    max_size=40,
)


def by_rows(
    buffer: Any, prof: ProfilePlan, first: int, last: int, tz: tzinfo
) -> tuple[list[IntervalRead], set[int]] | DecodeError:
    table = IntervalColumns("M1", [n for _, n, _ in SPECS], [s for _, _, s in SPECS])
    try:
        rows = profile_rows(buffer, [None] * WIDTH, PERIOD, 0)  # type: ignore[list-item]
    except DecodeError as exc:
        return exc
    received = _take_rows(table, rows, prof, SPECS, first, last, tz)
    return list(table), received


def by_columns(
    buffer: Any, prof: ProfilePlan, first: int, last: int, tz: tzinfo
) -> tuple[list[IntervalRead], set[int]] | None:
    table = IntervalColumns("M1", [n for _, n, _ in SPECS], [s for _, _, s in SPECS])
    cells = _transposed(buffer, WIDTH)
    received = (
        None if cells is None else _take_columns(table, cells, 0, prof, SPECS, first, last, tz)
    )
    if received is None:
        assert len(table) == 0  # nothing taken: the row path takes the buffer
        return None
    return list(table), received


window = st.tuples(st.integers(-2, 42), st.integers(-2, 42)).map(
    lambda w: (epoch(T0) + w[0] * PERIOD, epoch(T0) + w[1] * PERIOD)
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(st.lists(entry, max_size=12), plain),
    window,
    st.booleans(),
    st.sampled_from([UTC, PLUS_ONE]),
)
def test_columns_take_what_rows_take(
    buffer: list[Any], bounds: tuple[int, int], status_col: bool, tz: tzinfo
) -> None:
    prof = plan(status_col)
    fast = by_columns(buffer, prof, *bounds, tz)
    slow = by_rows(buffer, prof, *bounds, tz)
    if fast is not None:
        assert fast == slow


@settings(max_examples=100, deadline=None)
@given(plain, window)
def test_a_plain_buffer_is_taken_as_columns(buffer: list[Any], bounds: tuple[int, int]) -> None:
    got = by_columns(buffer, plan(True), *bounds, UTC)
    assert got is not None
    assert got == by_rows(buffer, plan(True), *bounds, UTC)


def test_a_compressed_or_odd_buffer_takes_the_row_path() -> None:
    entries = [plain_entry(k, 100 * k, 0) for k in range(4)]
    compressed = [entries[0], (None, *entries[1][1:])]
    filled = [entries[0], (*entries[1][:2], None, *entries[1][3:])]
    odd_clock = [entries[0], (b"\xff" * 12, *entries[1][1:])]
    as_list = [entries[0], list(entries[1])]
    full = (epoch(T0), epoch(T0) + 10 * PERIOD)
    for buffer in (compressed, filled, odd_clock, as_list, [], "no array"):
        assert by_columns(buffer, plan(True), *full, UTC) is None
    assert by_columns(entries, plan(True), *full, UTC) is not None


# -- the columns as a sequence of reads, and in storage --------------------------------------


def reads_of(table: IntervalColumns) -> list[IntervalRead]:
    """The tuples the profile reader built before the columns: entry by entry, channel by
    channel."""
    return [
        IntervalRead(table.meter_id, name, ts, table.values[j][i], table.scalers[j], st_)
        for i, (ts, st_) in enumerate(zip(table.stamps, table.statuses, strict=True))
        for j, name in enumerate(table.channels)
    ]


column_entries = st.lists(
    st.tuples(
        st.integers(-3, 200),  # slot of T0's grid (two days and then some)
        st.sampled_from([0, 0, 0, 60]),  # off the grid sometimes
        st.lists(
            st.one_of(st.integers(0, 2**40), st.none(), st.integers(2**63, 2**64)),
            min_size=2,
            max_size=2,
        ),
        st.one_of(st.none(), st.integers(0, 255)),
    ),
    max_size=60,
)


def table_of(meter: str, entries: list[Any], scalers: tuple[int, int] = (0, -1)) -> IntervalColumns:
    table = IntervalColumns(meter, ["1.0.1.8.0.255", "1.0.2.8.0.255"], list(scalers))
    table.extend(
        [T0 + timedelta(seconds=slot * PERIOD + off) for slot, off, _, _ in entries],
        [[vs[j] for _, _, vs, _ in entries] for j in range(2)],
        [s for *_, s in entries],
    )
    return table


@given(column_entries)
def test_columns_are_the_sequence_of_their_reads(entries: list[Any]) -> None:
    table = table_of("M1", entries)
    reads = reads_of(table)
    assert list(table) == reads
    assert len(table) == len(reads)
    assert [table[i] for i in range(-len(reads), len(reads))] == reads + reads
    assert table[1:5] == reads[1:5]
    for j in range(2):
        assert list(table.channel(j)) == [r for r in reads if r.channel == table.channels[j]]
    with pytest.raises(IndexError):
        table[len(reads)]


@given(column_entries)
def test_split_of_columns_is_the_split_of_their_reads(entries: list[Any]) -> None:
    table = table_of("M1", entries)
    got = [(key, list(part), cols) for key, part, cols in split_session(table)]
    want = [(key, list(part), cols) for key, part, cols in split_session(reads_of(table))]
    assert got == want


_databases = itertools.count()


def dump(path: Path) -> list[list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        return [
            conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
            for t in ("interval_days", "interval_extra", "interval_meters", "interval_channels")
        ]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(column_entries, st.booleans()), min_size=1, max_size=4))
def test_columns_are_stored_as_their_reads(tmp_path: Path, sessions: list[Any]) -> None:
    """Batches of sessions (the same meters read again, partly, with coverage) leave the same
    rows and counts whether each session's reads come as columns or as tuples."""
    stored: list[Any] = []
    for kind in ("columns", "tuples"):
        path = tmp_path / f"{kind}-{next(_databases)}.db"
        db = open_database(path)
        meters = ["M1", "M2"]
        db.upsert_meters(
            [MeterRecord(m, "tcp", "h", 1, None, None, 1, 1, "none", m) for m in meters]
        )
        counts: list[Any] = []
        for n, (entries, covered) in enumerate(sessions):
            meter = meters[n % 2]
            table = table_of(meter, entries)
            channels = [
                Channel(meter, c, None, s, PERIOD)
                for c, s in zip(table.channels, table.scalers, strict=True)
            ]
            ranges = [Coverage(meter, c, T0, T0 + timedelta(hours=30)) for c in table.channels]
            reads = table if kind == "columns" else reads_of(table)
            writes = [SessionWrite(channels, [], reads, ranges if covered else [], None)]
            try:
                counts.append(db.store_sessions(writes))
            except StorageError as exc:  # a value past 64 bits: the batch is refused
                counts.append(str(exc).split(": ", 1)[1])
        db.close()
        stored.append((counts, dump(path)))
    assert stored[0] == stored[1]
