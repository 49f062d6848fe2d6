"""Readable names of the OBIS codes a bench meets, for output meant for people.

Names follow the OBIS groups of IEC 62056-61 (Blue Book): for electricity (A=1) group C is the
quantity and phase, D how it was processed (8: energy register, 7: instantaneous value, 6:
maximum demand, 4/5: current/last average), E the tariff (0: total). A handful of abstract
objects (A=0) and profiles have fixed names. A code not covered has no name (None): the
caller shows the code itself.
"""

from __future__ import annotations

from protocols.cosem import Obis

__all__ = ["obis_name"]

_FIXED: dict[tuple[int, int, int, int, int], str] = {
    (0, 0, 1, 0, 0): "clock",
    (0, 0, 96, 10, 1): "status",
    (0, 0, 96, 1, 0): "serial number",
    (0, 0, 42, 0, 0): "logical device name",
    (0, 0, 40, 0, 0): "current association",
    (0, 0, 99, 98, 0): "standard event log",
    (0, 0, 99, 98, 1): "fraud detection log",
    (1, 0, 99, 97, 0): "power failure event log",
    (1, 0, 99, 1, 0): "load profile 1",
    (1, 0, 99, 2, 0): "load profile 2",
    (0, 0, 96, 3, 10): "disconnect control",
}

#: Group C of electricity: (energy name, power/value name).
_QUANTITY: dict[int, tuple[str, str]] = {
    1: ("active energy import (+A)", "active power import (+P)"),
    2: ("active energy export (-A)", "active power export (-P)"),
    3: ("reactive energy import (+R)", "reactive power import (+Q)"),
    4: ("reactive energy export (-R)", "reactive power export (-Q)"),
    5: ("reactive energy QI", "reactive power QI"),
    6: ("reactive energy QII", "reactive power QII"),
    7: ("reactive energy QIII", "reactive power QIII"),
    8: ("reactive energy QIV", "reactive power QIV"),
    9: ("apparent energy import (+S)", "apparent power import (+S)"),
    10: ("apparent energy export (-S)", "apparent power export (-S)"),
    13: ("", "power factor"),
    14: ("", "frequency"),
    91: ("", "neutral current"),
}
#: Per-phase groups C: offset 20/40/60 for L1/L2/L3, then 1 active+, 2 active-, 11 current,
#: 12 voltage, 13 power factor.
_PHASE_QUANTITY: dict[int, tuple[str, str]] = {
    1: ("active energy import (+A)", "active power import (+P)"),
    2: ("active energy export (-A)", "active power export (-P)"),
    11: ("", "current"),
    12: ("", "voltage"),
    13: ("", "power factor"),
}
_PROCESSING: dict[int, str] = {4: "current average", 5: "last average", 6: "maximum demand"}


def _electricity(c: int, d: int, e: int) -> str | None:
    phase = ""
    names = _QUANTITY.get(c)
    if names is None and 21 <= c <= 80:
        phase = f" L{(c - 1) // 20}"
        names = _PHASE_QUANTITY.get((c - 1) % 20 + 1)
    if names is None:
        return None
    energy, value = names
    if d == 8 and energy:
        name = energy
    elif d == 7:
        name = value
    elif d in _PROCESSING:
        name = f"{value} {_PROCESSING[d]}"
    else:
        return None
    tariff = f" tariff {e}" if e else ""
    return f"{name}{phase}{tariff}"


def obis_name(obis: Obis) -> str | None:
    """A readable name of ``obis``, or None when it is not one this table knows."""
    fixed = _FIXED.get((obis.a, obis.b, obis.c, obis.d, obis.e))
    if fixed is not None:
        return fixed
    if obis.a == 1:
        name = _electricity(obis.c, obis.d, obis.e)
        if name is not None and obis.f != 255:
            name += f", billing period {obis.f}"
        return name
    return None
