"""Many day rows decoded at once into NumPy arrays: the export's decoder.

Why a second decoder beside :func:`storage.interval_codec.row_columns`: an export unpacks
every value of a range (77 million for a day of 200,000 meters), and a Python step per value
costs more than the rest of the export together. A fleet's day rows share a handful of
layouts (the same present slots, the same header byte and length of the packed values and
statuses), so the rows of a block are grouped by layout and each group is decoded as one
matrix: ``np.frombuffer`` over the joined blobs, a cumulative sum along the rows for
delta-coded arrays, slot offsets broadcast over the days for the timestamps. The bytes mean
what ``interval_codec`` says they mean; a group whose bytes do not fit its layout, or whose
deltas could run past 64 bits, goes row by row through ``interval_codec.unpack_ints``, which
decodes exactly or raises the same :class:`~storage.interval_codec.CodecError`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from storage.interval_codec import CONSTANT, DELTA, bitmap_int, unpack_ints

Int64s = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

_WIDTH_MASK = 0x0F
_WIDTHS = (1, 2, 4, 8)
_DAY_US = 86_400 * 1_000_000
#: Below this, a first value plus (n - 1) deltas of the widest magnitude stay inside 64 bits.
_SAFE = float(1 << 62)

#: A stored day row as the export selects it: (day, period_s, scaler, present, vals, nulls,
#: status).
DayRow = tuple[int, int, int, bytes, bytes, bytes | None, bytes | None]


@dataclass(frozen=True, slots=True)
class DayArrays:
    """The entries of some day rows end to end, in row order then time order.

    ``counts[i]`` entries belong to row ``i``; ``value_null`` / ``status_null`` mark the
    entries whose value the meter sent as null-data, or that have no status (where ``value``
    and ``status`` hold an arbitrary integer)."""

    counts: Int64s
    ts_us: Int64s
    value: Int64s
    value_null: Bools
    scaler: Int64s
    status: Int64s
    status_null: Bools


@functools.lru_cache(maxsize=4096)
def slot_array(present: bytes) -> Int64s:
    """The slots set in a present bitmap, ascending (read-only: the array is shared)."""
    bits = np.unpackbits(np.frombuffer(present, np.uint8), bitorder="little")
    slots = np.flatnonzero(bits).astype(np.int64)
    slots.setflags(write=False)
    return slots


@functools.lru_cache(maxsize=4096)
def _offsets(present: bytes, period_s: int) -> Int64s:
    """Microseconds from the row's midnight to each present slot (read-only, shared)."""
    out = slot_array(present) * (period_s * 1_000_000)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4096)
def _null_mask(present: bytes, nulls: bytes) -> Bools:
    """Which present entries a nulls bitmap marks (read-only, shared)."""
    bits = bitmap_int(nulls)
    slots = slot_array(present)
    mask = np.array([bits >> int(s) & 1 for s in slots], dtype=np.bool_)
    mask.setflags(write=False)
    return mask


def _matrix(header: int, length: int, n: int, blobs: Sequence[bytes]) -> Int64s | None:
    """``len(blobs)`` integer arrays of one layout as a (rows, n) matrix; None when the
    layout is malformed or its deltas could leave 64 bits (the caller goes row by row)."""
    width = header & _WIDTH_MASK
    flags = header & ~_WIDTH_MASK
    if n == 0 or width not in _WIDTHS or flags & ~(DELTA | CONSTANT) or flags == DELTA | CONSTANT:
        return None
    k = len(blobs)
    element = np.dtype(f"<i{width}")
    raw = np.frombuffer(b"".join(blobs), np.uint8).reshape(k, length)
    if flags & CONSTANT:
        if length != 1 + width:
            return None
        one = np.ascontiguousarray(raw[:, 1:]).view(element).astype(np.int64)
        return np.broadcast_to(one, (k, n))
    if flags & DELTA:
        if length != 9 + width * (n - 1):
            return None
        first = np.ascontiguousarray(raw[:, 1:9]).view("<i8").astype(np.int64)
        widest = float(n - 1) * float(1 << (8 * width - 1))
        if widest > _SAFE or float(np.abs(first.astype(np.float64)).max()) > _SAFE:
            return None
        out = np.empty((k, n), np.int64)
        out[:, :1] = first
        out[:, 1:] = np.ascontiguousarray(raw[:, 9:]).view(element)
        np.cumsum(out, axis=1, out=out)
        return out
    if length != 1 + width * n:
        return None
    return np.ascontiguousarray(raw[:, 1:]).view(element).astype(np.int64)


def _place(out: npt.NDArray[Any], starts: Int64s, rows: list[int], n: int, block: Any) -> None:
    """Write a (len(rows), n) block (or a broadcastable one) at its rows' places in ``out``."""
    first = rows[0]
    if rows[-1] - first == len(rows) - 1:
        # consecutive rows of one layout: one contiguous slice
        start = int(starts[first])
        out[start : start + n * len(rows)].reshape(len(rows), n)[:] = block
    else:
        out[starts[rows][:, None] + np.arange(n)] = block


def decode_rows(rows: Sequence[Sequence[Any]]) -> DayArrays:
    """The entries of ``rows``, column by column: each row's first seven columns are a day
    row's stored columns (:data:`DayRow`); any after them are not looked at.

    Equal, entry for entry, to :func:`storage.interval_read.decode_row` of each row; a row
    whose bytes do not decode raises :class:`~storage.interval_codec.CodecError`."""
    k = len(rows)
    # layout: present bitmap, period, then header byte (b"" if empty) and length of the
    # values and of the statuses
    groups: dict[tuple[bytes, int, bytes, int, bytes, int], list[int]] = {}
    for i, row in enumerate(rows):
        vals = row[4] or b""
        status = row[6]
        key = (row[3], row[1], vals[:1], len(vals), status[:1] if status else b"",
               len(status) if status else 0)  # fmt: skip
        group = groups.get(key)
        if group is None:
            groups[key] = [i]
        else:
            group.append(i)
    counts = np.empty(k, np.int64)
    for key, members in groups.items():
        counts[members] = len(slot_array(key[0]))
    ends = np.cumsum(counts)
    starts = ends - counts
    total = int(ends[-1]) if k else 0
    ts = np.empty(total, np.int64)
    value = np.empty(total, np.int64)
    status_out = np.zeros(total, np.int64)
    status_null = np.zeros(total, np.bool_)
    days = np.fromiter((r[0] for r in rows), np.int64, k) * _DAY_US
    for (present, period, vhead, vlen, shead, slen), members in groups.items():
        n = len(slot_array(present))
        if n == 0:
            for i in members:
                _check_empty(rows[i])
            continue
        _place(ts, starts, members, n, days[members][:, None] + _offsets(present, period))
        blobs = [rows[i][4] or b"" for i in members]
        matrix = _matrix(vhead[0], vlen, n, blobs) if vhead else None
        if matrix is None:
            matrix = np.array([unpack_ints(b, n, "interval_days.vals") for b in blobs], np.int64)
        _place(value, starts, members, n, matrix)
        if not shead:
            _place(status_null, starts, members, n, True)
            continue
        codes = [rows[i][6] or b"" for i in members]
        matrix = _matrix(shead[0], slen, n, codes)
        if matrix is None:
            matrix = np.array([unpack_ints(c, n, "interval_days.status") for c in codes], np.int64)
        _place(status_out, starts, members, n, matrix)
    if k:
        status_null |= status_out == -1
    value_null = np.zeros(total, np.bool_)
    for i in [i for i, row in enumerate(rows) if row[5]]:
        start = int(starts[i])
        value_null[start : start + int(counts[i])] = _null_mask(rows[i][3], rows[i][5])
    scaler = np.repeat(np.fromiter((r[2] for r in rows), np.int64, k), counts)
    return DayArrays(counts, ts, value, value_null, scaler, status_out, status_null)


def _check_empty(row: Sequence[Any]) -> None:
    """A row without present slots holds no array (what the scalar decoder checks)."""
    unpack_ints(row[4], 0, "interval_days.vals")
    if row[6]:
        unpack_ints(row[6], 0, "interval_days.status")
