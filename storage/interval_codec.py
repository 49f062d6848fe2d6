"""The bytes of one interval day row: slot bitmaps and packed integer arrays.

Why packing: a meter channel's day is 96 values (15-minute profile) that differ from each
other by little (a cumulative energy register grows by a few Wh per interval), so one row per
meter, channel and day holding the values delta-encoded at the narrowest width that fits
takes 2-3 bytes per value where a row per value took 140. Everything here is pure and
C-speed where Python allows (``array`` does the packing), since the collector packs every
value it stores and an export unpacks every value it writes.

Formats (all integers little-endian, signed):

* *bitmap*: bit ``i`` of byte ``i // 8`` (least significant first) is slot ``i``; as many
  bytes as the day has slots, rounded up.
* *integer array* (values, statuses): one header byte, then the elements. The header's low
  nibble is the element width in bytes (1, 2, 4 or 8). Flag ``DELTA`` (0x10): the first value
  follows as 8 bytes, then ``n - 1`` differences at the width. Flag ``CONSTANT`` (0x20): one
  element at the width stands for all ``n``. No flag: ``n`` elements at the width. An empty
  array is zero bytes. ``n`` itself is not stored: the row's present bitmap gives it.
"""

from __future__ import annotations

import operator
import sys
from array import array
from collections.abc import Sequence
from itertools import accumulate

import numpy as np
import numpy.typing as npt

DELTA = 0x10
CONSTANT = 0x20
_WIDTH_MASK = 0x0F
_FLAGS = DELTA | CONSTANT

_TYPECODE = {1: "b", 2: "h", 4: "i", 8: "q"}
_LIMITS = ((1, -(1 << 7), (1 << 7) - 1), (2, -(1 << 15), (1 << 15) - 1),
           (4, -(1 << 31), (1 << 31) - 1), (8, -(1 << 63), (1 << 63) - 1))  # fmt: skip
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_SWAP = sys.byteorder != "little"
assert array("i").itemsize == 4 and array("q").itemsize == 8


class CodecError(ValueError):
    """A stored row's bytes do not decode: what is wrong, and with which part."""


#: The slot numbers set in each byte value, for bitmap decoding a byte at a time.
_BYTE_SLOTS: tuple[tuple[int, ...], ...] = tuple(
    tuple(bit for bit in range(8) if byte >> bit & 1) for byte in range(256)
)


def bitmap_bytes(bits: int, slots: int) -> bytes:
    """The bitmap of ``bits`` (an int, bit i = slot i) for a day of ``slots`` slots."""
    return bits.to_bytes((slots + 7) // 8, "little")


def bitmap_int(blob: bytes | None) -> int:
    """The int of a stored bitmap (None: no slot set)."""
    return int.from_bytes(blob, "little") if blob else 0


def slots_of(blob: bytes | None) -> list[int]:
    """The slots set in a stored bitmap, ascending."""
    if not blob:
        return []
    table = _BYTE_SLOTS
    return [8 * i + bit for i, byte in enumerate(blob) if byte for bit in table[byte]]


def bits_of(slots: Sequence[int]) -> int:
    """The bitmap int with ``slots`` set."""
    bits = 0
    for s in slots:
        bits |= 1 << s
    return bits


def _width(low: int, high: int) -> int:
    for width, lo, hi in _LIMITS:
        if lo <= low and high <= hi:
            return width
    raise OverflowError(f"integer beyond 64 bits (between {low} and {high})")


def _packed(width: int, items: Sequence[int]) -> bytes:
    arr = array(_TYPECODE[width], items)
    if _SWAP:
        arr.byteswap()
    return arr.tobytes()


def pack_ints(values: Sequence[int], *, delta: bool = False) -> bytes:
    """``values`` as an integer array (see the module docstring); ``OverflowError`` past 64 bits.

    ``delta`` asks for difference coding (cumulative registers); it falls back to plain
    elements when the differences would not fit 64 bits.
    """
    n = len(values)
    if n == 0:
        return b""
    low, high = min(values), max(values)
    if low < INT64_MIN or high > INT64_MAX:
        raise OverflowError(f"integer beyond 64 bits (between {low} and {high})")
    if low == high:
        width = _width(low, high)
        return bytes((width | CONSTANT,)) + _packed(width, (low,))
    if delta and n > 1:
        diffs = list(map(operator.sub, values[1:], values))
        dlow, dhigh = min(diffs), max(diffs)
        if INT64_MIN <= dlow and dhigh <= INT64_MAX:
            width = _width(dlow, dhigh)
            if width < 8:
                return bytes((width | DELTA,)) + _packed(8, (values[0],)) + _packed(width, diffs)
    width = _width(low, high)
    return bytes((width,)) + _packed(width, values)


def _widths(low: npt.NDArray[np.int64], high: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Per element, the narrowest width (1, 2, 4, 8 bytes) holding ``low .. high``."""
    width = np.full(low.shape, 8, dtype=np.int64)
    for w, lo, hi in reversed(_LIMITS[:3]):
        width[(low >= lo) & (high <= hi)] = w
    return width


def pack_many(
    rows: Sequence[array[int]], *, delta: bool = False, blank: int | None = None
) -> list[bytes | None]:
    """``[pack_ints(row, delta=delta) for row in rows]`` for non-empty ``array('q')`` rows,
    byte for byte, in a few whole-batch numpy passes (the collector packs every value it
    stores: per-row Python was most of the ingest); a row of only ``blank`` gives None.

    Why numpy over the batch: the bounds, differences and widths of a night's day rows are
    one vectorised pass each instead of a dozen Python-level calls per row of 96 values.
    """
    if not rows:
        return []
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    if int(lengths.min()) == 0:
        raise ValueError("pack_many packs non-empty rows only")
    flat = np.frombuffer(b"".join(rows), dtype=np.int64)
    starts = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    low = np.minimum.reduceat(flat, starts)
    high = np.maximum.reduceat(flat, starts)
    plain_w = _widths(low, high)
    use_delta = np.zeros(len(rows), dtype=bool)
    delta_w = plain_w
    diffs = flat
    if delta and len(flat) > 1:
        diffs = np.empty_like(flat)
        np.subtract(flat[1:], flat[:-1], out=diffs[1:])
        # a row's first element has no difference (0 fits every width)
        diffs[starts] = 0
        delta_w = _widths(np.minimum.reduceat(diffs, starts), np.maximum.reduceat(diffs, starts))
        # a row spanning more than int64 has a difference past 64 bits (wrapped above): plain
        span = high.astype(np.uint64) - low.astype(np.uint64)
        delta_w[span > np.uint64(INT64_MAX)] = 8
        use_delta = (lengths > 1) & (delta_w < 8)
    buffers: dict[tuple[bool, int], bytes] = {}

    def buffer(of_diffs: bool, width: int) -> bytes:
        key = (of_diffs, width)
        if key not in buffers:
            source = diffs if of_diffs else flat
            buffers[key] = source.astype(f"<i{width}").tobytes()
        return buffers[key]

    out: list[bytes | None] = []
    for s, n, lo, hi, pw, d, dw, first in zip(
        starts.tolist(), lengths.tolist(), low.tolist(), high.tolist(), plain_w.tolist(),
        use_delta.tolist(), delta_w.tolist(), flat[starts].tolist(), strict=True,
    ):  # fmt: skip
        if lo == hi:
            out.append(
                None if lo == blank else _CONST_HEADER[pw] + lo.to_bytes(pw, "little", signed=True)
            )
        elif d:
            out.append(
                _DELTA_HEADER[dw]
                + first.to_bytes(8, "little", signed=True)
                + buffer(True, dw)[dw * (s + 1) : dw * (s + n)]
            )
        else:
            out.append(_PLAIN_HEADER[pw] + buffer(False, pw)[pw * s : pw * (s + n)])
    return out


_PLAIN_HEADER = {w: bytes((w,)) for w in _TYPECODE}
_CONST_HEADER = {w: bytes((w | CONSTANT,)) for w in _TYPECODE}
_DELTA_HEADER = {w: bytes((w | DELTA,)) for w in _TYPECODE}


def _elements(blob: bytes, width: int, start: int, count: int, what: str) -> list[int]:
    end = start + width * count
    if len(blob) != end:
        raise CodecError(
            f"{what}: {len(blob)} bytes do not hold {count} element(s) of {width} byte(s) "
            f"after a {start}-byte header"
        )
    arr = array(_TYPECODE[width])
    arr.frombytes(blob[start:end])
    if _SWAP:
        arr.byteswap()
    return arr.tolist()


def unpack_ints(blob: bytes | None, n: int, what: str = "integer array") -> list[int]:
    """The ``n`` integers of a stored array; :class:`CodecError` naming ``what`` if malformed."""
    if n < 0:
        raise CodecError(f"{what}: negative element count {n}")
    if not blob:
        if n:
            raise CodecError(f"{what}: empty, but {n} element(s) expected")
        return []
    header = blob[0]
    width = header & _WIDTH_MASK
    flags = header & ~_WIDTH_MASK
    if width not in _TYPECODE or flags & ~_FLAGS or flags == _FLAGS:
        raise CodecError(f"{what}: invalid header byte 0x{header:02x}")
    if n == 0:
        raise CodecError(f"{what}: {len(blob)} bytes where no element is expected")
    if flags & CONSTANT:
        return _elements(blob, width, 1, 1, what) * n
    if flags & DELTA:
        if len(blob) < 9:
            raise CodecError(f"{what}: {len(blob)} bytes, too short for a delta-coded array")
        first = _elements(blob[:9], 8, 1, 1, what)[0]
        diffs = _elements(blob, width, 9, n - 1, what)
        out = list(accumulate(diffs, initial=first))
        if min(out) < INT64_MIN or max(out) > INT64_MAX:
            raise CodecError(f"{what}: deltas run past 64 bits")
        return out
    return _elements(blob, width, 1, n, what)


def element_at(blob: bytes | None, n: int, index: int, what: str = "integer array") -> int:
    """Element ``index`` of a stored array of ``n``, without building the others (C-level sum
    for a delta-coded one): a boundary register value out of a day row."""
    if not 0 <= index < n:
        raise CodecError(f"{what}: element {index} of {n} asked for")
    if not blob:
        raise CodecError(f"{what}: empty, but {n} element(s) expected")
    header = blob[0]
    width = header & _WIDTH_MASK
    if width not in _TYPECODE:
        raise CodecError(f"{what}: invalid header byte 0x{header:02x}")
    if header & CONSTANT:
        return _elements(blob, width, 1, 1, what)[0]
    if header & DELTA:
        if len(blob) != 9 + width * (n - 1):
            raise CodecError(f"{what}: {len(blob)} bytes do not hold {n} delta-coded elements")
        first = _elements(blob[:9], 8, 1, 1, what)[0]
        if index == 0:
            return first
        return first + sum(_elements(blob[: 9 + width * index], width, 9, index, what))
    if len(blob) != 1 + width * n:
        raise CodecError(f"{what}: {len(blob)} bytes do not hold {n} element(s) of {width}")
    return _elements(blob[: 1 + width * (index + 1)], width, 1, index + 1, what)[index]


def row_columns(
    slots: Sequence[int], vals: bytes, nulls: bytes | None, status: bytes | None
) -> tuple[list[int | None], list[int | None]]:
    """A day row's values and statuses for its present ``slots``, None where the meter sent
    null-data or no status: the one decoding of a row that writes, reads and exports share."""
    n = len(slots)
    values: list[int | None] = list(unpack_ints(vals, n, "interval_days.vals"))
    if nulls:
        null_bits = bitmap_int(nulls)
        values = [None if null_bits >> s & 1 else v for s, v in zip(slots, values, strict=True)]
    statuses: list[int | None]
    if status:
        statuses = list(unpack_ints(status, n, "interval_days.status"))
        if -1 in statuses:
            statuses = [None if st == -1 else st for st in statuses]
    else:
        statuses = [None] * n
    return values, statuses
