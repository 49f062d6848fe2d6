"""COSEM value types: OBIS codes, date-time, scaler_unit, profile-generic buffers.

These interpret values that :mod:`protocols.axdr` decoded; malformed peer data
raises :class:`~protocols.errors.DecodeError`, wrong arguments from our own code
raise ``ValueError``/``TypeError``.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple

from protocols.axdr import DateTimeValue
from protocols.enums import InterfaceClass
from protocols.errors import DecodeError

__all__ = [
    "CLOCK_CLASS_ID",
    "STATUS_DAYLIGHT_SAVING",
    "STATUS_DIFFERENT_BASE",
    "STATUS_DOUBTFUL",
    "STATUS_INVALID",
    "STATUS_INVALID_STATUS",
    "UNIT_NAMES",
    "CosemDateTime",
    "Obis",
    "ProfileColumn",
    "ProfileRow",
    "ScalerUnit",
    "clock_stamp",
    "parse_capture_objects",
    "profile_rows",
    "scaled_text",
    "unit_text",
]

# ---------------------------------------------------------------------------
# OBIS

_OBIS_SPLIT = re.compile(r"[.:*&-]")


class Obis(NamedTuple):
    """An OBIS code (IEC 62056-6-1), the logical name of a COSEM object."""

    a: int
    b: int
    c: int
    d: int
    e: int
    f: int = 255

    @classmethod
    def parse(cls, text: str) -> Obis:
        """Parse ``1.0.1.8.0.255`` or ``1-0:1.8.0.255`` (``*255`` and a missing F too)."""
        hit = _PARSED.get(text) if cls is Obis else None
        if hit is not None:
            return hit
        parts = _OBIS_SPLIT.split(text.strip())
        if len(parts) not in (5, 6) or not all(p.isdigit() for p in parts):
            raise ValueError(f"not an OBIS code: {text!r}")
        values = [int(p) for p in parts]
        if any(v > 255 for v in values):
            raise ValueError(f"OBIS group above 255: {text!r}")
        obis = cls(*values)
        if cls is Obis and len(_PARSED) < _PARSED_MAX:
            _PARSED[text] = obis
        return obis

    @classmethod
    def from_bytes(cls, data: bytes) -> Obis:
        """Decode the 6-octet logical_name."""
        if len(data) != 6:
            raise DecodeError(f"logical name must be 6 octets, got {len(data)}")
        return cls(*data)

    def __bytes__(self) -> bytes:
        return _octets_of(self)

    def __str__(self) -> str:
        return "%d.%d.%d.%d.%d.%d" % self  # noqa: UP031


#: Codes parsed lately: a collector names the same few objects in every session of a night.
_PARSED: dict[str, Obis] = {}
_PARSED_MAX = 4096


@functools.lru_cache(maxsize=4096)
def _octets_of(obis: tuple[int, ...]) -> bytes:
    """The logical name octets of a code (every request names one)."""
    return bytes(tuple(obis))


# ---------------------------------------------------------------------------
# date-time

STATUS_INVALID = 0x01
STATUS_DOUBTFUL = 0x02
STATUS_DIFFERENT_BASE = 0x04
STATUS_INVALID_STATUS = 0x08
STATUS_DAYLIGHT_SAVING = 0x80

#: month values besides 1..12
MONTH_DST_END = 0xFD
MONTH_DST_BEGIN = 0xFE
#: day-of-month values besides 1..31
DAY_SECOND_LAST = 0xFD
DAY_LAST = 0xFE

_DT = struct.Struct(">HBBBBBBBhB")
_DEVIATION_NOT_SPECIFIED = -0x8000


def _field(value: int, low: int, high: int, name: str, extra: tuple[int, ...] = ()) -> int | None:
    if value == 0xFF:
        return None
    if low <= value <= high or value in extra:
        return value
    raise DecodeError(f"date-time {name} {value:#04x} out of range")


@dataclass(slots=True, frozen=True)
class CosemDateTime:
    """The 12-octet COSEM date-time (Blue Book 4.1.6.1), fields "not specified" as None.

    ``month`` may also be 0xFD/0xFE (daylight savings end/begin) and ``day``
    0xFD/0xFE (second last / last day of month); those only appear in schedules.

    ``deviation`` follows the Blue Book definition "in minutes of local time
    to UTC" (DLMS UA 1000-1 Ed. 12.2, 4.1.6.1, as quoted in
    github.com/UtilitechAS/amsreader-firmware/issues/809, and the Gurux clock
    documentation): UTC = local time + deviation, so Central European Time is
    -60 and CEST -120.  IDIS follows it; some companion specifications (India,
    Saudi Arabia, Italy per Gurux) send the opposite sign, hence the
    ``utc_to_local`` switch of :meth:`to_datetime` / :meth:`from_datetime`.
    """

    year: int | None
    month: int | None
    day: int | None
    weekday: int | None = None
    hour: int | None = None
    minute: int | None = None
    second: int | None = None
    hundredths: int | None = None
    deviation: int | None = None
    clock_status: int | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> CosemDateTime:
        """Decode 12 octets; DecodeError on a wrong size or an out-of-range field."""
        if len(data) != 12:
            raise DecodeError(f"date-time must be 12 octets, got {len(data)}")
        year, month, day, weekday, hour, minute, second, hundredths, deviation, status = _DT.unpack(
            data
        )
        if deviation != _DEVIATION_NOT_SPECIFIED and not -720 <= deviation <= 720:
            raise DecodeError(f"date-time deviation {deviation} outside -720..720")
        return cls(
            None if year == 0xFFFF else year,
            _field(month, 1, 12, "month", (MONTH_DST_END, MONTH_DST_BEGIN)),
            _field(day, 1, 31, "day", (DAY_SECOND_LAST, DAY_LAST)),
            _field(weekday, 1, 7, "weekday"),
            _field(hour, 0, 23, "hour"),
            _field(minute, 0, 59, "minute"),
            _field(second, 0, 59, "second"),
            _field(hundredths, 0, 99, "hundredths"),
            None if deviation == _DEVIATION_NOT_SPECIFIED else deviation,
            None if status == 0xFF else status,
        )

    def to_bytes(self) -> bytes:
        """Encode to 12 octets (None fields as "not specified")."""

        def b(v: int | None) -> int:
            return 0xFF if v is None else v

        try:
            return _DT.pack(
                0xFFFF if self.year is None else self.year,
                b(self.month),
                b(self.day),
                b(self.weekday),
                b(self.hour),
                b(self.minute),
                b(self.second),
                b(self.hundredths),
                _DEVIATION_NOT_SPECIFIED if self.deviation is None else self.deviation,
                b(self.clock_status),
            )
        except struct.error as exc:
            raise ValueError(f"date-time field out of range: {exc}") from None

    @classmethod
    def from_datetime(
        cls, dt: datetime, clock_status: int | None = 0, *, utc_to_local: bool = False
    ) -> CosemDateTime:
        """Build from a datetime; an aware one gives the deviation, a naive one none.

        The daylight-saving status bit is set when ``dt.dst()`` is non-zero.
        """
        deviation: int | None = None
        offset = dt.utcoffset()
        if offset is not None:
            minutes = int(offset.total_seconds() // 60)
            deviation = minutes if utc_to_local else -minutes
            dst = dt.dst()
            if dst and clock_status is not None:
                clock_status |= STATUS_DAYLIGHT_SAVING
        return cls(
            dt.year,
            dt.month,
            dt.day,
            dt.isoweekday(),
            dt.hour,
            dt.minute,
            dt.second,
            dt.microsecond // 10000,
            deviation,
            clock_status,
        )

    def to_datetime(self, *, utc_to_local: bool = False) -> datetime:
        """The instant named: aware if the deviation is given, naive otherwise.

        Unspecified seconds/hundredths count as 0.  DecodeError when the value
        does not name one instant (a wildcard or special date/hour/minute, or
        an impossible date such as 30 February).
        """
        if (
            self.year is None
            or self.month is None
            or self.month > 12
            or self.day is None
            or self.day > 31
            or self.hour is None
            or self.minute is None
        ):
            raise DecodeError(f"date-time {self} does not name a single instant")
        tz = None
        if self.deviation is not None:
            minutes = self.deviation if utc_to_local else -self.deviation
            tz = timezone(timedelta(minutes=minutes))
        try:
            return datetime(
                self.year,
                self.month,
                self.day,
                self.hour,
                self.minute,
                self.second or 0,
                (self.hundredths or 0) * 10000,
                tzinfo=tz,
            )
        except ValueError as exc:
            raise DecodeError(f"date-time {self}: {exc}") from None

    @property
    def daylight_saving_active(self) -> bool:
        return bool(self.clock_status is not None and self.clock_status & STATUS_DAYLIGHT_SAVING)

    @property
    def invalid(self) -> bool:
        """Clock status says the time is invalid or doubtful (don't trust it)."""
        return bool(
            self.clock_status is not None
            and self.clock_status & (STATUS_INVALID | STATUS_DOUBTFUL | STATUS_INVALID_STATUS)
        )


# ---------------------------------------------------------------------------
# scaler_unit

#: Unit enumeration of the Blue Book (DLMS UA 1000-1, "Table: Enumerated values
#: for physical units"); the numbers match gurux_dlms/enums/Unit.py.
UNIT_NAMES: dict[int, str] = {
    1: "a",
    2: "mo",
    3: "wk",
    4: "d",
    5: "h",
    6: "min",
    7: "s",
    8: "°",
    9: "°C",
    10: "currency",
    11: "m",
    12: "m/s",
    13: "m³",
    14: "m³ (corrected)",
    15: "m³/h",
    16: "m³/h (corrected)",
    17: "m³/d",
    18: "m³/d (corrected)",
    19: "l",
    20: "kg",
    21: "N",
    22: "Nm",
    23: "Pa",
    24: "bar",
    25: "J",
    26: "J/h",
    27: "W",
    28: "VA",
    29: "var",
    30: "Wh",
    31: "VAh",
    32: "varh",
    33: "A",
    34: "C",
    35: "V",
    36: "V/m",
    37: "F",
    38: "Ω",
    39: "Ωm²/m",
    40: "Wb",
    41: "T",
    42: "A/m",
    43: "H",
    44: "Hz",
    45: "1/(Wh)",
    46: "1/(varh)",
    47: "1/(VAh)",
    48: "V²h",
    49: "A²h",
    50: "kg/s",
    51: "S",
    52: "K",
    53: "1/(V²h)",
    54: "1/(A²h)",
    55: "1/m³",
    56: "%",
    57: "Ah",
    60: "Wh/m³",
    61: "J/m³",
    62: "Mol %",
    63: "g/m³",
    64: "Pa s",
    65: "J/kg",
    66: "g/cm²",
    67: "atm",
    70: "dBm",
    71: "dBµV",
    72: "dB",
    254: "other",
    255: "count",
}


def unit_text(code: int | None) -> str | None:
    """A unit code as its symbol (``30`` → ``Wh``); an unknown code as ``unit N``, None as None.

    The one spelling of units in every output (the API, ``hes export``), so downstream systems
    never see the same unit written two ways.
    """
    if code is None:
        return None
    return UNIT_NAMES.get(code, f"unit {code}")


def scaled_text(raw: int | None, scaler: int) -> str:
    """The physical value ``raw * 10**scaler`` as exact decimal text: ``12345``, -3 → ``12.345``.

    Exact (no float on the way), so a billing system gets the digits the meter counted;
    None is the empty string (a CSV cell with no value).
    """
    if raw is None:
        return ""
    if scaler == 0:
        return str(raw)
    return format(Decimal(raw).scaleb(scaler), "f")


@dataclass(slots=True, frozen=True)
class ScalerUnit:
    """The scaler_unit attribute of Register-type objects: value = raw * 10^scaler."""

    scaler: int
    unit: int

    @classmethod
    def from_value(cls, value: Any) -> ScalerUnit:
        """From the decoded structure{integer scaler, enum unit}."""
        if (
            not isinstance(value, (tuple, list))
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise DecodeError(f"scaler_unit must be structure{{integer, enum}}, got {value!r}")
        scaler, unit = int(value[0]), int(value[1])
        if not (-128 <= scaler <= 127 and 0 <= unit <= 255):
            raise DecodeError(f"scaler_unit out of range: {value!r}")
        return cls(scaler, unit)

    @property
    def unit_name(self) -> str:
        return UNIT_NAMES.get(self.unit, f"unit {self.unit}")

    def apply(self, raw: int) -> float | int:
        """Scale a raw register value.

        Positive scalers stay exact ints; negative ones divide by an exact power
        of ten, which yields the float nearest to the decimal value (raw * 0.001
        would not: 0.001 is inexact).
        """
        if self.scaler >= 0:
            return raw * 10**self.scaler
        return raw / 10 ** (-self.scaler)

    def decimal(self, raw: int) -> Decimal:
        """Exact scaled value."""
        return Decimal(raw).scaleb(self.scaler)

    def __str__(self) -> str:
        return f"10^{self.scaler} {self.unit_name}"


# ---------------------------------------------------------------------------
# profile generic

#: Interface class of the Clock object.
CLOCK_CLASS_ID = InterfaceClass.CLOCK


@dataclass(slots=True, frozen=True)
class ProfileColumn:
    """One capture object of a Profile generic (class 7, attribute 3)."""

    class_id: int
    obis: Obis
    attribute: int
    data_index: int = 0


def parse_capture_objects(value: Any) -> list[ProfileColumn]:
    """Parse capture_objects: array of structure{long-unsigned class_id,
    octet-string logical_name, integer attribute_index, long-unsigned data_index}.
    """
    if not isinstance(value, list):
        raise DecodeError(f"capture_objects must be an array, got {type(value).__name__}")
    columns: list[ProfileColumn] = []
    for item in value:
        if not isinstance(item, (tuple, list)) or len(item) != 4:
            raise DecodeError(f"capture object must be a 4-element structure, got {item!r}")
        class_id, name, attribute, data_index = item
        if not (
            isinstance(class_id, int)
            and isinstance(name, bytes)
            and isinstance(attribute, int)
            and isinstance(data_index, int)
        ):
            raise DecodeError(f"capture object has wrong element types: {item!r}")
        columns.append(ProfileColumn(class_id, Obis.from_bytes(name), attribute, data_index))
    return columns


class ProfileRow(NamedTuple):
    """One buffer entry with its timestamp (a tuple: a day of a meter makes ~100 of them).

    ``values`` is aligned with the columns; the clock column holds ``timestamp``.
    ``time_filled`` says the meter sent null-data for the clock (compressed
    entry) and the timestamp was computed; ``filled`` lists the value columns
    that were null and carried over from the previous entry.
    """

    timestamp: datetime
    values: tuple[Any, ...]
    clock_status: int | None = None
    time_filled: bool = False
    filled: tuple[int, ...] = ()


def _clock_value(raw: Any) -> CosemDateTime:
    if isinstance(raw, (bytes, DateTimeValue)) and len(raw) == 12:
        return CosemDateTime.from_bytes(raw)
    raise DecodeError(f"clock column holds {raw!r}, not a 12-octet date-time")


#: Decoded clock columns: every meter of a fleet stamps the same quarter-hours, so a
#: collector decodes each stamp once. Bounded (cleared when full); only valid stamps.
_CLOCK_CACHE: dict[tuple[bytes, bool], tuple[datetime, int | None]] = {}
_CLOCK_CACHE_MAX = 8192


def _clock_stamp(raw: Any, utc_to_local: bool) -> tuple[datetime, int | None]:
    # bytes and its DateTimeValue subclass hash and compare alike: no copy needed for the key
    key = (raw, utc_to_local) if isinstance(raw, bytes) else None
    if key is not None:
        hit = _CLOCK_CACHE.get(key)
        if hit is not None:
            return hit
    stamp = _clock_value(raw)
    out = (stamp.to_datetime(utc_to_local=utc_to_local), stamp.clock_status)
    if key is not None:
        if len(_CLOCK_CACHE) >= _CLOCK_CACHE_MAX:
            _CLOCK_CACHE.clear()
        _CLOCK_CACHE[key] = out
    return out


def clock_stamp(raw: Any) -> datetime:
    """The timestamp ``profile_rows`` gives an entry whose clock column holds ``raw`` (aware if
    the meter gave its deviation); DecodeError when ``raw`` is no single-instant date-time."""
    return _clock_stamp(raw, False)[0]


def profile_rows(
    buffer: Any,
    columns: Sequence[ProfileColumn],
    capture_period_s: int,
    clock_column: int = 0,
    *,
    fill_values: bool = True,
    utc_to_local: bool = False,
) -> list[ProfileRow]:
    """Turn a decoded Profile generic buffer into timestamped rows.

    Compression (Blue Book, profile generic buffer): a meter may send null-data
    in the clock column when the entry's time is the previous entry's time plus
    the capture period; the timestamp is then computed that way (a null clock
    in the first entry, or with capture_period 0, is a DecodeError because no
    time can be derived).  Null-data in a value column means "unchanged since
    the previous entry": with ``fill_values`` the previous entry's value is
    carried over (first entry: stays None) and the column index is listed in
    ``ProfileRow.filled``; without it the None is kept.
    """
    if not isinstance(buffer, list):
        raise DecodeError(f"profile buffer must be an array, got {type(buffer).__name__}")
    width = len(columns)
    if not 0 <= clock_column < width:
        raise ValueError(f"clock column {clock_column} outside {width} columns")
    period = timedelta(seconds=capture_period_s)
    rows: list[ProfileRow] = []
    previous_time: datetime | None = None
    previous_values: tuple[Any, ...] | None = None
    for entry in buffer:
        if not isinstance(entry, (tuple, list)) or len(entry) != width:
            raise DecodeError(f"profile entry {entry!r} does not have {width} columns")
        raw_clock = entry[clock_column]
        status: int | None = None
        if raw_clock is None:
            if previous_time is None or capture_period_s <= 0:
                raise DecodeError("compressed profile entry without a time to continue from")
            timestamp = previous_time + period
            time_filled = True
        else:
            timestamp, status = _clock_stamp(raw_clock, utc_to_local)
            time_filled = False
        values = list(entry)
        values[clock_column] = timestamp
        filled: list[int] = []
        if fill_values and previous_values is not None:
            for i, v in enumerate(values):
                if v is None:
                    values[i] = previous_values[i]
                    filled.append(i)
        row_values = tuple(values)
        rows.append(ProfileRow(timestamp, row_values, status, time_filled, tuple(filled)))
        previous_time = timestamp
        previous_values = row_values
    return rows
