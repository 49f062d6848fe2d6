"""COSEM object model of one simulated meter: object list, access rights, profile buffers.

Values are generated on demand from :mod:`simulator.model` for a meter and a meter time; the
only mutable per-meter state is :class:`MeterState` (clock correction, relay). What a request
reads, writes or invokes is :mod:`simulator.attributes`; the profile buffers it answers with
are encoded here, A-XDR ``Data`` bytes.

OBIS codes: clock 0.0.1.0.0.255, logical device name 0.0.42.0.0.255, current association
0.0.40.0.0.255, energy registers 1.0.{1,2,3,4}.8.{0..4}.255 (the project's DLMS notes). Serial
number 0.0.96.1.0.255, disconnect control 0.0.96.3.10.255, maximum demand 1.0.1.6.0.255 and
per-phase instantaneous voltage/current/active power 1.0.32/31/21.7.0.255 (L1), 52/51/41 (L2),
72/71/61 (L3) as in the DSMR P1 telegram explained in github.com/Ondeugd/smeterd
(OBIS-raw-data-explained.md); billing values 98.1.0 as listed in github.com/blietaer/HAiR
doc/ReadMe.md. Standard event log 0.0.99.98.0.255 as in several IDIS clients, where
0.0.99.98.1.255 is the *fraud detection* log, so the power-failure log uses the DSMR/IDIS power
failure event log code 1.0.99.97.0.255 (smeterd, above) instead. AMR profile status
0.0.96.10.1.255 and event code 0.0.96.11.0.255 follow IDIS naming. The frame counter of the
management client's security setup, 0.0.43.1.0.255 (Data, the highest client invocation
counter accepted), is what a secured meter lets its public client read unciphered (Green Book
invocation counter objects 0.0.43.1.e.255), and nothing else.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from protocols import axdr
from protocols.axdr import encode_length
from protocols.cosem import CosemDateTime
from protocols.enums import DataAccessResult, InterfaceClass
from protocols.errors import DecodeError, data_access_error
from protocols.xdlms import AccessSelection, EntryAccess, RangeAccess
from simulator import image_transfer, model, push_setup
from simulator.areas import ORDINARY, Energy

# Data-Access-Result codes and interface classes, by their short names in this module.
SUCCESS = DataAccessResult.SUCCESS
HARDWARE_FAULT = DataAccessResult.HARDWARE_FAULT
TEMPORARY_FAILURE = DataAccessResult.TEMPORARY_FAILURE
READ_WRITE_DENIED = DataAccessResult.READ_WRITE_DENIED
OBJECT_UNDEFINED = DataAccessResult.OBJECT_UNDEFINED
OBJECT_UNAVAILABLE = DataAccessResult.OBJECT_UNAVAILABLE
TYPE_UNMATCHED = DataAccessResult.TYPE_UNMATCHED
SCOPE_OF_ACCESS_VIOLATED = DataAccessResult.SCOPE_OF_ACCESS_VIOLATED
OTHER_REASON = DataAccessResult.OTHER_REASON

DATA = InterfaceClass.DATA
REGISTER = InterfaceClass.REGISTER
EXTENDED_REGISTER = InterfaceClass.EXTENDED_REGISTER
PROFILE_GENERIC = InterfaceClass.PROFILE_GENERIC
CLOCK = InterfaceClass.CLOCK
ASSOCIATION_LN = InterfaceClass.ASSOCIATION_LN
DISCONNECT_CONTROL = InterfaceClass.DISCONNECT_CONTROL
IMAGE_TRANSFER = InterfaceClass.IMAGE_TRANSFER
PUSH_SETUP = InterfaceClass.PUSH_SETUP

# Units (Blue Book unit enumeration).
UNIT_W = 27
UNIT_WH = 30
UNIT_VARH = 32
UNIT_A = 33
UNIT_V = 35

#: Days of 15-minute entries the load profile holds (capacity 62 x 96 entries).
PROFILE_DAYS = 62
#: Daily billing entries held.
BILLING_DAYS = 62
#: Event logs look back this many days and keep at most EVENT_LOG_CAPACITY entries.
EVENT_LOG_DAYS = 180
EVENT_LOG_CAPACITY = 100

# Disconnect control states and mode (Blue Book class 70).
DISCONNECTED = 0
CONNECTED = 1
READY_FOR_RECONNECTION = 2
#: Control mode 2: remote disconnect and remote reconnect (straight to connected).
CONTROL_MODE = 2


def obis(text: str) -> bytes:
    """'1.0.1.8.0.255' → 6 bytes."""
    return bytes(int(p) for p in text.split("."))


OBIS_CLOCK = obis("0.0.1.0.0.255")
OBIS_LDN = obis("0.0.42.0.0.255")
OBIS_SERIAL = obis("0.0.96.1.0.255")
OBIS_STATUS = obis("0.0.96.10.1.255")
OBIS_EVENT_CODE = obis("0.0.96.11.0.255")
OBIS_ASSOCIATION = obis("0.0.40.0.0.255")
OBIS_DISCONNECT = obis("0.0.96.3.10.255")
OBIS_IMAGE_TRANSFER = obis("0.0.44.0.0.255")
OBIS_FIRMWARE_ID = obis("1.0.0.2.0.255")
OBIS_A_PLUS = obis("1.0.1.8.0.255")
OBIS_A_MINUS = obis("1.0.2.8.0.255")
OBIS_R_PLUS = obis("1.0.3.8.0.255")
OBIS_R_MINUS = obis("1.0.4.8.0.255")
OBIS_A_PLUS_TARIFF = tuple(obis(f"1.0.1.8.{k}.255") for k in (1, 2, 3, 4))
OBIS_MAX_DEMAND = obis("1.0.1.6.0.255")
OBIS_LOAD_PROFILE = obis("1.0.99.1.0.255")
OBIS_BILLING = obis("1.0.98.1.0.255")
OBIS_EVENT_LOG = obis("0.0.99.98.0.255")
OBIS_POWER_FAILURE_LOG = obis("1.0.99.97.0.255")
OBIS_FRAME_COUNTER = obis("0.0.43.1.0.255")
#: What the public client of a secured meter may read without ciphering.
SECURED_PUBLIC_READ = frozenset({OBIS_LDN, OBIS_FRAME_COUNTER})
#: (voltage, current, power) OBIS per phase.
OBIS_PHASE = tuple(
    (obis(f"1.0.{v}.7.0.255"), obis(f"1.0.{i}.7.0.255"), obis(f"1.0.{p}.7.0.255"))
    for v, i, p in ((32, 31, 21), (52, 51, 41), (72, 71, 61))
)

#: Capture object definition: (class_id, logical name, attribute index, data index).
Column = tuple[int, bytes, int, int]

LOAD_PROFILE_COLUMNS: tuple[Column, ...] = (
    (CLOCK, OBIS_CLOCK, 2, 0),
    (DATA, OBIS_STATUS, 2, 0),
    (REGISTER, OBIS_A_PLUS, 2, 0),
    (REGISTER, OBIS_A_MINUS, 2, 0),
    (REGISTER, OBIS_R_PLUS, 2, 0),
    (REGISTER, OBIS_R_MINUS, 2, 0),
)
BILLING_COLUMNS: tuple[Column, ...] = (
    (CLOCK, OBIS_CLOCK, 2, 0),
    (REGISTER, OBIS_A_PLUS, 2, 0),
    *((REGISTER, o, 2, 0) for o in OBIS_A_PLUS_TARIFF),
    (REGISTER, OBIS_A_MINUS, 2, 0),
    (REGISTER, OBIS_R_PLUS, 2, 0),
    (REGISTER, OBIS_R_MINUS, 2, 0),
)
EVENT_COLUMNS: tuple[Column, ...] = ((CLOCK, OBIS_CLOCK, 2, 0), (DATA, OBIS_EVENT_CODE, 2, 0))

_DT = struct.Struct(">HBBBBBBBhB")


def datetime_bytes(t: float) -> bytes:
    """12-byte COSEM date-time of unix time t in UTC (deviation 0, status OK)."""
    it = int(t // 1)
    tm = time.gmtime(it)
    hundredths = int((t - it) * 100)
    return _DT.pack(
        tm.tm_year,
        tm.tm_mon,
        tm.tm_mday,
        tm.tm_wday + 1,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        hundredths,
        0,
        0,
    )


def datetime_unix(raw: bytes) -> float:
    """Unix time named by a 12-byte date-time; naive ones count as meter time (UTC).

    Raises DecodeError when the bytes do not name one instant.
    """
    dt = CosemDateTime.from_bytes(raw).to_datetime()
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(slots=True)
class MeterState:
    """The mutable part of a meter: clock correction, the relay, firmware and image transfer.

    Neither feeds back into :mod:`simulator.model`: the ground truth stays a pure function of
    (meter id, meter time, seed), so an open relay does not stop the modelled consumption.
    """

    clock_offset: float = 0.0
    control_state: int = CONNECTED
    #: Highest client invocation counter accepted (suite 0); -1 before the first.
    client_invocation_counter: int = -1
    #: Next invocation counter the meter ciphers with.
    server_invocation_counter: int = 0
    #: Active firmware and the image transfer object (``simulator.image_transfer``).
    firmware: image_transfer.Firmware = field(default_factory=image_transfer.Firmware)
    #: Push setups the head-end changed (``simulator.push_setup``), by logical name.
    push_setups: dict[bytes, push_setup.PushSetupState] = field(default_factory=dict)

    @property
    def output_state(self) -> bool:
        return self.control_state == CONNECTED


@dataclass(slots=True, frozen=True)
class CosemObject:
    """One object of the model and its access rights.

    Attributes 1..``attributes`` exist and methods 1..``methods``. The public client may read
    every attribute when ``public_read`` (except those in ``hidden``); the management client may
    read every attribute (except ``hidden``), write ``writable`` and invoke ``invocable``.
    """

    class_id: int
    version: int
    obis: bytes
    attributes: int
    methods: int = 0
    public_read: bool = True
    writable: frozenset[int] = frozenset()
    invocable: frozenset[int] = frozenset()
    hidden: frozenset[int] = frozenset()
    selective: frozenset[int] = frozenset()

    def can_read(self, attribute: int, management: bool) -> bool:
        if attribute in self.hidden:
            return False
        return management or self.public_read

    def can_write(self, attribute: int, management: bool) -> bool:
        return management and attribute in self.writable

    def can_invoke(self, method: int, management: bool) -> bool:
        return management and method in self.invocable


def object_table(phases: int) -> dict[bytes, CosemObject]:
    """The meter's objects by logical name (L2/L3 instantaneous objects only if polyphase)."""
    return _TABLES[1 if phases == 1 else 3]


def _build_table(phases: int) -> dict[bytes, CosemObject]:
    objs: list[CosemObject] = [
        CosemObject(ASSOCIATION_LN, 1, OBIS_ASSOCIATION, 8, 0, hidden=frozenset({7})),
        CosemObject(DATA, 0, OBIS_LDN, 2),
        CosemObject(DATA, 0, OBIS_SERIAL, 2),
        CosemObject(DATA, 0, OBIS_FIRMWARE_ID, 2),
        CosemObject(
            CLOCK,
            0,
            OBIS_CLOCK,
            9,
            6,
            writable=frozenset({2}),
            invocable=frozenset({1, 3, 6}),
        ),
        CosemObject(DATA, 0, OBIS_STATUS, 2),
        CosemObject(DATA, 0, OBIS_EVENT_CODE, 2),
        CosemObject(REGISTER, 0, OBIS_A_PLUS, 3, 1),
        *(CosemObject(REGISTER, 0, o, 3, 1) for o in OBIS_A_PLUS_TARIFF),
        CosemObject(REGISTER, 0, OBIS_A_MINUS, 3, 1),
        CosemObject(REGISTER, 0, OBIS_R_PLUS, 3, 1),
        CosemObject(REGISTER, 0, OBIS_R_MINUS, 3, 1),
        CosemObject(EXTENDED_REGISTER, 0, OBIS_MAX_DEMAND, 5, 1),
    ]
    for p in range(phases):
        objs.extend(CosemObject(REGISTER, 0, o, 3, 1) for o in OBIS_PHASE[p])
    for name, public in (
        (OBIS_LOAD_PROFILE, True),
        (OBIS_BILLING, True),
        (OBIS_EVENT_LOG, False),
        (OBIS_POWER_FAILURE_LOG, False),
    ):
        objs.append(
            CosemObject(
                PROFILE_GENERIC, 1, name, 8, 2, public_read=public, selective=frozenset({2})
            )
        )
    objs.append(
        CosemObject(DISCONNECT_CONTROL, 0, OBIS_DISCONNECT, 4, 2, invocable=frozenset({1, 2}))
    )
    objs.append(
        CosemObject(
            IMAGE_TRANSFER, 0, OBIS_IMAGE_TRANSFER, 7, 4, False, invocable=frozenset({1, 2, 3, 4})
        )
    )
    objs.extend(
        CosemObject(
            PUSH_SETUP, 0, name, 7, 1, False, frozenset(range(2, 8)), invocable=frozenset({1})
        )
        for name in push_setup.NAMES
    )
    objs.append(CosemObject(DATA, 0, OBIS_FRAME_COUNTER, 2))
    return {o.obis: o for o in objs}


_TABLES = {1: _build_table(1), 3: _build_table(3)}


# ---------------------------------------------------------------------------------------------
# Encoders


def enc(value: Any) -> bytes:
    return axdr.encode(value)


def scaler_unit(scaler: int, unit: int) -> bytes:
    return enc(axdr.structure(axdr.i8(scaler), axdr.enum(unit)))


def columns_value(columns: Sequence[Column]) -> bytes:
    return enc(
        [
            axdr.structure(axdr.u16(c), axdr.octets(o), axdr.i8(a), axdr.u16(i))
            for c, o, a, i in columns
        ]
    )


#: The kinds of cell a profile buffer holds: the clock (an octet-string of a 12-byte
#: date-time), an unsigned and a long64-unsigned.
CellKind = Literal["dt", "u8", "u64"]
_CELL_TAG = {"u8": axdr.UNSIGNED, "u64": axdr.LONG64_UNSIGNED}


@lru_cache(maxsize=16384)
def _stamp_bytes(t: int) -> bytes:
    """A capture stamp's date-time; every meter's buffer holds the same few thousand."""
    return datetime_bytes(t)


@lru_cache(maxsize=64)
def _row_dtype(kinds: tuple[CellKind, ...]) -> np.dtype[Any]:
    """One buffer entry as A-XDR, as a record: structure tag and count, then per cell its
    type tag (and length) and the big-endian value."""
    fields: list[tuple[str, str]] = [("tag", "u1"), ("count", "u1")]
    for i, kind in enumerate(kinds):
        if kind == "dt":
            fields += [(f"t{i}", "u1"), (f"n{i}", "u1"), (f"v{i}", "S12")]
        else:
            fields += [(f"t{i}", "u1"), (f"v{i}", "u1" if kind == "u8" else ">u8")]
    return np.dtype(fields)


def _encode_rows(
    rows: Sequence[tuple[int, ...]], kinds: Sequence[CellKind], picks: Sequence[int]
) -> bytes:
    """Buffer array of rows, keeping the columns at ``picks``: the hot path of every profile
    read, so the entries are laid out as one NumPy record array instead of cell by cell."""
    head = b"\x01" + encode_length(len(rows))
    if not rows:
        return head
    chosen = tuple(kinds[p] for p in picks)
    out = np.empty(len(rows), _row_dtype(chosen))
    out["tag"] = axdr.STRUCTURE
    out["count"] = len(picks)
    columns = list(zip(*rows, strict=True))
    for i, (p, kind) in enumerate(zip(picks, chosen, strict=True)):
        if kind == "dt":
            out[f"t{i}"], out[f"n{i}"] = axdr.OCTET_STRING, 12
            out[f"v{i}"] = [_stamp_bytes(int(t)) for t in columns[p]]
        else:
            out[f"t{i}"] = _CELL_TAG[kind]
            out[f"v{i}"] = columns[p]
    return head + out.tobytes()


_LP_CELLS: tuple[CellKind, ...] = ("dt", "u8", "u64", "u64", "u64", "u64")
_BILLING_CELLS: tuple[CellKind, ...] = ("dt",) + ("u64",) * 8
_EVENT_CELLS: tuple[CellKind, ...] = ("dt", "u8")


# ---------------------------------------------------------------------------------------------
# Profiles


@dataclass(slots=True, frozen=True)
class _Profile:
    columns: tuple[Column, ...]
    cells: tuple[CellKind, ...]
    period: int
    capacity: int


PROFILES = {
    OBIS_LOAD_PROFILE: _Profile(
        LOAD_PROFILE_COLUMNS, _LP_CELLS, model.INTERVAL, PROFILE_DAYS * model.INTERVALS_PER_DAY
    ),
    OBIS_BILLING: _Profile(BILLING_COLUMNS, _BILLING_CELLS, model.DAY, BILLING_DAYS),
    OBIS_EVENT_LOG: _Profile(EVENT_COLUMNS, _EVENT_CELLS, 0, EVENT_LOG_CAPACITY),
    OBIS_POWER_FAILURE_LOG: _Profile(EVENT_COLUMNS, _EVENT_CELLS, 0, EVENT_LOG_CAPACITY),
}


def profile_rows(
    spec: model.MeterSpec,
    name: bytes,
    t: float,
    start: float | None = None,
    end: float | None = None,
    energy: Energy = ORDINARY,
) -> list[tuple[int, ...]]:
    """Buffer entries of profile ``name`` at meter time t, optionally only start <= ts <= end
    (energy values as ``energy`` registers them)."""
    now = int(t)
    if name == OBIS_LOAD_PROFILE:
        lo = now - PROFILE_DAYS * model.DAY + 1
        hi = now + 1
    elif name == OBIS_BILLING:
        lo = now - BILLING_DAYS * model.DAY + 1
        hi = now + 1
    else:
        lo = now - EVENT_LOG_DAYS * model.DAY
        hi = now + 1
    lo = max(lo, model.EPOCH)
    hi = min(hi, model.LAST_TIME)
    if name in (OBIS_EVENT_LOG, OBIS_POWER_FAILURE_LOG):
        fn = model.events if name == OBIS_EVENT_LOG else model.power_events
        rows: list[tuple[int, ...]] = []
        rows.extend(fn(spec, lo, hi)[-EVENT_LOG_CAPACITY:])
        if start is not None and end is not None:
            rows = [r for r in rows if start <= r[0] <= end]
        return rows
    if start is not None and end is not None:
        lo = max(lo, int(-(-start // 1)))
        hi = min(hi, int(end // 1) + 1)
    if hi <= lo:
        return []
    if name == OBIS_LOAD_PROFILE:
        return list(energy.load_profile(spec, lo, hi))
    return list(energy.billing(spec, lo, hi))


def _load_profile_count(spec: model.MeterSpec, t: float) -> int:
    """Entries in use without generating them: intervals in the window minus outage gaps."""
    now = int(t)
    lo = max(now - PROFILE_DAYS * model.DAY + 1, model.EPOCH)
    first = -(-lo // model.INTERVAL) * model.INTERVAL
    if first > now:
        return 0
    n = (now - first) // model.INTERVAL + 1
    for d in range((first - model.EPOCH) // model.DAY, (now - model.EPOCH) // model.DAY + 1):
        o = model.outage(spec, d)
        if o is None:
            continue
        a = max(o[0], first)
        b = min(o[1], now + 1)
        if b > a:
            n -= (b - 1) // model.INTERVAL - (a - 1) // model.INTERVAL
    return n


def entries_in_use(spec: model.MeterSpec, name: bytes, t: float, energy: Energy) -> int:
    if name == OBIS_LOAD_PROFILE:
        return _load_profile_count(spec, t)
    return len(profile_rows(spec, name, t, energy=energy))


def _select_columns(profile: _Profile, access: AccessSelection | None) -> list[int]:
    width = len(profile.columns)
    if isinstance(access, EntryAccess):
        first = access.from_column
        last = access.to_column or width
        if first < 1 or last > width or first > last:
            raise data_access_error(SCOPE_OF_ACCESS_VIOLATED, "entry descriptor columns")
        return list(range(first - 1, last))
    if isinstance(access, RangeAccess) and access.selected_columns:
        picks = []
        for col in access.selected_columns:
            key = (col.class_id, bytes(col.obis), col.attribute, col.data_index)
            try:
                picks.append(profile.columns.index(key))
            except ValueError:
                raise data_access_error(SCOPE_OF_ACCESS_VIOLATED, "selected column") from None
        return picks
    return list(range(width))


def profile_buffer(
    spec: model.MeterSpec,
    name: bytes,
    t: float,
    access: AccessSelection | None,
    energy: Energy = ORDINARY,
) -> bytes:
    """Encoded buffer attribute with optional selective access (range on clock, or entries)."""
    profile = PROFILES[name]
    picks = _select_columns(profile, access)
    if isinstance(access, RangeAccess):
        r = access.restricting
        if (r.class_id, bytes(r.obis), r.attribute) != (CLOCK, OBIS_CLOCK, 2):
            raise data_access_error(SCOPE_OF_ACCESS_VIOLATED, "range restricting object")
        try:
            start = datetime_unix(bytes(access.from_value))
            end = datetime_unix(bytes(access.to_value))
        except DecodeError:
            raise data_access_error(SCOPE_OF_ACCESS_VIOLATED, "range bounds") from None
        rows = profile_rows(spec, name, t, start, end, energy) if start <= end else []
    elif isinstance(access, EntryAccess):
        if access.from_entry < 1 or (access.to_entry and access.to_entry < access.from_entry):
            raise data_access_error(SCOPE_OF_ACCESS_VIOLATED, "entry descriptor entries")
        rows = profile_rows(spec, name, t, energy=energy)
        rows = rows[access.from_entry - 1 : access.to_entry or len(rows)]
    else:
        rows = profile_rows(spec, name, t, energy=energy)
    return _encode_rows(rows, profile.cells, picks)
