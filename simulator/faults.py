"""Seeded fault injection: which meter misbehaves, when, and how.

Every decision is a pure function of (seed, meter id, and either the time or the meter's session
count), so a load test is repeatable and a test can predict which meters fail. Faults split in
two kinds, as a head-end sees them in the field:

- lasting: a share of meters never answers (dead modem, no coverage), and a share goes offline
  for windows of time and comes back;
- transient, per session attempt: no answer at all (timeout), a frame with a broken checksum
  (or a garbled wrapper PDU), the connection dropped mid-session, a slow meter. A retry usually
  gets through, which is what the collector's retry policy is for.

How the servers (``simulator.server``) show each fault, and what our client reports:

| fault | TCP wrapper | HDLC bus (TCP port or pty) |
|---|---|---|
| offline (for good, or in a window) | accept, close at once: LinkError | silence: DlmsTimeout |
| no answer | accept, read, never answer: DlmsTimeout | link silent for ``silence_s`` (or until the terminal-server connection ends): DlmsTimeout |
| corrupt frame | wrapper version garbled: DecodeError | FCS broken: client drops the frame, retransmits, the meter repeats its answer |
| drop | connection closed instead of answer N: LinkError | TCP closed / DM on a pty: LinkError |
| slow | every answer ``slow_delay_s`` late | same |

"N" (the fault point, 0..3) counts the APDUs answered before the fault strikes.
"""  # noqa: E501

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, field

_U64 = struct.Struct("<Q")


def unit_hash(*parts: int | str) -> float:
    """A deterministic number in [0, 1) from the given parts (blake2b, not Python's hash)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\x1f")
    return _U64.unpack(h.digest())[0] / 2.0**64


class SessionFault(enum.Enum):
    """What goes wrong in one session attempt."""

    NONE = "none"
    NO_ANSWER = "no_answer"
    CORRUPT_FRAME = "corrupt_frame"
    DROP = "drop"
    SLOW = "slow"


@dataclass(slots=True, frozen=True)
class FaultSpec:
    """Shares of meters and sessions that fail, all in [0, 1]."""

    offline: float = 0.0
    intermittent: float = 0.0
    intermittent_window_s: int = 3600
    intermittent_down_share: float = 0.5
    no_answer: float = 0.0
    corrupt_frame: float = 0.0
    drop: float = 0.0
    slow: float = 0.0
    slow_delay_s: float = 2.0

    def __post_init__(self) -> None:
        for name in (
            "offline",
            "intermittent",
            "intermittent_down_share",
            "no_answer",
            "corrupt_frame",
            "drop",
            "slow",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault share {name}={value} is not within [0, 1]")
        if self.no_answer + self.corrupt_frame + self.drop + self.slow > 1.0:
            raise ValueError("per-session fault shares add up to more than 1")

    @classmethod
    def transient(cls, share: float) -> FaultSpec:
        """``share`` of sessions fail transiently, split evenly over the transient kinds."""
        part = share / 3
        return cls(no_answer=part, corrupt_frame=part, drop=part)


@dataclass(slots=True)
class FaultPlan:
    """Applies a :class:`FaultSpec` to a fleet with a seed."""

    spec: FaultSpec = field(default_factory=FaultSpec)
    seed: int = 0
    _sessions: dict[int, int] = field(default_factory=dict)

    def permanently_offline(self, meter_id: int) -> bool:
        return unit_hash("offline", self.seed, meter_id) < self.spec.offline

    def online(self, meter_id: int, now: float) -> bool:
        """Whether the meter answers at all at true time ``now``."""
        if self.permanently_offline(meter_id):
            return False
        if unit_hash("intermittent", self.seed, meter_id) >= self.spec.intermittent:
            return True
        window = int(now // self.spec.intermittent_window_s)
        return unit_hash("window", self.seed, meter_id, window) >= (
            self.spec.intermittent_down_share
        )

    @property
    def has_session_faults(self) -> bool:
        s = self.spec
        return s.no_answer + s.corrupt_frame + s.drop + s.slow > 0.0

    def next_session(self, meter_id: int) -> tuple[SessionFault, int]:
        """The fault of this meter's next session and its :meth:`fault_point`; counts it.

        Only fleets with per-session faults count sessions, so a clean fleet keeps no
        per-meter state at all.
        """
        if not self.has_session_faults:
            return SessionFault.NONE, 0
        n = self._sessions.get(meter_id, 0)
        self._sessions[meter_id] = n + 1
        return self.session_fault(meter_id, n), self.fault_point(meter_id, n)

    def next_session_fault(self, meter_id: int) -> SessionFault:
        """The fault of this meter's next session; counts the session."""
        return self.next_session(meter_id)[0]

    def session_fault(self, meter_id: int, attempt: int) -> SessionFault:
        u = unit_hash("session", self.seed, meter_id, attempt)
        s = self.spec
        for share, fault in (
            (s.no_answer, SessionFault.NO_ANSWER),
            (s.corrupt_frame, SessionFault.CORRUPT_FRAME),
            (s.drop, SessionFault.DROP),
            (s.slow, SessionFault.SLOW),
        ):
            if u < share:
                return fault
            u -= share
        return SessionFault.NONE

    def fault_point(self, meter_id: int, attempt: int) -> int:
        """After how many answered APDUs a DROP or CORRUPT_FRAME fault strikes (0..3)."""
        return int(unit_hash("point", self.seed, meter_id, attempt) * 4)
