"""Which load-profile intervals are still missing: pure arithmetic on epoch seconds.

An interval timestamp is *expected* when it lies in the half-open window
``[start, end)`` and is a multiple of the capture period since the Unix epoch
(so 15-minute periods fall on :00, :15, :30, :45 UTC). It is *satisfied* when a
read is stored for it, or when it lies inside a coverage range: a range the meter
answered in full, so an entry it did not return does not exist (the meter was off).
Missing = expected minus satisfied, merged into contiguous inclusive ranges that
map one-to-one onto selective-access ``from``/``to`` values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo


def epoch(ts: datetime) -> int:
    """Whole seconds since the epoch of an aware datetime."""
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: pass an aware datetime")
    return int(ts.timestamp())


def from_epoch(seconds: int) -> datetime:
    """Aware UTC datetime of an epoch second."""
    return datetime.fromtimestamp(seconds, UTC)


def day_window(day: date, tz: tzinfo = UTC) -> tuple[datetime, datetime]:
    """``[midnight, next midnight)`` of ``day`` in ``tz``, as UTC datetimes."""
    start = datetime.combine(day, time(0), tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def expected_epochs(start: datetime, end: datetime, period_s: int) -> range:
    """Aligned interval timestamps in ``[start, end)`` as epoch seconds."""
    if period_s <= 0:
        raise ValueError(f"period_s must be positive, not {period_s}")
    first = -(-epoch(start) // period_s) * period_s
    last_excl = epoch(end)
    # A window ending on a fractional second still includes that second's aligned stamp.
    if end.microsecond and last_excl % period_s == 0:
        last_excl += 1
    return range(first, max(first, last_excl), period_s)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of inclusive integer ranges, sorted and non-overlapping."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if hi < lo:
            continue
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def missing_epochs(
    expected: range, stored: Iterable[int], covered: Iterable[tuple[int, int]]
) -> list[int]:
    """Expected stamps that are neither stored nor inside a coverage range."""
    have = set(stored)
    ranges = merge_ranges(covered)
    out: list[int] = []
    i = 0
    for ts in expected:
        if ts in have:
            continue
        while i < len(ranges) and ranges[i][1] < ts:
            i += 1
        if i < len(ranges) and ranges[i][0] <= ts:
            continue
        out.append(ts)
    return out


def group_missing(missing: Sequence[int], period_s: int) -> list[tuple[int, int]]:
    """Consecutive missing stamps (one period apart) as inclusive ``(first, last)`` ranges."""
    out: list[tuple[int, int]] = []
    for ts in missing:
        if out and ts - out[-1][1] == period_s:
            out[-1] = (out[-1][0], ts)
        else:
            out.append((ts, ts))
    return out
