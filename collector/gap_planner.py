"""Which load-profile ranges to read, from what storage says is missing.

Pure decisions over storage's answers (the caller does the queries, on a storage thread):
which meters need a session at all (:func:`days_to_read`) and which epoch ranges to ask a
meter for (:func:`ranges_to_read`), merged so that one selective-access read covers
neighbouring gaps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime

from storage.gaps import epoch

#: ``missing(channel, day) -> [(first, last)]``: storage's missing intervals (datetimes,
#: inclusive) of one channel of the meter on one day.
MissingLookup = Callable[[str, date], Iterable[tuple[datetime, datetime]]]


def merge_ranges(ranges: Iterable[tuple[int, int]], period: int) -> list[tuple[int, int]]:
    """Union of inclusive stamp ranges; ranges one period apart join into one read."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + period:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def days_to_read(
    meter_ids: Iterable[str], missing_counts: Mapping[date, Mapping[str, int]]
) -> dict[str, dict[date, int]]:
    """Per meter that needs a session: its days with missing intervals and how many.

    ``missing_counts`` is storage's grouped count per day (meter -> missing values over all
    channels). A meter with nothing missing on any day is left out: it is not contacted.
    """
    hints: dict[str, dict[date, int]] = {m: {} for m in meter_ids}
    for day, counts in missing_counts.items():
        for meter_id, n in counts.items():
            if n and meter_id in hints:
                hints[meter_id][day] = n
    return {m: h for m, h in hints.items() if h}


def ranges_to_read(
    days: Sequence[date],
    expected: Callable[[date], Sequence[int]],
    channels: Sequence[str],
    period: int,
    missing: MissingLookup,
    hint: Mapping[date, int] | None = None,
) -> list[tuple[int, int]]:
    """Epoch (first, last) ranges to ask for, over every channel and day.

    ``expected(day)`` gives the day's interval stamps. A day whose ``hint`` says every value
    is missing is read whole without asking storage per channel (the first attempt of a
    fresh day, most of a run); otherwise ``missing`` is asked channel by channel.
    """
    ranges: list[tuple[int, int]] = []
    for d in days:
        stamps = expected(d)
        if hint is not None and hint.get(d) == len(stamps) * len(channels):
            if stamps:
                ranges.append((stamps[0], stamps[-1]))
            continue
        for channel in channels:
            for a, b in missing(channel, d):
                ranges.append((epoch(a), epoch(b)))
    return merge_ranges(ranges, period)
