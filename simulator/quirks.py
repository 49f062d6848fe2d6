"""Quirk switches: a simulated meter that behaves like an independent implementation did.

Faults (``simulator.faults``) are seeded shares of a fleet failing now and then; a quirk is a
lasting, deliberate departure from the usual encoding that one meter shows on every session,
as found when hes was tried against meters it was not written with. Each switch reproduces one
case, so a test can show the head-end copes with it over the TCP wrapper and over HDLC.

| switch | what the meter does |
|---|---|
| ``association_exception`` | answers every AARQ with this bare ExceptionResponse APDU, no AARE |
| ``rlre_without_llc`` | HDLC: sends its RLRE in an I-frame without the E6 E7 00 LLC header |
| ``trailing_bytes`` | appends these bytes after the value of every GET-Response-Normal |
| ``block_failure`` | answers every GET-next (so block 2 on) with this data-access-result, length-prefixed |
| ``short_names`` | is an SN meter: short-name context only, Read/Write by base name (``simulator.short_names``) |
| ``identification`` | mode E bus: sends these bytes as its IEC 62056-21 identification, and takes no acknowledgement |
| ``power_cut_after_blocks`` | loses power once it holds N blocks of an image: the link drops unanswered, the blocks stay |
| ``firmware_rollback`` | reports an image activated but keeps running its old firmware |
| ``omit_system_title`` | leaves its system title out of the AARE of a ciphered association |
| ``range_without_deviation`` | matches no entry in a range read whose bounds carry a clock deviation |
| ``push_without_object_list`` | pushes only the values: its push setups' object lists are not headed by themselves |
| ``gbt_window`` | grants general-block-transfer (GBT) and receives this many blocks at once; 0: no GBT |

``hes simulate --quirk NAME`` (repeatable) gives every meter of a fleet the quirks of
:data:`NAMED`, so a bench can reproduce them with ``hes read``.
"""  # noqa: E501

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from protocols.enums import ApduTag, DataAccessResult
from protocols.xdlms.gbt import MAX_GBT_WINDOW


@dataclass(slots=True, frozen=True)
class Quirks:
    """What one meter does differently; the default is a meter without quirks."""

    association_exception: bytes | None = None
    rlre_without_llc: bool = False
    trailing_bytes: bytes = b""
    block_failure: int | None = None
    identification: bytes | None = None
    power_cut_after_blocks: int | None = None
    firmware_rollback: bool = False
    short_names: bool = False
    range_without_deviation: bool = False
    omit_system_title: bool = False
    push_without_object_list: bool = False
    gbt_window: int = 0

    def __post_init__(self) -> None:
        exc = self.association_exception
        if exc is not None and (len(exc) < 3 or exc[0] != ApduTag.EXCEPTION_RESPONSE):
            raise ValueError(f"association_exception {exc.hex()} is not an ExceptionResponse")
        if self.block_failure is not None and not 0 < self.block_failure <= 0xFF:
            raise ValueError(f"block_failure {self.block_failure} is not a data-access-result")
        if not 0 <= self.gbt_window <= MAX_GBT_WINDOW:
            raise ValueError(f"gbt_window {self.gbt_window} outside 0..{MAX_GBT_WINDOW}")
        if self.gbt_window and self.short_names:
            raise ValueError("general-block-transfer is for LN meters, not short_names")
        if self.power_cut_after_blocks is not None and self.power_cut_after_blocks < 1:
            raise ValueError(f"power_cut_after_blocks {self.power_cut_after_blocks} must be >= 1")


NO_QUIRKS = Quirks()

#: Named quirks, as ``hes simulate --quirk`` takes them: the cases as they were found.
NAMED: dict[str, Quirks] = {
    # ExceptionResponse service-not-allowed / deciphering-error instead of an AARE.
    "aarq-deciphering-error": Quirks(association_exception=bytes.fromhex("D8 01 05")),
    # ... invocation-counter-error, expecting counter 2007.
    "aarq-counter-error": Quirks(association_exception=bytes.fromhex("D8 01 06 00 00 07 D7")),
    "rlre-without-llc": Quirks(rlre_without_llc=True),
    # Short-name referencing only (an older meter): Read/Write by base name.
    "short-names": Quirks(short_names=True),
    "trailing-bytes": Quirks(trailing_bytes=bytes(range(18))),
    "block-temporary-failure": Quirks(block_failure=DataAccessResult.TEMPORARY_FAILURE),
    # A mode E identification that ends with LF alone, without the CR before it.
    "identification-without-cr": Quirks(identification=b"/SIM5\\2SIM-LF-ONLY\n"),
    # An optical port left in mode C: an identification without \2 (no HDLC offered).
    "identification-mode-c": Quirks(identification=b"/SIM5SIM-MODE-C\r\n"),
    # A meter whose power fails once it holds 8 blocks of a firmware image.
    "power-cut-mid-transfer": Quirks(power_cut_after_blocks=8),
    # A meter that falls back to its old firmware after activating a new one.
    "firmware-rollback": Quirks(firmware_rollback=True),
    # A meter whose profile range reads only work with bounds of deviation "not specified":
    # bounds that carry a deviation (hes sends UTC, deviation 0) select nothing.
    "range-without-deviation": Quirks(range_without_deviation=True),
    # A meter whose AARE names no responding-AP-title: its system title comes from the key store.
    "omit-system-title": Quirks(omit_system_title=True),
    # Data-Notifications carrying only the values, without the push object list.
    "push-without-object-list": Quirks(push_without_object_list=True),
    # A meter that offers general-block-transfer, one block at a time or four.
    "gbt": Quirks(gbt_window=1),
    "gbt-window-4": Quirks(gbt_window=4),
}


def named(names: Sequence[str]) -> Quirks:
    """The quirks of every name in ``names`` together; ValueError names an unknown one."""
    out = NO_QUIRKS
    for name in names:
        quirk = NAMED.get(name)
        if quirk is None:
            raise ValueError(f"unknown quirk {name!r}; use one of {', '.join(NAMED)}")
        changes = {
            f.name: getattr(quirk, f.name)
            for f in dataclasses.fields(Quirks)
            if getattr(quirk, f.name) != getattr(NO_QUIRKS, f.name)
        }
        out = dataclasses.replace(out, **changes)
    return out
