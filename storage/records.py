"""Row types handed to and returned by :class:`storage.database.Database`.

NamedTuples rather than dataclasses: the collector builds thousands of them per
meter and they convert to insert parameters without attribute look-ups.
Every timestamp is an aware datetime (any zone; stored as UTC).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import NamedTuple


class IntervalRead(NamedTuple):
    """One load-profile entry: physical value = value * 10**scaler."""

    meter_id: str
    channel: str
    ts: datetime
    value: int | None
    scaler: int = 0
    status: int | None = None


class Coverage(NamedTuple):
    """The meter answered a range read in full: entries it lacks in [first, last] do not exist.

    Written with the reads of that answer, so a day with an outage gap still counts as
    complete once the meter has been asked for it.
    """

    meter_id: str
    channel: str
    first: datetime
    last: datetime


class RegisterRead(NamedTuple):
    """A register (billing, instantaneous) value read at ``ts``."""

    meter_id: str
    obis: str
    ts: datetime
    value: int | None
    scaler: int = 0
    unit: int | None = None
    capture_time: datetime | None = None


class Event(NamedTuple):
    """One event-log entry."""

    meter_id: str
    log_obis: str
    ts: datetime
    code: int
    name: str | None = None


class Channel(NamedTuple):
    """A captured object of a meter's load profile, e.g. ``1.0.1.8.0.255:2``."""

    meter_id: str
    channel: str
    unit: int | None = None
    scaler: int = 0
    period_s: int | None = None


class Attempt(NamedTuple):
    """One session with a meter for a collection day, whatever its outcome."""

    meter_id: str
    run_id: str
    day: date
    started: datetime
    finished: datetime | None
    outcome: str  # ok | partial | failed
    error_class: str | None = None
    error: str | None = None
    bytes_tx: int = 0
    bytes_rx: int = 0
    round_trips: int = 0


class MeterRecord(NamedTuple):
    """A meter of the inventory and how to reach it."""

    meter_id: str
    transport: str  # tcp | hdlc-tcp | serial
    host: str | None
    port: int | None
    device: str | None
    physical_address: int | None
    logical_address: int
    client_sap: int
    authentication: str  # none | lls | hls-gmac
    link_id: str
    area: str | None = None
    station: str | None = None
    security_profile: str | None = None
    password_ref: str | None = None
    #: Days before this one are "not expected" in the success rate (None: always there).
    installed_on: date | None = None
    #: Role in its transformer area: "customer" or "transformer" (None: a customer).
    role: str | None = None
    #: The name of the meter's profile (``collector.meter_profiles``; None: none).
    profile: str | None = None


class SessionWrite(NamedTuple):
    """What one session with a meter produced, stored together with its attempt.

    The collector hands many of these to ``Database.store_sessions`` at once (group
    commit): one transaction for a batch of meters instead of several per meter.
    """

    channels: list[Channel]
    registers: list[RegisterRead]
    #: a list, or the session's columns (:class:`storage.interval_columns.IntervalColumns`)
    intervals: Sequence[IntervalRead]
    coverage: list[Coverage]
    attempt: Attempt | None
