"""The day-row byte formats: exact vectors, round trips, and malformed bytes refused by name."""

from __future__ import annotations

from array import array
from itertools import accumulate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.interval_codec import (
    CONSTANT,
    DELTA,
    INT64_MAX,
    INT64_MIN,
    CodecError,
    bitmap_bytes,
    bitmap_int,
    bits_of,
    element_at,
    pack_ints,
    pack_many,
    slots_of,
    unpack_ints,
)

int64 = st.integers(INT64_MIN, INT64_MAX)


def test_vectors() -> None:
    # The formats of storage/interval_codec.py's docstring, byte for byte.
    assert pack_ints([]) == b""
    assert pack_ints([7, 7, 7]) == bytes([1 | CONSTANT, 7])
    assert pack_ints([-1, -1]) == bytes([1 | CONSTANT, 0xFF])
    assert pack_ints([1, 300]) == bytes([2, 1, 0, 0x2C, 0x01])
    # a cumulative register: 8-byte first value, then one-byte differences
    assert pack_ints([1_000_000, 1_000_005, 1_000_003], delta=True) == (
        bytes([1 | DELTA]) + (1_000_000).to_bytes(8, "little") + bytes([5, 0xFE])
    )
    # differences that would need 8 bytes anyway: plain elements
    assert pack_ints([INT64_MIN, INT64_MAX], delta=True) == bytes([8]) + (
        INT64_MIN.to_bytes(8, "little", signed=True) + INT64_MAX.to_bytes(8, "little", signed=True)
    )
    assert bitmap_bytes(bits_of([0, 9, 95]), 96) == bytes([1, 2] + [0] * 9 + [0x80])
    assert slots_of(bytes([0x81, 0, 1])) == [0, 7, 16]


@given(st.lists(int64, max_size=200), st.booleans())
def test_integer_arrays_round_trip(values: list[int], delta: bool) -> None:
    assert unpack_ints(pack_ints(values, delta=delta), len(values)) == values


@given(st.lists(st.integers(0, 1_000_000), min_size=2, max_size=96))
def test_a_growing_register_packs_small(steps: list[int]) -> None:
    values = [1_000_000_000 + sum(steps[:i]) for i in range(len(steps))]
    packed = pack_ints(values, delta=True)
    assert len(packed) <= 9 + 4 * (len(values) - 1)
    assert unpack_ints(packed, len(values)) == values


@given(st.sets(st.integers(0, 1439)))
def test_bitmaps_round_trip(slots: set[int]) -> None:
    blob = bitmap_bytes(bits_of(sorted(slots)), 1440)
    assert len(blob) == 180
    assert slots_of(blob) == sorted(slots)
    assert bitmap_int(blob) == bits_of(sorted(slots))


def test_beyond_64_bits_is_refused() -> None:
    with pytest.raises(OverflowError, match="beyond 64 bits"):
        pack_ints([0, 2**63])


@pytest.mark.parametrize(
    ("blob", "n", "message"),
    [
        (b"", 3, "empty, but 3 element"),
        (bytes([3, 1, 2, 3]), 1, "invalid header byte 0x03"),
        (bytes([1 | DELTA | CONSTANT, 1]), 1, "invalid header byte 0x31"),
        (bytes([0x41, 1]), 1, "invalid header byte 0x41"),
        (bytes([2, 1, 0, 2]), 2, "4 bytes do not hold 2 element"),
        (bytes([1 | DELTA, 1]), 2, "too short for a delta-coded array"),
        (bytes([1, 5]), 0, "where no element is expected"),
        (bytes([1 | DELTA]) + INT64_MAX.to_bytes(8, "little") + bytes([1]), 2, "past 64 bits"),
    ],
)
def test_malformed_arrays_are_named(blob: bytes, n: int, message: str) -> None:
    with pytest.raises(CodecError, match=message) as info:
        unpack_ints(blob, n, "interval_days.vals")
    assert "interval_days.vals" in str(info.value)


@given(st.binary(max_size=64), st.integers(0, 40))
def test_any_bytes_decode_or_fail_cleanly(blob: bytes, n: int) -> None:
    try:
        out = unpack_ints(blob, n)
    except CodecError:
        return
    assert len(out) == n
    assert all(INT64_MIN <= v <= INT64_MAX for v in out)


@given(st.lists(int64, min_size=1, max_size=120), st.booleans(), st.data())
def test_one_element_reads_as_the_whole_array_has_it(
    values: list[int], delta: bool, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(values) - 1))
    assert element_at(pack_ints(values, delta=delta), len(values), index) == values[index]


def test_one_element_of_a_malformed_array_is_named() -> None:
    with pytest.raises(CodecError, match="element 3 of 3"):
        element_at(pack_ints([1, 2, 3]), 3, 3)
    with pytest.raises(CodecError, match="do not hold 3 delta-coded"):
        element_at(pack_ints([1, 2, 3], delta=True)[:-1], 3, 1)


@given(
    st.lists(
        st.one_of(
            st.lists(int64, min_size=1, max_size=30),
            st.lists(st.integers(-3, 3), min_size=1, max_size=30),
            st.tuples(int64, st.integers(1, 30)).map(lambda t: [t[0]] * t[1]),
            st.tuples(
                st.integers(-(2**62), 2**62), st.lists(st.integers(-70_000, 70_000), max_size=30)
            ).map(lambda t: list(accumulate(t[1], initial=t[0]))),
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_a_batch_packs_as_row_by_row(rows: list[list[int]], delta: bool) -> None:
    packed = pack_many([array("q", r) for r in rows], delta=delta)
    assert packed == [pack_ints(r, delta=delta) for r in rows]
    blanked = pack_many([array("q", r) for r in rows], delta=delta, blank=-1)
    assert blanked == [None if set(r) == {-1} else pack_ints(r, delta=delta) for r in rows]


def test_a_batch_of_empty_rows_is_refused() -> None:
    assert pack_many([]) == []
    with pytest.raises(ValueError, match="non-empty"):
        pack_many([array("q", [1]), array("q")])
