"""The simulated meter's push setup objects (Blue Book class 40, version 0).

Two push setups: the alarm push 0-0:25.9.0.255 (what :mod:`simulator.push` sends when an
alarm is raised) and an interval push 0-1:25.9.0.255 (sent only when the head-end invokes
``push``). Attributes 2..7 are readable and, by the management client, writable; method 1
``push`` sends the setup's data now. The codecs are ``protocols.push_setup``, the client's.

Default object lists: the logical device name, serial number and event code (alarm push) or
the clock and the value and scaler_unit of the four energy registers (interval push), each
headed by the setup's own attribute 2, so the meter's notifications carry their object list.
A meter with the ``push_without_object_list`` quirk leaves that head out, as many meters do:
its notifications carry only the values, and the head-end must know the list.

The simulated meter's own rules: an empty destination means "the fleet's push address"
(``hes simulate --push-to``); a window must name two instants (no wildcards) with start <=
end, and with windows set the meter holds an alarm raised outside them until the next window
opens (dropped when none is ahead); a SET of the object list takes attributes of objects the
meter has (and class 40 attribute 2 only of the setup itself); retries and delays are stored
and reported but not used (each push is one attempt).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any

from protocols import axdr
from protocols import push_setup as ps
from protocols.cosem import CosemDateTime
from protocols.enums import DataAccessResult, InterfaceClass
from protocols.errors import DecodeError, data_access_error

TYPE_UNMATCHED = DataAccessResult.TYPE_UNMATCHED
OBJECT_UNDEFINED = DataAccessResult.OBJECT_UNDEFINED
NAMES = (ps.ALARM_PUSH_SETUP, ps.INTERVAL_PUSH_SETUP)

_LDN = bytes((0, 0, 42, 0, 0, 255))
_SERIAL = bytes((0, 0, 96, 1, 0, 255))
_EVENT_CODE = bytes((0, 0, 96, 11, 0, 255))
_CLOCK = bytes((0, 0, 1, 0, 0, 255))
_ENERGY = tuple(bytes((1, 0, k, 8, 0, 255)) for k in (1, 2, 3, 4))
DATA = InterfaceClass.DATA
#: The factory destination: TCP, empty (the fleet's push address).
NO_DESTINATION = ps.SendDestination(ps.TransportService.TCP, b"")
_BASE: dict[bytes, tuple[ps.PushObject, ...]] = {
    ps.ALARM_PUSH_SETUP: (
        ps.PushObject(DATA, _LDN, 2),
        ps.PushObject(DATA, _SERIAL, 2),
        ps.PushObject(DATA, _EVENT_CODE, 2),
    ),
    ps.INTERVAL_PUSH_SETUP: (
        ps.PushObject(InterfaceClass.CLOCK, _CLOCK, 2),
        *(
            ps.PushObject(InterfaceClass.REGISTER, o, attribute)
            for o in _ENERGY
            for attribute in (2, 3)
        ),
    ),
}


@dataclass(slots=True, frozen=True)
class PushSetupState:
    """One push setup's attributes 2..7."""

    objects: tuple[ps.PushObject, ...]
    destination: ps.SendDestination = NO_DESTINATION
    windows: tuple[ps.Window, ...] = ()
    randomisation_start_interval: int = 0
    number_of_retries: int = 0
    repetition_delay: int = 0

    def window_times(self) -> list[tuple[float, float]]:
        """The windows as (start, end) meter times, sorted (SET checked they name instants)."""
        return sorted((_unix(w.start), _unix(w.end)) for w in self.windows)

    def send_at(self, t: float) -> float | None:
        """When an alarm raised at meter time t goes out: t, the next window's start, or None."""
        if not self.windows:
            return t
        ahead = None
        for start, end in self.window_times():
            if start <= t <= end:
                return t
            if start > t and ahead is None:
                ahead = start
        return ahead


def _unix(raw: bytes) -> float:
    """Unix time of a date-time; a naive one is meter time (UTC). DecodeError: not an instant."""
    dt = CosemDateTime.from_bytes(raw).to_datetime()
    return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).timestamp()


def default_setup(name: bytes, describes: bool = True) -> PushSetupState:
    """The factory setting of push setup ``name``; ``describes``: headed by its object list."""
    own = (ps.PushObject(ps.CLASS_ID, name, ps.OBJECT_LIST),) if describes else ()
    return PushSetupState(own + _BASE[name])


def current(
    setups: dict[bytes, PushSetupState], name: bytes, describes: bool = True
) -> PushSetupState:
    """The setup as configured, or its factory setting."""
    return setups.get(name) or default_setup(name, describes)


def get_attribute(setup: PushSetupState, attribute: int) -> bytes:
    if attribute == ps.OBJECT_LIST:
        return ps.encode_object_list(setup.objects)
    if attribute == ps.SEND_DESTINATION:
        return ps.encode_destination(setup.destination)
    if attribute == ps.COMMUNICATION_WINDOW:
        return ps.encode_windows(setup.windows)
    if attribute == ps.RANDOMISATION_START_INTERVAL:
        return axdr.encode(axdr.u16(setup.randomisation_start_interval))
    if attribute == ps.NUMBER_OF_RETRIES:
        return axdr.encode(axdr.u8(setup.number_of_retries))
    return axdr.encode(axdr.u16(setup.repetition_delay))


def _number(value: Any, what: str, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= hi:
        raise data_access_error(TYPE_UNMATCHED, what)
    return value


def set_attribute(
    setup: PushSetupState,
    name: bytes,
    attribute: int,
    data: bytes,
    has_attribute: Callable[[int, bytes, int], bool],
) -> PushSetupState:
    """The setup after a SET, or raise the DataAccessError; ``has_attribute(class, ln, attr)``
    says whether the meter has that attribute (an object list entry must name one)."""
    try:
        value = axdr.decode(data)
        if attribute == ps.OBJECT_LIST:
            objects = ps.object_list_from(value)
            for o in objects:
                if o.class_id == ps.CLASS_ID and o.logical_name == name:
                    known = o.attribute_index == ps.OBJECT_LIST
                else:
                    known = has_attribute(o.class_id, o.logical_name, o.attribute_index)
                if not known:
                    raise data_access_error(OBJECT_UNDEFINED, f"push object {o.obis}")
                if o.data_index:
                    raise data_access_error(TYPE_UNMATCHED, "push object data index")
            return replace(setup, objects=objects)
        if attribute == ps.SEND_DESTINATION:
            dest = ps.destination_from(value)
            if dest.destination:
                dest.host_port()
            return replace(setup, destination=dest)
        if attribute == ps.COMMUNICATION_WINDOW:
            changed = replace(setup, windows=ps.windows_from(value))
            if any(start > end for start, end in changed.window_times()):
                raise data_access_error(TYPE_UNMATCHED, "window ends before it starts")
            return changed
    except (DecodeError, ValueError):
        raise data_access_error(TYPE_UNMATCHED, f"push setup attribute {attribute}") from None
    if attribute == ps.RANDOMISATION_START_INTERVAL:
        return replace(setup, randomisation_start_interval=_number(value, "interval", 0xFFFF))
    if attribute == ps.NUMBER_OF_RETRIES:
        return replace(setup, number_of_retries=_number(value, "retries", 0xFF))
    return replace(setup, repetition_delay=_number(value, "repetition delay", 0xFFFF))


def check_push_parameter(param: Any) -> None:
    """Method 1 takes integer 0 (Blue Book); anything else is type-unmatched."""
    if param != 0 or isinstance(param, bool):
        raise data_access_error(TYPE_UNMATCHED, "push parameter")
