"""Clock synchronisation: bring a meter clock back within a threshold of head-end time.

Intervals are stamped by the meter's own clock, so a drifting clock files consumption under
the wrong quarter hour. The drift is measured against the midpoint of the GET round trip.
Within +-900 s the clock is corrected with the Clock object's ``shift_time`` method (Blue
Book class 8 method 6, long seconds -900..900): a relative shift does not depend on how long
the request takes to arrive. Beyond that, or when the meter's time cannot be read as one
instant, attribute 2 (``time``) is SET to head-end time. The clock is read again afterwards
and the correction (drift before, residual after, method) is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from collector.session import Session
from protocols import axdr
from protocols.cosem import CosemDateTime
from protocols.enums import InterfaceClass
from protocols.errors import DecodeError, DlmsError
from storage.database import Database
from storage.operations import ClockCorrection, record_clock_correction

CLOCK_OBIS = "0.0.1.0.0.255"
CLASS_CLOCK = InterfaceClass.CLOCK
ATTR_TIME = 2
METHOD_SHIFT_TIME = 6
SHIFT_LIMIT_S = 900
DEFAULT_THRESHOLD_S = 10.0

Now = Callable[[], datetime]


class ClockNotCorrected(DlmsError):
    """The meter accepted the correction but its clock is still beyond the threshold."""

    transient = True
    error_class = "clock_not_corrected"


@dataclass(slots=True, frozen=True)
class ClockCheck:
    """A clock check: drift found, and the correction made (if one was needed)."""

    meter_id: str
    checked_at: datetime
    drift_s: float | None  # None: the meter's time did not name an instant
    corrected: bool
    method: str | None = None
    residual_s: float | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def measure_drift(session: Session, now: Now = _utcnow) -> float | None:
    """Meter clock minus head-end time (s) at the middle of the round trip; None if unreadable."""
    before = now()
    clock = await session.read_clock()
    after = now()
    try:
        meter = clock.to_datetime()
    except DecodeError:
        return None
    if clock.invalid:
        return None
    if meter.tzinfo is None:
        meter = meter.replace(tzinfo=UTC)
    reference = before + (after - before) / 2
    return (meter - reference).total_seconds()


async def sync_clock(
    session: Session,
    meter_id: str,
    *,
    threshold_s: float = DEFAULT_THRESHOLD_S,
    now: Now = _utcnow,
    db: Database | None = None,
) -> ClockCheck:
    """Check the clock; correct it when off by more than ``threshold_s``; record that."""
    if threshold_s < 0:
        raise ValueError(f"clock threshold {threshold_s} s must not be negative")
    checked_at = now()
    drift = await measure_drift(session, now)
    if drift is not None and abs(drift) <= threshold_s:
        return ClockCheck(meter_id, checked_at, drift, corrected=False)
    if drift is not None and abs(drift) <= SHIFT_LIMIT_S:
        method = "shift_time"
        await session.action(CLASS_CLOCK, CLOCK_OBIS, METHOD_SHIFT_TIME, axdr.i16(-round(drift)))
    else:
        method = "set_time"
        stamp = CosemDateTime.from_datetime(now().astimezone(UTC)).to_bytes()
        await session.set(CLASS_CLOCK, CLOCK_OBIS, ATTR_TIME, axdr.octets(stamp))
    residual = await measure_drift(session, now)
    check = ClockCheck(meter_id, checked_at, drift, True, method, residual)
    if db is not None:
        row = ClockCorrection(meter_id, checked_at, drift, residual, method, threshold_s)
        await asyncio.to_thread(record_clock_correction, db, row)
    if residual is None or abs(residual) > threshold_s:
        raise ClockNotCorrected(
            f"{meter_id}: clock still off by {residual} s after {method} (threshold "
            f"{threshold_s:g} s)"
        )
    return check
