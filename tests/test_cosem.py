"""COSEM value types: OBIS, date-time, scaler_unit, capture objects, profile rows."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from dlms_cosem import cosem as their_cosem
from dlms_cosem import enumerations as their_enums
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.time import datetime_from_bytes, datetime_to_bytes
from gurux_dlms.enums.Unit import Unit as GuruxUnit
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import axdr
from protocols.cosem import (
    UNIT_NAMES,
    CosemDateTime,
    Obis,
    ProfileColumn,
    ScalerUnit,
    parse_capture_objects,
    profile_rows,
)
from protocols.errors import DecodeError

# ---------------------------------------------------------------------------
# OBIS


def test_obis_forms() -> None:
    energy = Obis(1, 0, 1, 8, 0, 255)
    assert Obis.parse("1.0.1.8.0.255") == energy
    assert Obis.parse("1-0:1.8.0.255") == energy
    assert Obis.parse("1-0:1.8.0*255") == energy
    assert Obis.parse("1-0:1.8.0") == energy
    assert str(energy) == "1.0.1.8.0.255"
    assert bytes(energy) == b"\x01\x00\x01\x08\x00\xff"
    assert Obis.from_bytes(b"\x00\x00\x01\x00\x00\xff") == Obis(0, 0, 1, 0, 0, 255)


@pytest.mark.parametrize("text", ["", "1.2.3", "1.0.1.8.0.256", "a.b.c.d.e.f", "1.0.1.8.0.255.1"])
def test_obis_parse_errors(text: str) -> None:
    with pytest.raises(ValueError):
        Obis.parse(text)


def test_obis_from_bytes_wrong_size() -> None:
    with pytest.raises(DecodeError):
        Obis.from_bytes(b"\x01\x02")


# ---------------------------------------------------------------------------
# date-time

# Kaifa MA309 meter (Austria) in github.com/UtilitechAS/amsreader-firmware/issues/809:
# captured at 2024-06-15 20:23:45+02:00, fields 20:23:45, deviation -120, DST bit.
KAIFA = bytes.fromhex("07e8060f0614172d00ff8880")


def test_meter_capture_with_ground_truth() -> None:
    stamp = CosemDateTime.from_bytes(KAIFA)
    assert stamp == CosemDateTime(2024, 6, 15, 6, 20, 23, 45, 0, -120, 0x80)
    assert stamp.daylight_saving_active and not stamp.invalid
    assert stamp.to_datetime().astimezone(UTC) == datetime(2024, 6, 15, 18, 23, 45, tzinfo=UTC)
    assert stamp.to_bytes() == KAIFA


# dlms-cosem test-suite, tests/test_time.py: deviation 0xFF88 (-120) is UTC+02:00,
# 0xFFC4 (-60) is UTC+01:00, 0x8000 is "not specified" (naive datetime).
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b"\x07\xe4\x01\x01\xff\x00\x03\x00\x00\xff\x88\xff",
            datetime(2020, 1, 1, 0, 3, tzinfo=timezone(timedelta(hours=2))),
        ),
        (
            b"\x07\xe4\x01\x06\xff\x00\x03\x00\x00\xff\xc4\xff",
            datetime(2020, 1, 6, 0, 3, tzinfo=timezone(timedelta(hours=1))),
        ),
        (b"\x07\xe2\x02\x0c\xff\x00\x00\x00\x00\x80\x00\xff", datetime(2018, 2, 12)),
    ],
)
def test_dlms_cosem_vectors(raw: bytes, expected: datetime) -> None:
    stamp = CosemDateTime.from_bytes(raw)
    assert stamp.weekday is None and stamp.clock_status is None
    got = stamp.to_datetime()
    assert got == expected and (got.tzinfo is None) == (expected.tzinfo is None)
    assert stamp.to_bytes() == raw


def test_not_specified_fields_are_none() -> None:
    stamp = CosemDateTime.from_bytes(bytes.fromhex("ffffffffffffffffff8000ff"))
    assert stamp == CosemDateTime(None, None, None)
    assert stamp.to_bytes() == bytes.fromhex("ffffffffffffffffff8000ff")
    with pytest.raises(DecodeError):
        stamp.to_datetime()


def test_special_schedule_values() -> None:
    # Month 0xFE (DST begin), day 0xFE (last day), Sunday, 02:00.
    stamp = CosemDateTime.from_bytes(bytes.fromhex("fffffefe07020000ff8000ff"))
    assert (stamp.month, stamp.day, stamp.weekday, stamp.hour) == (0xFE, 0xFE, 7, 2)
    with pytest.raises(DecodeError):
        stamp.to_datetime()


@pytest.mark.parametrize(
    "raw",
    [
        "07e80d0f0614172d00ff8880",  # month 13
        "07e8000f0614172d00ff8880",  # month 0
        "07e80620061417 2d00ff8880",  # day 32
        "07e806e0061417 2d00ff8880",  # day 0xE0 reserved
        "07e8060f0814172d00ff8880",  # weekday 8
        "07e8060f0618172d00ff8880",  # hour 24
        "07e8060f06143c2d00ff8880",  # minute 60
        "07e8060f0614173c00ff8880",  # second 60
        "07e8060f0614172d64ff8880",  # hundredths 100
        "07e8060f0614172d0002d180",  # deviation +721
        "07e8060f0614172d00ff88",  # 11 bytes
    ],
)
def test_invalid_date_times(raw: str) -> None:
    with pytest.raises(DecodeError):
        CosemDateTime.from_bytes(bytes.fromhex(raw.replace(" ", "")))


def test_impossible_calendar_date() -> None:
    stamp = CosemDateTime.from_bytes(bytes.fromhex("07e8021e0500000000ffc400"))  # 30 Feb
    with pytest.raises(DecodeError):
        stamp.to_datetime()


def test_utc_to_local_companion_sign() -> None:
    # Companion specs that send UTC-to-local (+60 for CET), per the Gurux clock docs.
    stamp = CosemDateTime(2024, 1, 10, 3, 12, 0, 0, 0, 60, 0)
    assert stamp.to_datetime(utc_to_local=True).utcoffset() == timedelta(hours=1)
    assert stamp.to_datetime().utcoffset() == timedelta(hours=-1)
    dt = datetime(2024, 1, 10, 12, tzinfo=timezone(timedelta(hours=1)))
    assert CosemDateTime.from_datetime(dt, utc_to_local=True).deviation == 60
    assert CosemDateTime.from_datetime(dt).deviation == -60


aware_datetimes = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2089, 12, 31),
    # Deviation 0 is left out: dlms-cosem 25.1.0 reads it as "no timezone" (falsy check).
    timezones=st.integers(-720, 720).filter(bool).map(lambda m: timezone(timedelta(minutes=m))),
).map(lambda d: d.replace(microsecond=d.microsecond // 10000 * 10000))


@settings(max_examples=200, deadline=None)
@given(aware_datetimes)
def test_datetime_round_trip_and_dlms_cosem_cross_check(dt: datetime) -> None:
    stamp = CosemDateTime.from_datetime(dt)
    raw = stamp.to_bytes()
    back = CosemDateTime.from_bytes(raw)
    assert back == stamp and back.to_datetime() == dt
    assert back.weekday == dt.isoweekday()
    # dlms-cosem decodes our bytes to the same instant...
    assert datetime_from_bytes(raw)[0] == dt
    # ...and its encoding equals ours apart from the weekday it leaves unspecified.
    theirs = datetime_to_bytes(dt)
    assert theirs[:4] + theirs[5:] == raw[:4] + raw[5:]
    assert CosemDateTime.from_bytes(theirs).to_datetime() == dt


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=12))
def test_arbitrary_date_time_bytes(raw: bytes) -> None:
    try:
        stamp = CosemDateTime.from_bytes(raw)
    except DecodeError:
        return
    assert stamp.to_bytes() == raw
    try:
        stamp.to_datetime()
    except DecodeError:
        pass


def test_naive_from_datetime() -> None:
    stamp = CosemDateTime.from_datetime(datetime(2024, 3, 1, 0, 15))
    assert stamp.deviation is None and stamp.to_bytes()[9:11] == b"\x80\x00"


# ---------------------------------------------------------------------------
# scaler_unit


def test_scaler_unit() -> None:
    value = axdr.decode(bytes.fromhex("02020ffd161e"))  # structure{integer -3, enum 30}
    su = ScalerUnit.from_value(value)
    assert su == ScalerUnit(-3, 30) and su.unit_name == "Wh"
    assert su.apply(12345) == 12.345
    assert su.apply(1) == 0.001
    assert su.decimal(12345) == Decimal("12.345")
    assert ScalerUnit(2, 27).apply(7) == 700 and ScalerUnit(2, 27).unit_name == "W"
    assert str(ScalerUnit(0, 35)) == "10^0 V"
    for bad in [(1,), (1, 2, 3), ("x", 30), (300, 30), None, (True, 30)]:
        with pytest.raises(DecodeError):
            ScalerUnit.from_value(bad)


def test_unit_numbers() -> None:
    # The numbers the collector relies on (Blue Book unit enumeration).
    expected = {
        "Wh": 30,
        "varh": 32,
        "W": 27,
        "var": 29,
        "V": 35,
        "A": 33,
        "Hz": 44,
        "VA": 28,
        "VAh": 31,
        "%": 56,
        "°C": 9,
        "m³": 13,
        "count": 255,
    }
    assert {name: n for n, name in UNIT_NAMES.items() if name in expected} == expected
    # Independent cross-check: every number we name is an enumerated unit in gurux-dlms.
    gurux_values = {u.value for u in GuruxUnit}
    assert set(UNIT_NAMES) - {254, 255} <= gurux_values
    assert GuruxUnit.ACTIVE_ENERGY == 30 and GuruxUnit.REACTIVE_ENERGY == 32
    assert GuruxUnit.FREQUENCY == 44 and GuruxUnit.VOLTAGE == 35 and GuruxUnit.CURRENT == 33


# ---------------------------------------------------------------------------
# capture objects and profile rows

CLOCK = ProfileColumn(8, Obis(0, 0, 1, 0, 0, 255), 2, 0)
STATUS = ProfileColumn(1, Obis(0, 0, 96, 10, 1, 255), 2, 0)
IMPORT = ProfileColumn(3, Obis(1, 0, 1, 8, 0, 255), 2, 0)
EXPORT = ProfileColumn(3, Obis(1, 0, 2, 8, 0, 255), 2, 0)
COLUMNS = [CLOCK, STATUS, IMPORT, EXPORT]


def test_capture_objects_from_dlms_cosem_encoding() -> None:
    theirs = [
        CaptureObject(
            their_cosem.CosemAttribute(
                interface=their_enums.CosemInterface(c.class_id),
                instance=their_cosem.Obis(*c.obis),
                attribute=c.attribute,
            )
        )
        for c in COLUMNS
    ]
    raw = b"\x01\x04" + b"".join(c.to_bytes() for c in theirs)
    assert parse_capture_objects(axdr.decode(raw)) == COLUMNS
    ours = axdr.encode(
        axdr.array(
            axdr.structure(
                axdr.u16(c.class_id), bytes(c.obis), axdr.i8(c.attribute), axdr.u16(c.data_index)
            )
            for c in COLUMNS
        )
    )
    assert ours == raw


@pytest.mark.parametrize(
    "value",
    [None, [(8, b"\x00" * 6, 2)], [(8, b"\x00" * 5, 2, 0)], [(8, "name", 2, 0)], [None]],
)
def test_capture_objects_malformed(value: object) -> None:
    with pytest.raises(DecodeError):
        parse_capture_objects(value)


# dlms-cosem test-suite, tests/test_parsers.py: hourly profile whose entries 2..4
# carry null-data in the clock column (compressed: previous time + capture period).
COMPRESSED_PROFILE = (
    b"\x01\x04\x02\x04\t\x0c\x07\xe3\x0c\x1f\x02\x17\x00\x00\x00\xff\xc4\x00\x11\x06\x06\x00"
    b"\x00\x05\xed\x06\x00\x00\x06T\x02\x04\x00\x11\x06\x06\x00\x00\x05\xed\x06\x00\x00\x06T"
    b"\x02\x04\x00\x11\x06\x06\x00\x00\x05\xed\x06\x00\x00\x06T\x02\x04\x00\x11\x06\x06\x00"
    b"\x00\x05\xed\x06\x00\x00\x06T"
)


def test_compressed_clock_entries() -> None:
    rows = profile_rows(axdr.decode(COMPRESSED_PROFILE), COLUMNS, capture_period_s=3600)
    cet = timezone(timedelta(hours=1))
    start = datetime(2019, 12, 31, 23, 0, tzinfo=cet)
    assert [r.timestamp for r in rows] == [start + timedelta(hours=i) for i in range(4)]
    assert [r.time_filled for r in rows] == [False, True, True, True]
    assert rows[0].clock_status == 0 and rows[1].clock_status is None
    assert all(r.values[1:] == (6, 1517, 1620) for r in rows)
    assert rows[2].values[0] == rows[2].timestamp


def test_null_values_carry_previous_value() -> None:
    stamp = CosemDateTime.from_datetime(datetime(2024, 3, 1, tzinfo=UTC)).to_bytes()
    buffer = [(stamp, 0, 100, 5), (None, None, 110, None), (None, 1, None, None)]
    rows = profile_rows(buffer, COLUMNS, 900)
    assert [r.values[1:] for r in rows] == [(0, 100, 5), (0, 110, 5), (1, 110, 5)]
    assert [r.filled for r in rows] == [(), (1, 3), (2, 3)]
    kept = profile_rows(buffer, COLUMNS, 900, fill_values=False)
    assert kept[2].values[1:] == (1, None, None) and kept[2].filled == ()
    assert kept[2].timestamp == datetime(2024, 3, 1, 0, 30, tzinfo=UTC)


def test_clock_column_elsewhere_and_date_time_tag() -> None:
    stamp = axdr.DateTimeValue(CosemDateTime.from_datetime(datetime(2024, 3, 1, 1)).to_bytes())
    columns = [IMPORT, CLOCK]
    rows = profile_rows([(5, stamp), (6, None)], columns, 60, clock_column=1)
    assert [r.timestamp for r in rows] == [datetime(2024, 3, 1, 1), datetime(2024, 3, 1, 1, 1)]


@pytest.mark.parametrize(
    ("buffer", "period"),
    [
        ([(None, 1, 2, 3)], 900),  # first entry compressed: nothing to continue from
        ("not a list", 900),
        ([(b"\x00" * 12, 1, 2)], 900),  # wrong width
        ([(b"short", 1, 2, 3)], 900),  # clock is not a date-time
        ([(bytes.fromhex("07e80d0f0614172d00ff8880"), 1, 2, 3)], 900),  # month 13
        ([(bytes.fromhex("07e8060f0614172d00ff8880"), 1, 2, 3), (None, 1, 2, 3)], 0),
    ],
)
def test_profile_rows_malformed(buffer: object, period: int) -> None:
    with pytest.raises(DecodeError):
        profile_rows(buffer, COLUMNS, period)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2**32 - 1) | st.none()), max_size=20))
def test_profile_rows_properties(entries: list[tuple[bool, int | None]]) -> None:
    start = datetime(2024, 3, 31, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    first = CosemDateTime.from_datetime(start).to_bytes()
    buffer: list[tuple[bytes | None, int | None]] = []
    for i, (compressed, value) in enumerate(entries):
        clock = (
            None
            if compressed and i
            else CosemDateTime.from_datetime(start + timedelta(minutes=15 * i)).to_bytes()
        )
        buffer.append((clock if i else first, value))
    raw = axdr.encode([(c, None if v is None else axdr.u32(v)) for c, v in buffer])
    rows = profile_rows(axdr.decode(raw), [CLOCK, IMPORT], 900)
    assert [r.timestamp for r in rows] == [
        start + timedelta(minutes=15 * i) for i in range(len(entries))
    ]
    last = None
    for row, (_, value) in zip(rows, entries, strict=True):
        expected = value if value is not None else last
        assert row.values[1] == expected
        last = expected


def test_struct_layout_of_kaifa_vector() -> None:
    assert struct.unpack(">HBBBBBBBhB", KAIFA)[8] == -120
