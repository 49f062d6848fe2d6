"""The fast path of interval ingest: a session's reads as columns, new day rows packed in bulk.

Why apart from the merge: nearly every value the collector stores belongs to a meter's fresh
day read in full by one session, a day row no stored row exists for, built from one session's
entries in order. Such a row needs no merge, only packing, so here a session's reads are
transposed once (``zip``), checked with C-level passes (one meter, a fixed channel order, no
null value, one scaler per channel, the stamps a strictly increasing run of one day's grid:
remembered per stamp sequence, since a night's meters share a few), and the new rows of a
whole batch are packed together (:func:`storage.interval_codec.pack_many`). Everything else
(partial, late or repeated reads, null data, off-grid stamps) takes the merge of
:mod:`storage.interval_write`, which produces the same rows.
"""

from __future__ import annotations

import functools
import itertools
import operator
import struct
from array import array
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from storage.interval_codec import INT64_MAX, INT64_MIN, pack_ints, pack_many
from storage.interval_columns import IntervalColumns
from storage.records import IntervalRead

DAY_S = 86400
DAY_US = DAY_S * 1_000_000

Key = tuple[str, str]
#: One channel's entries of a session, when it can take the fast path: the stamps, the values
#: (``array('q')``), the one scaler, the statuses (``array('q')``, -1 for none; the one status,
#: or None, when the session's entries all have the same: the usual case).
Columns = tuple[tuple[datetime, ...], "array[int]", int, "array[int] | int | None"]
#: The day of a run of stamps on a period's grid, with its present bitmap (int and bytes) when
#: the run is strictly increasing (None otherwise: the merge sorts it out).
Grid = tuple[int, int | None, bytes | None]
#: A new day row to pack: day, meter key, channel key, period, scaler, number of values,
#: present bits, present bytes, complete bits, values, statuses (as in :data:`Columns`).
NewRow = tuple[
    int, int, int, int, int, int, int, bytes, int, "array[int]", "array[int] | int | None"
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=100_000)
def epoch_us(ts: datetime) -> int:
    """Microseconds since the epoch of an aware timestamp (stamps repeat: cached)."""
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: hes stores aware (UTC) timestamps only")
    delta = ts - _EPOCH
    return (delta.days * DAY_S + delta.seconds) * 1_000_000 + delta.microseconds


_STAMP = operator.itemgetter(2)
_SLOT_BITS = 11  # a day has at most 1,440 slots (period >= 60 s)
_POW2 = [1 << i for i in range(1 << _SLOT_BITS)]
_CACHE_MAX = 200_000
#: Per period, the (day << 11 | slot) of stamps seen lately (-1: off that period's grid).
_CODES: dict[int, dict[datetime, int]] = {}
#: Per period, the grid of stamp runs seen lately (a night's meters share a few runs).
_GRIDS: dict[int, dict[tuple[datetime, ...], Grid | None]] = {}
_GRIDS_MAX = 10_000


def _codes(period: int, stamps: Sequence[datetime]) -> list[int]:
    """``day << 11 | slot`` of each stamp on ``period``'s grid, -1 for one off it."""
    table = _CODES.get(period)
    if table is None:
        table = _CODES[period] = {}
    try:
        return list(map(table.__getitem__, stamps))
    except KeyError:
        if len(table) > _CACHE_MAX:
            table.clear()
        step = period * 1_000_000
        for t in stamps:
            if t not in table:
                day_number, rem = divmod(epoch_us(t), DAY_US)
                slot, off = divmod(rem, step)
                table[t] = -1 if off or day_number < 0 else day_number << _SLOT_BITS | slot
        return list(map(table.__getitem__, stamps))


def grid_of(period: int, stamps: tuple[datetime, ...]) -> Grid | None:
    """The day ``stamps`` fall in on ``period``'s grid (and their bitmap when they run strictly
    upwards); None when they are off the grid or on more than one day."""
    table = _GRIDS.get(period)
    if table is None:
        table = _GRIDS[period] = {}
    try:
        return table[stamps]
    except KeyError:
        pass
    if len(table) > _GRIDS_MAX:
        table.clear()
    codes = _codes(period, stamps)
    low, high = min(codes), max(codes)
    grid: Grid | None = None
    if low >= 0 and low >> _SLOT_BITS == high >> _SLOT_BITS:
        day_number = low >> _SLOT_BITS
        slots = [c - (day_number << _SLOT_BITS) for c in codes]
        if all(map(operator.lt, slots, itertools.islice(slots, 1, None))):
            present = sum(map(_POW2.__getitem__, slots))
            nbytes = (DAY_S // period + 7) // 8
            grid = (day_number, present, present.to_bytes(nbytes, "little"))
        else:
            grid = (day_number, None, None)
    table[stamps] = grid
    return grid


def _views(cols: list[tuple[Any, ...]], k: int) -> list[Columns | None]:
    """The fast-path columns of each of ``k`` interleaved channels (None where one cannot)."""
    stamps, values, scalers, statuses = cols[2], cols[3], cols[4], cols[5]
    n = len(values)
    one_status: int | None = statuses[0]
    sts: array[int] | int | None = one_status
    try:
        # refuses a null value (TypeError) and one past 64 bits (OverflowError): the merge's
        vals = array("q", values)
        if statuses.count(one_status) != n:
            none = statuses.count(None)
            sts = array("q", [-1 if s is None else s for s in statuses] if none else statuses)
        elif one_status is not None and not INT64_MIN <= one_status <= INT64_MAX:
            return [None] * k
    except (TypeError, OverflowError):
        return [None] * k
    first = scalers[0]
    one_scaler = scalers.count(first) == n
    out: list[Columns | None] = []
    for j in range(k):
        if not one_scaler:
            own = scalers[j::k]
            first = own[0]
            if own.count(first) != len(own):
                out.append(None)
                continue
        out.append((stamps[j::k], vals[j::k], first, sts[j::k] if type(sts) is array else sts))
    return out


def split_session(
    rows: Sequence[IntervalRead],
) -> list[tuple[Key, Sequence[IntervalRead], Columns | None]]:
    """One write's rows by (meter, channel), in their order, each with its fast-path columns.

    A session's rows are one meter's profile entries, each entry one row per channel in a
    fixed order: recognised by comparing the transposed columns (C speed) and cut by slicing;
    anything else is grouped row by row.
    """
    if type(rows) is IntervalColumns:
        return _split_columns(rows)
    n = len(rows)
    if not n:
        return []
    cols = list(zip(*rows, strict=True))
    meters, chans = cols[0], cols[1]
    first = meters[0]
    try:
        k = chans.index(chans[0], 1)
    except ValueError:
        k = n
    pattern = chans[:k]
    if (
        n % k == 0
        and len(set(pattern)) == k
        and chans == pattern * (n // k)
        and meters.count(first) == n
    ):
        views = _views(cols, k)
        return [((first, c), rows[j::k], views[j]) for j, c in enumerate(pattern)]
    groups: dict[Key, list[IntervalRead]] = {}
    for r in rows:
        key = (r[0], r[1])
        group = groups.get(key)
        if group is None:
            group = groups[key] = []
        group.append(r)
    return [(key, part, _views(list(zip(*part, strict=True)), 1)[0])
            for key, part in groups.items()]  # fmt: skip


def _split_columns(
    table: IntervalColumns,
) -> list[tuple[Key, Sequence[IntervalRead], Columns | None]]:
    """:func:`split_session` of a session that read its entries into columns: nothing to
    transpose, the same checks as :func:`_views` on each column."""
    n = len(table.stamps)
    k = len(table.channels)
    if not n or not k:
        return []
    if len(set(table.channels)) != k:
        return split_session(list(table))
    statuses: list[Any] = table.statuses
    columns: tuple[list[Any], ...] = table.values
    one_status = statuses[0]
    sts: array[int] | int | None = one_status
    views: list[Columns | None]
    try:
        if statuses.count(one_status) != n:
            none = statuses.count(None)
            sts = array("q", [-1 if s is None else s for s in statuses] if none else statuses)
        elif one_status is not None and not INT64_MIN <= one_status <= INT64_MAX:
            raise OverflowError(one_status)
        # refuses a null value and one past 64 bits (struct.error): the merge's
        vals = list(map(_int64s(n), columns))
        stamps = tuple(table.stamps)
        views = [(stamps, v, scaler, sts) for v, scaler in zip(vals, table.scalers, strict=True)]
    except (TypeError, OverflowError, struct.error):
        views = [None] * k
    meter = table.meter_id
    return [((meter, c), table.channel(j), views[j]) for j, c in enumerate(table.channels)]


@functools.lru_cache(maxsize=256)
def _int64s(n: int) -> Callable[[Sequence[int]], array[int]]:
    """``array("q", column)`` for columns of ``n`` integers, packed by one ``struct`` call (a
    third of the time of ``array``'s own conversion, item by item); struct.error for a null or
    an integer past 64 bits."""
    pack = struct.Struct(f"={n}q").pack

    def convert(column: Sequence[int]) -> array[int]:
        out = array("q")
        out.frombytes(pack(*column))
        return out

    return convert


def stamps_of(part: Sequence[IntervalRead]) -> tuple[datetime, ...]:
    """The stamps of a channel's rows."""
    return tuple(map(_STAMP, part))


def encode_new(rows: Sequence[NewRow]) -> list[tuple[Any, ...]]:
    """The ``interval_days`` rows (``interval_write.DAY_COLUMNS`` order) of new day rows, their
    values and statuses packed as one batch."""
    vals = pack_many([r[9] for r in rows], delta=True)
    packed = iter(pack_many([r[10] for r in rows if type(r[10]) is array], blank=-1))
    out = []
    for (day, mk, ck, period, scaler, n, present, pbytes, complete, _, sts), v in zip(
        rows, vals, strict=True
    ):
        n_slots = DAY_S // period
        if isinstance(sts, array):
            status = next(packed)
        else:
            status = None if sts is None or sts == -1 else _constant(sts)
        out.append((
            day, mk, ck, period, scaler, n_slots - (present | complete).bit_count(), n,
            pbytes, complete.to_bytes((n_slots + 7) // 8, "little"), v, None, status,
        ))  # fmt: skip
    return out


@functools.lru_cache(maxsize=1024)
def _constant(status: int) -> bytes:
    """The status array of a row whose entries all have ``status``."""
    return pack_ints([status])
