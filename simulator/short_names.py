"""The simulated meter's short names: a base name per object of ``simulator.objects``.

An SN meter (``Quirks.short_names``) serves the same object model as the LN meter, but by
base name: each object gets a slot of 0x100 short names (room for 32 attributes and
methods) from :data:`FIRST_BASE_NAME` on, in the order of the object table, and the
Association SN object (class 12) sits at 0xFA00 in place of the Association LN. Its
object_list (attribute 2) gives ``{base_name long, class_id long-unsigned, version unsigned,
logical_name octet-string}`` per object, which a client reads once to map its (class, OBIS,
attribute) references to short names.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from protocols import axdr
from protocols.enums import InterfaceClass
from protocols.errors import DataAccessError
from protocols.xdlms.sn import ASSOCIATION_SN_BASE, METHOD_OFFSETS, NAME_STEP
from simulator import objects

#: The first object's base name, and the room each object gets.
FIRST_BASE_NAME = 0x0100
SLOT = 0x100  # past every class's attributes and methods (the clock's end at 0x88)
#: Association SN: version 2, attributes logical_name and object_list served.
ASSOCIATION_SN_VERSION = 2
_ASSOCIATION_SN_ATTRIBUTES = 2


@dataclass(slots=True, frozen=True)
class Target:
    """What a short name names: an object's attribute or method, or the Association SN's."""

    obj: objects.CosemObject | None
    attribute: int = 0
    method: int = 0


@dataclass(slots=True, frozen=True)
class NameTable:
    """Base names both ways, and the encoded object_list."""

    by_base: dict[int, objects.CosemObject]
    object_list: bytes

    def resolve(self, name: int) -> Target | None:
        """The object and attribute of a short name, or None (object-undefined)."""
        if ASSOCIATION_SN_BASE <= name < ASSOCIATION_SN_BASE + SLOT:
            offset = name - ASSOCIATION_SN_BASE
            if offset % NAME_STEP or offset // NAME_STEP >= _ASSOCIATION_SN_ATTRIBUTES:
                return None
            return Target(None, attribute=offset // NAME_STEP + 1)
        base = name - (name - FIRST_BASE_NAME) % SLOT
        obj = self.by_base.get(base)
        offset = name - base
        if obj is None or offset % NAME_STEP:
            return None
        if offset // NAME_STEP < obj.attributes:
            return Target(obj, attribute=offset // NAME_STEP + 1)
        first, count = METHOD_OFFSETS.get(obj.class_id, (SLOT, 0))
        method = (offset - first) // NAME_STEP + 1
        if offset >= first and method <= min(count, obj.methods):
            return Target(obj, method=method)
        return None


def _long(value: int) -> axdr.Typed:
    """A base name as the object_list's long (Integer16): names past 0x7FFF wrap negative."""
    return axdr.i16(value - 0x10000 if value > 0x7FFF else value)


@cache
def name_table(phases: int) -> NameTable:
    """The base names of a 1- or 3-phase meter (fixed, so every session agrees)."""
    by_base: dict[int, objects.CosemObject] = {}
    entries: list[axdr.Typed] = [
        axdr.structure(
            _long(ASSOCIATION_SN_BASE),
            axdr.u16(InterfaceClass.ASSOCIATION_SN),
            axdr.u8(ASSOCIATION_SN_VERSION),
            axdr.octets(objects.OBIS_ASSOCIATION),
        )
    ]
    base = FIRST_BASE_NAME
    for obj in objects.object_table(phases).values():
        if obj.class_id == InterfaceClass.ASSOCIATION_LN:
            continue
        by_base[base] = obj
        entries.append(
            axdr.structure(
                _long(base), axdr.u16(obj.class_id), axdr.u8(obj.version), axdr.octets(obj.obis)
            )
        )
        base += SLOT
    return NameTable(by_base, axdr.encode(axdr.array(entries)))


def association_attribute(table: NameTable, attribute: int) -> bytes:
    """Attribute 1 (logical_name) or 2 (object_list) of the Association SN object."""
    if attribute == 1:
        return axdr.encode(axdr.octets(objects.OBIS_ASSOCIATION))
    if attribute == 2:
        return table.object_list
    raise DataAccessError(f"Association SN attribute {attribute}", objects.OBJECT_UNDEFINED)
