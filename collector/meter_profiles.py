"""Meter profiles: what one manufacturer's model needs, in a TOML file of its own.

A profile holds the settings that come with a model rather than with one installed meter:
client SAPs, logical device, HDLC address size and frame sizes, the start-up before HDLC,
the sign of the clock's deviation, which departures from the usual encoding to accept, and
which profile columns carry which channel. The inventory names a profile per meter
(``profile`` column); an explicit inventory value wins over the profile's. Profiles are
looked up by name in the shipped directory (``collector/profiles/``, package data) and in
directories the caller adds; ``docs/meter-profiles.md`` describes every key.

Every key is checked: an unknown key or a value of the wrong type raises
:class:`MeterProfileError` naming the file, the dotted key and what was expected.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from collector.toml_table import TomlTable, kind_of
from contracts.meters import STARTUPS
from protocols.cosem import CosemDateTime, Obis
from protocols.errors import DecodeError
from protocols.hdlc import MAX_INFO_LENGTH
from protocols.xdlms.gbt import MAX_GBT_WINDOW
from protocols.xdlms.server import MIN_CLIENT_PDU

#: The directory of the profiles shipped with hes (package data).
SHIPPED_DIR = Path(__file__).with_name("profiles")
#: The sign of a meter's clock deviation. ``dlms``: the Blue Book's (UTC = local time +
#: deviation, CET is -60); ``inverted``: the opposite (CET is +60), as some companion
#: specifications send it.
CLOCK_CONVENTIONS = ("dlms", "inverted")
#: How a profile range read names its bounds. ``utc``: as UTC, deviation 0 (the usual);
#: ``unspecified``: the same wall time with the deviation "not specified" (0x8000), for
#: meters whose range reads match nothing when the bounds carry a deviation.
RANGE_BOUNDS = ("utc", "unspecified")
#: What a mode E profile sends as the sign-on's device address: the meter id, or nothing.
DEVICE_ADDRESSES = ("meter_id", "none")
ADDRESS_SIZES = (0, 1, 2, 4)
#: How the model names its objects: logical names (GET/SET) or short names (Read/Write by
#: base name, mapped through the meter's SN object list).
REFERENCING = ("ln", "sn")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class MeterProfileError(ValueError):
    """A meter profile was rejected or not found; the message names the file and key."""


@dataclass(slots=True, frozen=True)
class ChannelMap:
    """Which objects carry which channel on this model: the load profile, its capture
    columns mapped to channel names (OBIS), the status column, the registers to read."""

    profile_obis: str
    columns: dict[int, str]
    status_column: int | None = None
    registers: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class MeterProfile:
    """One model's settings; the defaults are those of a meter that needs none."""

    name: str
    source: str
    manufacturer: str = ""
    model: str = ""
    public_client_sap: int = 16
    management_client_sap: int = 1
    logical_address: int = 1
    max_pdu_size: int = 0xFFFF
    #: General block transfer: GBT blocks received at once (0: GBT not proposed).
    gbt_window: int = 0
    #: ``ln`` (logical-name GET/SET) or ``sn`` (short-name Read/Write through the object list).
    referencing: str = "ln"
    address_size: int = 0
    #: The physical address the model answers at when nothing else gives one (bench).
    physical_address: int | None = None
    max_info_tx: int = 128
    max_info_rx: int = 128
    window_size: int = 1
    startup: str = "hdlc"
    device_address: str = "meter_id"
    clock_deviation: str = "dlms"
    range_bounds: str = "utc"
    #: Accept bytes after a GET value (kept as a warning); false makes them an error.
    accept_trailing_bytes: bool = True
    channels: ChannelMap | None = None

    @property
    def inverted_deviation(self) -> bool:
        """Whether the meter's clock deviation has the sign opposite to the Blue Book's
        (``collector.session.Session`` turns it round)."""
        return self.clock_deviation == "inverted"

    @property
    def range_deviation(self) -> bool:
        """Whether range reads send their bounds with a deviation (``range_bounds = "utc"``)."""
        return self.range_bounds == "utc"


def blue_book_clock(clock: CosemDateTime, inverted: bool) -> CosemDateTime:
    """``clock`` with its deviation in the Blue Book's sign (UTC = local time + deviation),
    from a meter that sends it inverted when ``inverted``."""
    if not inverted or clock.deviation is None:
        return clock
    return dataclasses.replace(clock, deviation=-clock.deviation)


def _obis(table: TomlTable, name: str, text: str) -> str:
    try:
        return str(Obis.parse(text))
    except (DecodeError, ValueError) as exc:
        raise table.fail(name, f"{text!r} is not an OBIS code ({exc})") from None


def _channels(table: TomlTable) -> ChannelMap | None:
    if not table.table:
        table.done()
        return None
    obis = _obis(table, "profile", table.get("profile", str, "1.0.99.1.0.255"))
    status = table.get("status_column", int, None)
    if status is not None and not 0 <= status <= 255:
        raise table.fail("status_column", f"{status} outside 0..255")
    registers: list[str] = []
    for i, item in enumerate(table.get("registers", list, [])):
        if not isinstance(item, str):
            raise table.fail(f"registers[{i}]", f"expected an OBIS string, got {kind_of(item)}")
        registers.append(_obis(table, f"registers[{i}]", item))
    cols = table.sub("columns")
    columns: dict[int, str] = {}
    for key, value in cols.table.items():
        cols.used.add(key)
        if not key.isdigit() or not 0 <= int(key) <= 255:
            raise cols.fail(key, "expected a capture column index 0..255 as the key")
        if not isinstance(value, str):
            raise cols.fail(key, f"expected a channel OBIS string, got {kind_of(value)}")
        channel = _obis(cols, key, value)
        if int(key) == status:
            raise cols.fail(key, "this column is the status_column")
        if channel in columns.values():
            raise cols.fail(key, f"channel {channel} mapped twice")
        columns[int(key)] = channel
    if not columns:
        raise table.fail("columns", "missing table: map at least one capture column")
    table.done()
    return ChannelMap(obis, dict(sorted(columns.items())), status, tuple(registers))


def parse_profile(text: str, source: str, name: str | None = None) -> MeterProfile:
    """A profile from TOML text; MeterProfileError names ``source`` and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MeterProfileError(f"{source}: not valid TOML: {exc}") from None
    root = TomlTable(source, data, "", MeterProfileError)
    meter = root.sub("meter")
    manufacturer = meter.get("manufacturer", str, "")
    model = meter.get("model", str, "")
    meter.done()
    assoc = root.sub("association")
    public = assoc.integer("public_client_sap", 16, 1, 0x7E)
    management = assoc.integer("management_client_sap", 1, 1, 0x7E)
    logical = assoc.integer("logical_address", 1, 1, 0x3FFD)
    pdu = assoc.integer("max_pdu_size", 0xFFFF, MIN_CLIENT_PDU, 0xFFFF)
    referencing = assoc.choice("referencing", "ln", REFERENCING)
    gbt_window = assoc.integer("gbt_window", 0, 0, MAX_GBT_WINDOW)
    if gbt_window and referencing == "sn":
        raise assoc.fail("gbt_window", "general-block-transfer is for LN referencing only")
    assoc.done()
    hdlc = root.sub("hdlc")
    size = hdlc.integer("address_size", 0, 0, 4)
    if size not in ADDRESS_SIZES:
        raise hdlc.fail("address_size", f"{size}: use 0 (smallest that fits), 1, 2 or 4")
    physical = hdlc.get("physical_address", int, None)
    if physical is not None and not 16 <= physical <= 0x3FFD:
        raise hdlc.fail("physical_address", f"{physical} outside 16..{0x3FFD}")
    info_tx = hdlc.integer("max_info_tx", 128, 1, MAX_INFO_LENGTH)
    info_rx = hdlc.integer("max_info_rx", 128, 1, MAX_INFO_LENGTH)
    window = hdlc.integer("window_size", 1, 1, 7)
    hdlc.done()
    start = root.sub("startup")
    mode = start.choice("mode", "hdlc", STARTUPS)
    device_address = start.choice("device_address", "meter_id", DEVICE_ADDRESSES)
    start.done()
    clock = root.sub("clock")
    deviation = clock.choice("deviation", "dlms", CLOCK_CONVENTIONS)
    range_bounds = clock.choice("range_bounds", "utc", RANGE_BOUNDS)
    clock.done()
    accept = root.sub("accept")
    trailing = accept.get("trailing_bytes", bool, True)
    accept.done()
    channels = _channels(root.sub("channels"))
    root.done()
    return MeterProfile(
        name=name if name is not None else Path(source).stem,
        source=source,
        manufacturer=manufacturer,
        model=model,
        public_client_sap=public,
        management_client_sap=management,
        logical_address=logical,
        max_pdu_size=pdu,
        gbt_window=gbt_window,
        referencing=referencing,
        address_size=size,
        physical_address=physical,
        max_info_tx=info_tx,
        max_info_rx=info_rx,
        window_size=window,
        startup=mode,
        device_address=device_address,
        clock_deviation=deviation,
        range_bounds=range_bounds,
        accept_trailing_bytes=trailing,
        channels=channels,
    )


def load_profile(path: str | os.PathLike[str], name: str | None = None) -> MeterProfile:
    """The profile in the file ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise MeterProfileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise MeterProfileError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_profile(text, str(p), name)


def check_name(name: str) -> str:
    """A profile name as the inventory holds it; ValueError says what is wrong."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"profile {name!r} must be 1-64 letters, digits and _.- (a file name without .toml)"
        )
    return name


class ProfileLibrary:
    """Profiles by name: ``NAME.toml`` in the given directories (first wins), then the
    shipped ones; each file read once."""

    def __init__(self, directories: Sequence[str | os.PathLike[str]] = ()) -> None:
        self.directories = [Path(d) for d in directories] + [SHIPPED_DIR]
        self._loaded: dict[str, MeterProfile] = {}

    def names(self) -> list[str]:
        """Every profile name found, sorted."""
        return sorted({p.stem for d in self.directories if d.is_dir() for p in d.glob("*.toml")})

    def get(self, name: str) -> MeterProfile:
        """The profile ``name``; MeterProfileError when no directory holds it."""
        profile = self._loaded.get(name)
        if profile is not None:
            return profile
        check_name(name)
        for directory in self.directories:
            path = directory / f"{name}.toml"
            if path.is_file():
                profile = load_profile(path, name)
                self._loaded[name] = profile
                return profile
        where = ", ".join(str(d) for d in self.directories)
        raise MeterProfileError(
            f"no meter profile {name!r} in {where} (known: {', '.join(self.names()) or 'none'})"
        )
