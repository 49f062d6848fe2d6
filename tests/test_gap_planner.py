"""The gap planner: which meters get a session and which profile ranges they are asked for."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from collector.gap_planner import days_to_read, merge_ranges, ranges_to_read
from storage.gaps import epoch, from_epoch

PERIOD = 900
DAY = date(2026, 11, 22)


def _stamps(d: date) -> list[int]:
    first = int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) + PERIOD
    return [first + k * PERIOD for k in range(96)]


def test_merge_joins_neighbours_one_period_apart_and_keeps_real_gaps() -> None:
    ranges = [(0, 900), (1800, 2700), (4500, 4500), (900, 900)]
    assert merge_ranges(ranges, PERIOD) == [(0, 2700), (4500, 4500)]


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 20)), max_size=30))
def test_merge_covers_exactly_the_stamps_asked_for(raw: list[tuple[int, int]]) -> None:
    ranges = [(lo * PERIOD, (lo + n) * PERIOD) for lo, n in raw]
    merged = merge_ranges(ranges, PERIOD)
    wanted = {s for lo, hi in ranges for s in range(lo, hi + 1, PERIOD)}
    got = {s for lo, hi in merged for s in range(lo, hi + 1, PERIOD)}
    assert got == wanted
    # sorted, disjoint and not mergeable any further
    for (_, hi), (lo, _) in itertools.pairwise(merged):
        assert lo > hi + PERIOD


def test_days_to_read_leaves_complete_meters_out() -> None:
    counts = {DAY: {"A": 0, "B": 384, "X": 7}, date(2026, 11, 21): {"A": 0, "B": 3}}
    hints = days_to_read(["A", "B"], counts)
    assert hints == {"B": {DAY: 384, date(2026, 11, 21): 3}}


def test_a_fresh_day_is_read_whole_without_asking_storage() -> None:
    asked: list[tuple[str, date]] = []

    def missing(channel: str, d: date) -> list[tuple[datetime, datetime]]:
        asked.append((channel, d))
        return []

    stamps = _stamps(DAY)
    got = ranges_to_read([DAY], _stamps, ["c1", "c2"], PERIOD, missing, {DAY: 96 * 2})
    assert got == [(stamps[0], stamps[-1])]
    assert asked == []


def test_a_partial_day_asks_each_channel_and_reads_only_the_union_of_gaps() -> None:
    stamps = _stamps(DAY)
    gaps = {
        "c1": [(from_epoch(stamps[10]), from_epoch(stamps[12]))],
        "c2": [(from_epoch(stamps[13]), from_epoch(stamps[13])), (from_epoch(stamps[50]),) * 2],
    }
    got = ranges_to_read([DAY], _stamps, ["c1", "c2"], PERIOD, lambda c, d: gaps[c], {DAY: 5})
    assert got == [(stamps[10], stamps[13]), (stamps[50], stamps[50])]
    assert all(epoch(from_epoch(s)) == s for s in (stamps[10], stamps[50]))


def test_without_a_hint_storage_decides_and_a_complete_day_gives_nothing() -> None:
    got = ranges_to_read([DAY], _stamps, ["c1"], PERIOD, lambda c, d: [], None)
    assert got == []
