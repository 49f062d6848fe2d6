"""Push setup (Blue Book interface class 40): attribute codecs and push-data decoding.

Class 40 (DLMS UA 1000-1, version 0) holds what a meter pushes, where and when:
attribute 2 push_object_list (array of {class_id long-unsigned, logical_name octet-string,
attribute_index integer, data_index long-unsigned}, the capture-object shape),
3 send_destination_and_method ({transport_service enum, destination octet-string, message
enum}), 4 communication_window (array of {start, end}, each a date-time octet-string),
5 randomisation_start_interval (long-unsigned), 6 number_of_retries (unsigned),
7 repetition_delay (long-unsigned); method 1 push (integer 0). Push setups sit at
0-0:25.9.0.255 (and further instances 0-b:25.9.0.255).

A Data-Notification body sent by a push setup is a structure of the values of its object
list, one per entry. A meter whose list starts with its own attribute 2 sends the object list
itself as the first value (self-describing, :func:`split_self_described`); many send only the
values, and a head-end then needs the object list it read or configured
(:func:`values_by_object_list`). The same codec serves the collector and the simulated meter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from protocols import axdr
from protocols.cosem import CosemDateTime
from protocols.errors import DecodeError

CLASS_ID = 40
#: Logical names of the alarm push setup and of a second (interval) push setup.
ALARM_PUSH_SETUP = bytes((0, 0, 25, 9, 0, 255))
INTERVAL_PUSH_SETUP = bytes((0, 1, 25, 9, 0, 255))
OBJECT_LIST = 2
SEND_DESTINATION = 3
COMMUNICATION_WINDOW = 4
RANDOMISATION_START_INTERVAL = 5
NUMBER_OF_RETRIES = 6
REPETITION_DELAY = 7
PUSH_METHOD = 1
DATE_TIME_SIZE = 12


class TransportService(IntEnum):
    """transport_service of send_destination_and_method (Blue Book class 40)."""

    TCP = 0
    UDP = 1
    FTP = 2
    SMTP = 3
    SMS = 4
    HDLC = 5
    M_BUS = 6
    ZIGBEE = 7


class MessageType(IntEnum):
    """message of send_destination_and_method: how the pushed APDU is encoded."""

    AXDR = 0
    XML = 1


@dataclass(slots=True, frozen=True)
class PushObject:
    """One entry of push_object_list: which attribute's value is pushed."""

    class_id: int
    logical_name: bytes
    attribute_index: int
    data_index: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.class_id <= 0xFFFF:
            raise ValueError(f"class id {self.class_id} outside long-unsigned")
        if len(self.logical_name) != 6:
            raise ValueError(f"logical name {self.logical_name.hex()} is not 6 bytes")
        if not -128 <= self.attribute_index <= 127:
            raise ValueError(f"attribute index {self.attribute_index} outside integer")
        if not 0 <= self.data_index <= 0xFFFF:
            raise ValueError(f"data index {self.data_index} outside long-unsigned")

    @property
    def obis(self) -> str:
        """The logical name as dotted OBIS text, '0.0.96.11.0.255'."""
        return ".".join(str(b) for b in self.logical_name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "class_id": self.class_id,
            "obis": self.obis,
            "attribute": self.attribute_index,
            "data_index": self.data_index,
        }


@dataclass(slots=True, frozen=True)
class SendDestination:
    """send_destination_and_method: for TCP/UDP the destination is 'host:port' in ASCII."""

    transport: int
    destination: bytes
    message: int = MessageType.AXDR

    def __post_init__(self) -> None:
        for name in ("transport", "message"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"{name} {getattr(self, name)} outside enum")

    def host_port(self) -> tuple[str, int]:
        """(host, port) of a TCP/UDP destination; ValueError says why it is not one."""
        if self.transport not in (TransportService.TCP, TransportService.UDP):
            raise ValueError(f"transport {self.transport} is not TCP or UDP")
        try:
            text = self.destination.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"destination {self.destination.hex()} is not ASCII") from None
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"destination {text!r} is not host:port")
        return host, int(port)


@dataclass(slots=True, frozen=True)
class Window:
    """One communication window: start and end as raw 12-byte COSEM date-times."""

    start: bytes
    end: bytes

    def __post_init__(self) -> None:
        if len(self.start) != DATE_TIME_SIZE or len(self.end) != DATE_TIME_SIZE:
            raise ValueError("a window's start and end must be 12-byte date-times")


def parse_object(text: str) -> PushObject:
    """'CLASS/OBIS/ATTRIBUTE' (3/1.0.1.8.0.255/2) -> an object list entry; ValueError says why."""
    parts = text.split("/")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].lstrip("-").isdigit():
        raise ValueError(f"{text!r} is not CLASS/OBIS/ATTRIBUTE (3/1.0.1.8.0.255/2)")
    groups = parts[1].split(".")
    if len(groups) != 6 or not all(g.isdigit() and int(g) < 256 for g in groups):
        raise ValueError(f"{text!r}: {parts[1]!r} is not an OBIS code a.b.c.d.e.f")
    return PushObject(int(parts[0]), bytes(int(g) for g in groups), int(parts[2]))


def _instant(text: str, what: str) -> datetime:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an ISO date-time") from None
    if dt.tzinfo is None:
        raise ValueError(f"{what} {text!r} has no time zone (add Z or +hh:mm)")
    return dt.astimezone(UTC)


def parse_window(text: str) -> Window:
    """'START/END' (ISO date-times with a zone) -> a window, in UTC; ValueError says why."""
    start, sep, end = text.partition("/")
    if not sep:
        raise ValueError(f"window {text!r} is not START/END")
    a, b = _instant(start, "window start"), _instant(end, "window end")
    if a > b:
        raise ValueError(f"window {text!r} ends before it starts")
    return Window(
        CosemDateTime.from_datetime(a).to_bytes(), CosemDateTime.from_datetime(b).to_bytes()
    )


def tcp_destination(host: str, port: int) -> SendDestination:
    """A TCP destination 'host:port' pushing A-XDR APDUs."""
    return SendDestination(TransportService.TCP, f"{host}:{port}".encode("ascii"))


# ---------------------------------------------------------------------------------------------
# Encoders


def object_list_value(objects: Sequence[PushObject]) -> axdr.Typed:
    return axdr.array(
        axdr.structure(
            axdr.u16(o.class_id),
            axdr.octets(o.logical_name),
            axdr.i8(o.attribute_index),
            axdr.u16(o.data_index),
        )
        for o in objects
    )


def encode_object_list(objects: Sequence[PushObject]) -> bytes:
    return axdr.encode(object_list_value(objects))


def destination_value(dest: SendDestination) -> axdr.Typed:
    return axdr.structure(
        axdr.enum(dest.transport), axdr.octets(dest.destination), axdr.enum(dest.message)
    )


def encode_destination(dest: SendDestination) -> bytes:
    return axdr.encode(destination_value(dest))


def windows_value(windows: Sequence[Window]) -> axdr.Typed:
    return axdr.array(axdr.structure(axdr.octets(w.start), axdr.octets(w.end)) for w in windows)


def encode_windows(windows: Sequence[Window]) -> bytes:
    return axdr.encode(windows_value(windows))


# ---------------------------------------------------------------------------------------------
# Decoders: from decoded A-XDR values (what a GET hands back) or from bytes


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise DecodeError(f"{what}: expected an integer in {lo}..{hi}, got {value!r}")
    return int(value)


def _octets(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, bytes) or (size is not None and len(value) != size):
        want = "an octet-string" if size is None else f"a {size}-byte octet-string"
        raise DecodeError(f"{what}: expected {want}, got {value!r}")
    return bytes(value)


def _tuple(value: Any, what: str, size: int) -> tuple[Any, ...]:
    if not isinstance(value, tuple) or len(value) != size:
        raise DecodeError(f"{what}: expected a structure of {size}, got {value!r}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise DecodeError(f"{what}: expected an array, got {value!r}")
    return value


def object_list_from(value: Any) -> tuple[PushObject, ...]:
    """push_object_list from its decoded A-XDR value; DecodeError names the bad entry."""
    out = []
    for n, item in enumerate(_list(value, "push_object_list")):
        what = f"push_object_list[{n}]"
        cid, ln, attr, index = _tuple(item, what, 4)
        out.append(
            PushObject(
                _int(cid, f"{what} class_id", 0, 0xFFFF),
                _octets(ln, f"{what} logical_name", 6),
                _int(attr, f"{what} attribute_index", -128, 127),
                _int(index, f"{what} data_index", 0, 0xFFFF),
            )
        )
    return tuple(out)


def destination_from(value: Any) -> SendDestination:
    what = "send_destination_and_method"
    transport, dest, message = _tuple(value, what, 3)
    return SendDestination(
        _int(transport, f"{what} transport_service", 0, 0xFF),
        _octets(dest, f"{what} destination"),
        _int(message, f"{what} message", 0, 0xFF),
    )


def windows_from(value: Any) -> tuple[Window, ...]:
    out = []
    for n, item in enumerate(_list(value, "communication_window")):
        what = f"communication_window[{n}]"
        start, end = _tuple(item, what, 2)
        out.append(
            Window(
                _octets(start, f"{what} start", DATE_TIME_SIZE),
                _octets(end, f"{what} end", DATE_TIME_SIZE),
            )
        )
    return tuple(out)


def decode_object_list(data: bytes) -> tuple[PushObject, ...]:
    return object_list_from(axdr.decode(data))


def decode_destination(data: bytes) -> SendDestination:
    return destination_from(axdr.decode(data))


def decode_windows(data: bytes) -> tuple[Window, ...]:
    return windows_from(axdr.decode(data))


# ---------------------------------------------------------------------------------------------
# Push data


def split_self_described(body: Any) -> tuple[tuple[PushObject, ...] | None, tuple[Any, ...]]:
    """(object list, values) of a decoded notification body, the two aligned.

    The object list is there when the first value of the structure is itself a well-formed
    push_object_list whose first entry names a push setup's attribute 2 (so that value is the
    list); otherwise None. A body that is not a structure is one value.
    """
    values = body if isinstance(body, tuple) else (body,)
    if values and isinstance(values[0], list) and values[0]:
        try:
            described = object_list_from(values[0])
        except (DecodeError, ValueError):
            return None, values
        head = described[0]
        if head.class_id == CLASS_ID and head.attribute_index == OBJECT_LIST:
            return described, values
    return None, values


def values_by_object_list(
    objects: Sequence[PushObject], values: Sequence[Any]
) -> list[tuple[PushObject, Any]]:
    """Pair each pushed value with its object list entry; DecodeError when they differ."""
    if len(objects) != len(values):
        raise DecodeError(
            f"push carries {len(values)} values, the push object list has {len(objects)} entries"
        )
    return list(zip(objects, values, strict=True))
