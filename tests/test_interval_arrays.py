"""The export's block decoder (storage/interval_arrays.py) against the scalar one it must equal
(``interval_read.decode_row``), on random day rows: absent slots, null values, constant, plain
and delta packing (negative deltas, values at the edges of 64 bits), statuses present, absent
and partly unknown; and malformed bytes refused as the scalar decoder refuses them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.interval_arrays import DayArrays, DayRow, decode_rows
from storage.interval_codec import (
    DELTA,
    INT64_MAX,
    INT64_MIN,
    CodecError,
    bitmap_bytes,
    bits_of,
    pack_ints,
)
from storage.interval_read import Entry, decode_row

#: (period_s, slots a day): a two-hourly, an hourly and a 15-minute profile.
GRIDS = ((7200, 12), (3600, 24), (900, 96))


def entries(arrays: DayArrays) -> list[list[Entry]]:
    """The block's entries split back into rows, as decode_row gives them."""
    out: list[list[Entry]] = []
    start = 0
    for count in arrays.counts.tolist():
        row = []
        for i in range(start, start + count):
            value = None if arrays.value_null[i] else int(arrays.value[i])
            status = None if arrays.status_null[i] else int(arrays.status[i])
            row.append((int(arrays.ts_us[i]), value, int(arrays.scaler[i]), status))
        out.append(row)
        start += count
    return out


@st.composite
def layouts(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """(period, day slots, present slots): full days, gaps, and empty rows."""
    period, n_slots = draw(st.sampled_from(GRIDS))
    kind = draw(st.sampled_from(["full", "gaps", "empty"]))
    if kind == "full":
        return period, n_slots, list(range(n_slots))
    if kind == "empty":
        return period, n_slots, []
    slots = draw(st.sets(st.integers(0, n_slots - 1), min_size=1, max_size=n_slots))
    return period, n_slots, sorted(slots)


@st.composite
def day_rows(draw: st.DrawFn, layout: tuple[int, int, list[int]]) -> DayRow:
    """One day row of ``layout`` packed as the writer packs it."""
    period, n_slots, slots = layout
    n = len(slots)
    day = draw(st.integers(-3, 30_000))
    scaler = draw(st.integers(-128, 127))
    base = draw(st.sampled_from([0, -1000, 10**9, INT64_MAX - 10**7, INT64_MIN + 10**7]))
    shape = draw(st.sampled_from(["constant", "register", "random", "wide"]))
    values: list[int]
    if shape == "constant":
        values = [base] * n
    elif shape == "register":  # small steps either way: delta-coded, negative deltas too
        steps = draw(st.lists(st.integers(-300, 70_000), min_size=n, max_size=n))
        values = [base + sum(steps[:i]) for i in range(n)]
    elif shape == "random":
        values = draw(st.lists(st.integers(-(1 << 31), 1 << 31), min_size=n, max_size=n))
    else:
        values = draw(st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=n, max_size=n))
    vals = pack_ints(values, delta=draw(st.booleans()))
    null_slots = draw(st.sets(st.sampled_from(slots))) if slots else set()
    nulls = bitmap_bytes(bits_of(sorted(null_slots)), n_slots) if null_slots else None
    status: bytes | None = None
    if n and draw(st.booleans()):
        codes = draw(
            st.lists(st.sampled_from([0, 0x80, 0x88, 0x02, -1]), min_size=n, max_size=n)
            | st.just([0] * n)
        )
        status = pack_ints(codes)
    present = bitmap_bytes(bits_of(slots), n_slots)
    return (day, period, scaler, present, vals, nulls, status)


@st.composite
def blocks(draw: st.DrawFn) -> list[DayRow]:
    """Rows of a few shared layouts, interleaved (a fleet's rows share their layouts)."""
    shared = draw(st.lists(layouts(), min_size=1, max_size=3))
    picks = draw(st.lists(st.sampled_from(shared), min_size=1, max_size=8))
    return [draw(day_rows(layout)) for layout in picks]


@settings(max_examples=200, deadline=None)
@given(blocks())
def test_block_decoding_equals_the_scalar_decoder(rows: list[DayRow]) -> None:
    assert entries(decode_rows(rows)) == [decode_row(*row) for row in rows]


def test_layouts_interleaved_and_repeated() -> None:
    """Two layouts alternating, so each group's rows are not consecutive in the block."""
    full = bitmap_bytes(bits_of(range(96)), 96)
    gaps = bitmap_bytes(bits_of([0, 5, 95]), 96)
    register = pack_ints([10**6 + 7 * k for k in range(96)], delta=True)
    falling = pack_ints([5, 3, -200], delta=True)
    rows: list[DayRow] = [
        (20_000 + d, 900, -3, full if d % 2 else gaps, register if d % 2 else falling, None, None)
        for d in range(6)
    ]
    rows[3] = (*rows[3][:5], bitmap_bytes(bits_of([4, 95]), 96), pack_ints([0] * 96))
    assert entries(decode_rows(rows)) == [decode_row(*row) for row in rows]


def test_no_rows() -> None:
    arrays = decode_rows([])
    assert len(arrays.counts) == 0 and len(arrays.ts_us) == 0


FULL = bitmap_bytes(bits_of(range(24)), 24)
GOOD = pack_ints(list(range(24)), delta=True)


@pytest.mark.parametrize(
    ("vals", "status", "present"),
    [
        (GOOD[:-1], None, FULL),  # truncated deltas
        (b"", None, FULL),  # values missing
        (bytes([0x43]) + GOOD[1:], None, FULL),  # unknown flag and width
        (GOOD, pack_ints(list(range(23))), FULL),  # statuses for 23 of 24 entries
        (GOOD, None, bitmap_bytes(0, 24)),  # values where no slot is present
        (bytes([8 | DELTA]) + GOOD[1:9] + bytes(8 * 22), None, FULL),  # 8-byte deltas, too few
    ],
)
def test_malformed_rows_raise_as_the_scalar_decoder(
    vals: bytes, status: bytes | None, present: bytes
) -> None:
    row: DayRow = (20_000, 3600, 0, present, vals, None, status)
    with pytest.raises(CodecError) as scalar:
        decode_row(*row)
    with pytest.raises(CodecError) as block:
        decode_rows([row, row])
    assert str(block.value) == str(scalar.value)


def test_eight_byte_deltas_decode_exactly() -> None:
    """Deltas as wide as the values (no writer makes them, the format allows them)."""
    deltas = b"".join((-(1 << 62)).to_bytes(8, "little", signed=True) for _ in range(23))
    vals = bytes([8 | DELTA]) + (INT64_MAX).to_bytes(8, "little", signed=True)[:8]
    row: DayRow = (20_000, 3600, 0, FULL, bytes([8 | DELTA]) + vals[1:] + deltas, None, None)
    with pytest.raises(CodecError, match="past 64 bits"):
        decode_row(*row)
    short = bytes([8 | DELTA]) + (1 << 62).to_bytes(8, "little", signed=True) + deltas[:8]
    row = (20_000, 3600, 0, bitmap_bytes(bits_of([0, 1]), 24), short, None, None)
    assert entries(decode_rows([row])) == [decode_row(*row)]


def test_deltas_past_64_bits_raise_as_the_scalar_decoder() -> None:
    """A first value near the top and positive deltas: the block decoder leaves the group to
    the scalar one, which sees the sum leave 64 bits."""
    vals = bytes([1 | DELTA]) + (INT64_MAX - 5).to_bytes(8, "little", signed=True) + bytes([3] * 23)
    row: DayRow = (20_000, 3600, 0, FULL, vals, None, None)
    with pytest.raises(CodecError, match="past 64 bits"):
        decode_row(*row)
    with pytest.raises(CodecError, match="past 64 bits"):
        decode_rows([row])
