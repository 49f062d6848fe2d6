"""The counters of one link, and what they say when a meter did not answer.

A timeout alone leaves a bench guessing: an unplugged cable, a wrong baud rate and a wrong
physical address all look the same from above. The HDLC transport counts what came back
(bytes, valid frames, frames that failed their checks, frames from another server address),
and :func:`diagnose` turns those counters into the likely cause and what to try.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocols.hdlc import HdlcAddress

#: Diagnosis codes, from the least to the most that arrived.
NOTHING_ARRIVED = "nothing_arrived"
NO_VALID_FRAME = "no_valid_frame"
OTHER_ADDRESS = "other_address"
FRAMES_FOR_OTHERS = "frames_for_other_stations"
ANSWER_INCOMPLETE = "answer_incomplete"


@dataclass(slots=True)
class LinkStats:
    """Traffic counters of one transport, stored with each read attempt.

    The frame counters are HDLC's; over the TCP wrapper they stay 0.
    """

    bytes_tx: int = 0
    bytes_rx: int = 0
    round_trips: int = 0
    retransmissions: int = 0
    #: Valid frames received, for any station.
    frames_rx: int = 0
    #: Valid frames from the meter addressed to this client.
    frames_from_meter: int = 0
    #: Frame candidates that failed their HCS, FCS or field checks.
    frames_bad: int = 0
    #: Received bytes that were part of no valid frame.
    noise_bytes: int = 0
    #: Frames to this client from another server address, and the last such address.
    frames_other_address: int = 0
    other_address: HdlcAddress | None = None

    def as_json(self, *, hdlc: bool = True) -> dict[str, Any]:
        """The counters as a JSON object (the other address as logical/physical); the
        frame counters only for an HDLC link (``hdlc``)."""
        other = self.other_address
        out: dict[str, Any] = {
            "bytes_tx": self.bytes_tx,
            "bytes_rx": self.bytes_rx,
            "round_trips": self.round_trips,
            "retransmissions": self.retransmissions,
        }
        if not hdlc:
            return out
        return {
            **out,
            "frames_rx": self.frames_rx,
            "frames_from_meter": self.frames_from_meter,
            "frames_bad": self.frames_bad,
            "noise_bytes": self.noise_bytes,
            "frames_other_address": self.frames_other_address,
            "other_address": None if other is None else address_json(other),
        }


def address_json(address: HdlcAddress) -> dict[str, int | None]:
    """A server address as JSON: logical (upper) and physical (lower) parts."""
    return {"logical_address": address.upper, "physical_address": address.lower}


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The likely cause of an unanswered HDLC exchange, and what to try."""

    code: str
    hint: str
    answered: HdlcAddress | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"diagnosis": self.code, "hint": self.hint}
        if self.answered is not None:
            out["answered"] = address_json(self.answered)
        return out


def diagnose(stats: LinkStats, expected: HdlcAddress) -> Diagnosis:
    """What the counters of a link that timed out say about why (``expected``: the meter's
    address the client called)."""
    called = f"physical address {expected.lower}" if expected.lower is not None else "the meter"
    if stats.frames_other_address and stats.other_address is not None:
        other = stats.other_address
        return Diagnosis(
            OTHER_ADDRESS,
            f"a meter answered from physical address {other.lower} (logical "
            f"{other.upper}), not from {called}: try --physical-address {other.lower}",
            other,
        )
    if stats.bytes_rx == 0:
        return Diagnosis(
            NOTHING_ARRIVED,
            f"no byte came back: check the wiring, the port and that the meter is powered, "
            f"and that a meter has {called} (hes scan lists those that answer)",
        )
    if stats.frames_rx == 0:
        bad = f", {stats.frames_bad} failed their checksum" if stats.frames_bad else ""
        return Diagnosis(
            NO_VALID_FRAME,
            f"{stats.bytes_rx} bytes arrived but no valid HDLC frame{bad}: check the baud "
            "rate and the parity (DLMS HDLC is 8N1)",
        )
    if stats.frames_from_meter == 0:
        return Diagnosis(
            FRAMES_FOR_OTHERS,
            f"{stats.frames_rx} valid frames arrived, none for this client: another master "
            "is talking on the bus, or the client SAP is wrong",
        )
    return Diagnosis(
        ANSWER_INCOMPLETE,
        f"the meter at {called} answered {stats.frames_from_meter} frames but not the one "
        "awaited: raise --timeout or --frame-timeout, or lower --max-info-field",
    )
