"""protocols/axdr_columns.py: an array of flat structures decoded into columns gives exactly
the general decoder's values, and anything else is left to it."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import axdr
from protocols.axdr_columns import decode_columns

#: (encoder, values) of every plain cell the column decoder views, and octet-strings.
CELLS: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (axdr.boolean, st.booleans()),
    (axdr.i8, st.integers(-(2**7), 2**7 - 1)),
    (axdr.u8, st.integers(0, 2**8 - 1)),
    (axdr.i16, st.integers(-(2**15), 2**15 - 1)),
    (axdr.u16, st.integers(0, 2**16 - 1)),
    (axdr.i32, st.integers(-(2**31), 2**31 - 1)),
    (axdr.u32, st.integers(0, 2**32 - 1)),
    (axdr.i64, st.integers(-(2**63), 2**63 - 1)),
    (axdr.u64, st.integers(0, 2**64 - 1)),
    (axdr.float32, st.floats(width=32)),
    (axdr.float64, st.floats()),
]


def same(a: Any, b: Any) -> bool:
    """Equal values of the same type (NaN equal to NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


@st.composite
def cell(draw: st.DrawFn, kind: int, octet_length: int) -> Any:
    if kind == len(CELLS):
        return axdr.octets(draw(st.binary(min_size=octet_length, max_size=octet_length)))
    encode, values = CELLS[kind]
    return encode(draw(values))


@st.composite
def table(draw: st.DrawFn) -> tuple[bytes, bool]:
    """An encoded array of structures of one shape (sometimes a row of another: then not
    uniform), maybe with bytes after it."""
    width = draw(st.integers(1, 6))
    kinds = draw(st.lists(st.integers(0, len(CELLS)), min_size=width, max_size=width))
    lengths = draw(st.lists(st.integers(0, 14), min_size=width, max_size=width))
    count = draw(st.integers(0, 12))
    rows = [[draw(cell(k, n)) for k, n in zip(kinds, lengths, strict=True)] for _ in range(count)]
    uniform = True
    if rows and draw(st.booleans()):
        row = draw(st.integers(0, count - 1))
        col = draw(st.integers(0, width - 1))
        rows[row][col] = draw(
            st.sampled_from([axdr.null(), axdr.u16(7), axdr.octets(b"\x01" * 15)])
        )
        uniform = False
    raw = axdr.encode(axdr.array([axdr.structure(*r) for r in rows]))
    return raw + draw(st.binary(max_size=3)), uniform and count >= 2 and width >= 2 and all(lengths)


@settings(max_examples=500, deadline=None)
@given(table())
def test_columns_are_the_decoded_array_transposed(case: tuple[bytes, bool]) -> None:
    raw, plain = case
    got = decode_columns(raw)
    value, pos = axdr.decode_from(raw)
    if plain:
        assert got is not None  # the fast path takes every plain table
    if got is None:
        return
    columns, stop = got
    assert stop == pos
    want = list(zip(*value, strict=True))
    assert len(columns) == len(want)
    for mine, theirs in zip(columns, want, strict=True):
        assert type(mine) is tuple and len(mine) == len(theirs)
        assert all(same(a, b) for a, b in zip(mine, theirs, strict=True))


@given(st.binary(max_size=300), st.integers(0, 4))
def test_any_bytes_give_the_decoders_columns_or_none(raw: bytes, offset: int) -> None:
    got = decode_columns(raw, offset)
    if got is None:
        return
    columns, stop = got
    value, pos = axdr.decode_from(raw, offset)
    assert stop == pos
    want = list(zip(*value, strict=True))
    assert len(columns) == len(want)
    for mine, theirs in zip(columns, want, strict=True):
        assert all(same(a, b) for a, b in zip(mine, theirs, strict=True))


def test_a_profile_buffer_is_decoded_by_columns() -> None:
    """The shape the simulator and real meters send: clock, status, four counters."""
    rows = [
        axdr.structure(axdr.octets(bytes([7, 234, 12, 6, 7, k // 4, 15 * (k % 4), 0, 0, 0, 0, 0])),
                       axdr.u8(0 if k % 3 else 8), *(axdr.u32(1000 * c + k) for c in range(4)))
        for k in range(96)
    ]  # fmt: skip
    raw = axdr.encode(axdr.array(rows))
    got = decode_columns(raw)
    assert got is not None
    columns, stop = got
    assert stop == len(raw)
    assert columns == list(zip(*axdr.decode(raw), strict=True))
    assert columns[2][:3] == (0, 1, 2) and columns[1][:4] == (8, 0, 0, 8)
