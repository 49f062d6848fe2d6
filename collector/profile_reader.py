"""The one load-profile reader: capture objects, range selection, buffer to rows.

Why one module: a profile-generic buffer is read the same way everywhere (capture_objects and
capture_period first, a selective range access on the clock column, then the buffer, which the
session follows through block transfer), so the collection run (:func:`read_meter`) and the ad
hoc reads (``hes read``, event logs, tests: :func:`read_profile`) share the steps here instead
of each keeping its own copy in a session or service class.

:func:`read_meter` is what one collection session reads: the meter clock, the channel scalers
and registers in one GET-WITH-LIST, then the profile for each missing epoch range, into a
:class:`Readout` that the recorder stores even when the session ends midway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from collector.plan import Group
from collector.session import ProfileData, Session
from protocols import xdlms
from protocols.cosem import (
    CLOCK_CLASS_ID,
    CosemDateTime,
    Obis,
    ProfileColumn,
    ProfileRow,
    ScalerUnit,
    parse_capture_objects,
    profile_rows,
)
from protocols.errors import DecodeError, DlmsError, ProtocolError
from storage.gaps import epoch, from_epoch, group_missing
from storage.records import Channel, Coverage, IntervalRead, RegisterRead

CLASS_PROFILE_GENERIC = 7
REGISTER_CLASSES = (3, 4, 5)
#: Open ends of an ad hoc range read (a meter's buffer holds nothing outside them).
_OPEN_START = datetime(2000, 1, 1, tzinfo=UTC)
_OPEN_END = datetime(2099, 12, 31, tzinfo=UTC)


class PlanMismatch(DlmsError):
    """The meter's profile does not look like the plan says (period or capture objects)."""

    error_class = "plan_mismatch"


@dataclass(slots=True)
class Readout:
    """What one session read so far: stored when the session ends, even midway."""

    channels: list[Channel] = field(default_factory=list)
    intervals: list[IntervalRead] = field(default_factory=list)
    coverage: list[Coverage] = field(default_factory=list)
    registers: list[RegisterRead] = field(default_factory=list)
    register_errors: list[DlmsError] = field(default_factory=list)
    #: epoch (first, last) ranges still missing after a session that ran to its end
    remaining: list[tuple[int, int]] = field(default_factory=list)


# -- the shared steps --------------------------------------------------------------------------


async def read_capture(
    session: Session, obis: str | Obis, *, with_list: bool
) -> tuple[list[ProfileColumn], Any]:
    """capture_objects (parsed) and capture_period, as the meter sends it.

    With ``with_list`` both come in one GET-WITH-LIST round trip (GPRS: ~1 s each); a failed
    item raises its typed error.
    """
    if with_list:
        meta = await session.get_many(
            [(CLASS_PROFILE_GENERIC, obis, 3), (CLASS_PROFILE_GENERIC, obis, 4)]
        )
        for item in meta:
            if isinstance(item, DlmsError):
                raise item
        capture_objects, period = meta
    else:
        capture_objects = await session.get(CLASS_PROFILE_GENERIC, obis, 3)
        period = await session.get(CLASS_PROFILE_GENERIC, obis, 4)
    return parse_capture_objects(capture_objects), period


def range_access(
    clock: ProfileColumn, start: datetime, end: datetime, local: tzinfo | None = None
) -> xdlms.RangeAccess:
    """Selective access by range on the clock column, [start, end] inclusive. With ``local``
    the bounds are wall times in that zone with the deviation "not specified" (a meter whose
    range reads match nothing when the bounds carry one), as its naive stamps are read."""

    def bound(at: datetime) -> bytes:
        if local is not None and at.tzinfo is not None:
            at = at.astimezone(local).replace(tzinfo=None)
        return CosemDateTime.from_datetime(at).to_bytes()

    return xdlms.RangeAccess(restricting=clock, from_value=bound(start), to_value=bound(end))


async def read_buffer(session: Session, obis: str | Obis, access: xdlms.RangeAccess | None) -> Any:
    """The decoded buffer (attribute 2), restricted by ``access`` when given."""
    return await session.get(CLASS_PROFILE_GENERIC, obis, 2, access)


# -- ad hoc reads (CLI, event logs, tests) ----------------------------------------------------


async def read_profile(
    session: Session,
    obis: str | Obis,
    start: datetime | None = None,
    end: datetime | None = None,
) -> ProfileData:
    """Read a profile-generic buffer, restricted to [start, end] by the clock column."""
    ln = obis if isinstance(obis, Obis) else Obis.parse(obis)
    # Ask with-list only when the meter granted multiple-references.
    columns, period = await read_capture(session, ln, with_list=session.with_list())
    if not isinstance(period, int):
        raise DecodeError(f"profile {ln}: capture_period is {period!r}")
    access = None
    if start is not None or end is not None:
        clock_col = next((c for c in columns if c.class_id == CLOCK_CLASS_ID), None)
        if clock_col is None:
            raise ProtocolError(f"profile {ln} has no clock column to select a range on")
        local = None if session.range_deviation else UTC
        access = range_access(clock_col, start or _OPEN_START, end or _OPEN_END, local)
    buffer = await read_buffer(session, ln, access)
    if not isinstance(buffer, list):
        raise DecodeError(f"profile {ln}: buffer is {type(buffer).__name__}, not an array")
    return ProfileData(
        obis=str(ln),
        columns=columns,
        capture_period=period,
        rows=profile_rows(buffer, columns, period),
    )


# -- one collection session -------------------------------------------------------------------


def check_profile(group: Group, columns: list[ProfileColumn], period: Any) -> int:
    """The clock column index; PlanMismatch when the meter's profile is not the plan's."""
    prof = group.profile
    where = f"profile {prof.obis} of group {group.name!r}"
    if period != prof.period_s:
        raise PlanMismatch(f"{where}: meter capture_period {period!r}, plan {prof.period_s}")
    clock_index = next((i for i, c in enumerate(columns) if c.class_id == CLOCK_CLASS_ID), None)
    if clock_index is None:
        raise PlanMismatch(f"{where}: the meter's profile has no clock column")
    needed = [*prof.channels, *([prof.status_column] if prof.status_column is not None else [])]
    for col in needed:
        if col >= len(columns):
            raise PlanMismatch(f"{where}: column {col}, the meter has {len(columns)} columns")
    for col, name in prof.channels.items():
        try:
            named = Obis.parse(name)
        except (DecodeError, ValueError):
            continue
        if columns[col].obis != named:
            raise PlanMismatch(
                f"{where}: column {col} is {columns[col].obis}, the plan calls it {name}"
            )
    return clock_index


async def read_meter(
    session: Session,
    meter_id: str,
    group: Group,
    ranges: list[tuple[int, int]],
    out: Readout,
    *,
    registers_done: bool,
    tz: tzinfo,
    now: Callable[[], datetime],
) -> None:
    """Clock, registers, channel scalers, then the profile for each missing range.

    Everything read lands in ``out`` as it arrives, so a session cut short keeps what it got.
    """
    prof = group.profile
    clock = await session.read_clock()
    try:
        meter_now: datetime | None = _aware(clock.to_datetime(), tz)
    except DecodeError:
        meter_now = None
    clock_ok = meter_now is not None and not clock.invalid
    # The collector asks with-list unconditionally: its scaler/register read needs it anyway.
    columns, period = await read_capture(session, prof.obis, with_list=True)
    clock_index = check_profile(group, columns, period)
    items: list[tuple[int, str | Obis, int]] = []
    scaled = [
        (i, name) for i, name in prof.channels.items() if columns[i].class_id in REGISTER_CLASSES
    ]
    for i, _ in scaled:
        items.append((columns[i].class_id, columns[i].obis, 3))
    want_registers = not registers_done and bool(group.registers)
    if want_registers:
        for obis in group.registers:
            items += [(3, obis, 2), (3, obis, 3)]
    results = await session.get_many(items) if items else []
    scalers: dict[str, ScalerUnit] = {}
    for (_, name), value in zip(scaled, results, strict=False):
        if isinstance(value, DlmsError):
            raise value
        scalers[name] = ScalerUnit.from_value(value)
    out.channels = [
        Channel(
            meter_id,
            name,
            scalers[name].unit if name in scalers else None,
            scalers[name].scaler if name in scalers else 0,
            prof.period_s,
        )
        for name in prof.channels.values()
    ]
    if want_registers:
        read_at = meter_now if clock_ok and meter_now is not None else now()
        reads: list[RegisterRead] = []
        rest = results[len(scaled) :]
        for k, obis in enumerate(group.registers):
            value, su = rest[2 * k], rest[2 * k + 1]
            bad = value if isinstance(value, DlmsError) else su
            if isinstance(bad, DlmsError):
                out.register_errors.append(bad)
                continue
            unit = ScalerUnit.from_value(su)
            reads.append(
                RegisterRead(
                    meter_id,
                    obis,
                    read_at,
                    value if isinstance(value, int) else None,
                    unit.scaler,
                    unit.unit,
                )
            )
        out.registers.extend(reads)
    limit = None
    if clock_ok and meter_now is not None:
        limit = epoch(meter_now) // prof.period_s * prof.period_s
    specs = [
        (col, name, scalers[name].scaler if name in scalers else 0)
        for col, name in prof.channels.items()
    ]
    for first, last in ranges:
        if limit is not None and first > limit:
            out.remaining.append((first, last))  # the meter has not closed these yet
            continue
        local = None if session.range_deviation else tz
        access = range_access(columns[clock_index], from_epoch(first), from_epoch(last), local)
        buffer = await read_buffer(session, prof.obis, access)
        rows = profile_rows(buffer, columns, prof.period_s, clock_index)
        _take_rows(out, rows, meter_id, group, specs, first, last, limit, tz)


def _take_rows(
    out: Readout,
    rows: list[ProfileRow],
    meter_id: str,
    group: Group,
    specs: list[tuple[int, str, int]],
    first: int,
    last: int,
    limit: int | None,
    tz: tzinfo,
) -> None:
    """The rows of one range into ``out``: intervals, coverage, and what is still missing."""
    prof = group.profile
    period = prof.period_s
    new_tuple = tuple.__new__
    reads_out: list[IntervalRead] = []
    received: set[int] = set()
    add = reads_out.append
    status_col = prof.status_column
    for row in rows:
        ts = _aware(row.timestamp, tz)
        stamp = epoch(ts)
        if not first <= stamp <= last:
            continue
        received.add(stamp)
        values = row.values
        status = None
        if status_col is not None:
            raw_status = values[status_col]
            status = raw_status if isinstance(raw_status, int) else None
        for col, name, scaler in specs:
            value = values[col]
            if type(value) is not int:  # neither a bool nor a non-integer cell
                value = None
            # tuple.__new__: the NamedTuple's own constructor costs twice as much
            add(new_tuple(IntervalRead, (meter_id, name, ts, value, scaler, status)))
    covered_to = first - period  # the meter answered [first, covered_to] in full
    if limit is not None and min(last, limit) >= first:
        covered_to = min(last, limit)
        end = from_epoch(covered_to)
        out.coverage.extend(
            Coverage(meter_id, name, from_epoch(first), end) for name in prof.channels.values()
        )
    out.intervals.extend(reads_out)
    # every channel comes from the same rows: a stamp is missing on all or none
    missing = [t for t in range(covered_to + period, last + 1, period) if t not in received]
    out.remaining.extend(group_missing(missing, period))


def _aware(ts: datetime, tz: Any) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=tz)
