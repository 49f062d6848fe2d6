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

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from operator import itemgetter
from typing import Any

from collector.plan import Group, ProfilePlan
from collector.session import ProfileData, Session
from protocols import xdlms
from protocols.cosem import (
    CLOCK_CLASS_ID,
    CosemDateTime,
    Obis,
    ProfileColumn,
    ProfileRow,
    ScalerUnit,
    clock_stamp,
    parse_capture_objects,
    profile_rows,
)
from protocols.errors import DecodeError, DlmsError, ProtocolError
from storage.gaps import epoch, from_epoch, group_missing
from storage.interval_columns import IntervalColumns
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
    #: the session's entries (:class:`IntervalColumns` once the profile's channels are known)
    intervals: Sequence[IntervalRead] = field(default_factory=list)
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
    table = IntervalColumns(meter_id, [name for _, name, _ in specs], [s for _, _, s in specs])
    out.intervals = table
    for first, last in ranges:
        if limit is not None and first > limit:
            out.remaining.append((first, last))  # the meter has not closed these yet
            continue
        local = None if session.range_deviation else tz
        access = xdlms.RangeAccess(
            restricting=columns[clock_index],
            from_value=_clock_octets(first, local),
            to_value=_clock_octets(last, local),
        )
        cells, buffer = await session.get_columns(CLASS_PROFILE_GENERIC, prof.obis, 2, access)
        _take_buffer(out, table, buffer, columns, clock_index, group, specs, first, last,
                     limit, tz, cells)  # fmt: skip


def _take_buffer(
    out: Readout,
    table: IntervalColumns,
    buffer: Any,
    columns: list[ProfileColumn],
    clock_index: int,
    group: Group,
    specs: list[tuple[int, str, int]],
    first: int,
    last: int,
    limit: int | None,
    tz: tzinfo,
    cells: list[tuple[Any, ...]] | None = None,
) -> None:
    """The entries of one range's buffer into ``table``, and the coverage and what is still
    missing into ``out``: column by column when the buffer allows it, else row by row.

    ``cells`` is the buffer decoded as its columns (:meth:`Session.get_columns`), instead of
    ``buffer`` as rows."""
    prof = group.profile
    width = len(columns)
    if cells is None:
        cells = _transposed(buffer, width)
    elif len(cells) != width:
        buffer, cells = list(zip(*cells, strict=True)), None
    taken = None
    if cells is not None:
        taken = _take_columns(table, cells, clock_index, prof, specs, first, last, tz)
    if taken is None:
        if buffer is None and cells is not None:
            buffer = list(zip(*cells, strict=True))
        rows = profile_rows(buffer, columns, prof.period_s, clock_index)
        taken = _take_rows(table, rows, prof, specs, first, last, tz)
    _account(out, taken, meter_id=table.meter_id, group=group, first=first, last=last,
             limit=limit)  # fmt: skip


def _transposed(buffer: Any, width: int) -> list[tuple[Any, ...]] | None:
    """The columns of a buffer of structures of ``width`` cells (None: of anything else)."""
    if type(buffer) is not list or not buffer:
        return None
    if set(map(type, buffer)) != {tuple} or set(map(len, buffer)) != {width}:
        return None
    return list(zip(*buffer, strict=True))


def _take_columns(
    table: IntervalColumns,
    cells: list[tuple[Any, ...]],
    clock_index: int,
    prof: ProfilePlan,
    specs: list[tuple[int, str, int]],
    first: int,
    last: int,
    tz: tzinfo,
) -> set[int] | None:
    """The stamps received, the entries of a buffer's columns taken (C-level passes over
    whole columns); None, with nothing taken, when the buffer is not plain: a null cell
    (compression: :func:`profile_rows` fills it in) or a clock cell that is not a date-time.
    The same entries as :func:`_take_rows` of :func:`profile_rows`, which the property tests
    compare."""
    status_col = prof.status_column
    stamped = _stamps(cells[clock_index], tz)  # None for a null clock cell too
    if stamped is None:
        return None
    stamps, epochs = stamped
    keep: list[int] | None = None
    if min(epochs) < first or max(epochs) > last:
        keep = [i for i, e in enumerate(epochs) if first <= e <= last]
        pick = _picker(keep)
        stamps, epochs = pick(stamps), pick(epochs)
    values = []
    for col, _, _ in specs:
        cell = cells[col]
        kinds = set(map(type, cell))  # a null cell is no int either: one pass finds both
        if kinds != _INT_ONLY:
            if _NULL in kinds:
                return None
            cell = tuple(v if type(v) is int else None for v in cell)
        values.append(cell if keep is None else _picker(keep)(cell))
    if status_col is None:
        statuses: Sequence[int | None] = [None] * len(stamps)
    else:
        cell = cells[status_col]
        kinds = set(map(type, cell))
        if kinds != _INT_ONLY:
            if _NULL in kinds:
                return None
            cell = tuple(v if isinstance(v, int) else None for v in cell)
        statuses = cell if keep is None else _picker(keep)(cell)
    table.extend(stamps, values, statuses)
    return set(epochs)


_INT_ONLY = {int}
_NULL = type(None)


def _picker(keep: list[int]) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """Selects the ``keep`` positions of a column (as a tuple, even for one or none)."""
    if not keep:
        return lambda column: ()
    get = itemgetter(*keep)
    if len(keep) == 1:
        return lambda column: (get(column),)
    return get


#: Per time zone, the (aware stamp, epoch second) of each clock cell seen lately: every meter
#: of a night stamps the same quarter-hours. Bounded; cleared when full.
_STAMPS: dict[tzinfo, dict[bytes, tuple[datetime, int]]] = {}
_STAMPS_MAX = 20_000


def _stamps(raws: Sequence[Any], tz: tzinfo) -> tuple[Sequence[datetime], Sequence[int]] | None:
    """The aware stamps and epoch seconds of a clock column (None: one is not a date-time)."""
    table = _STAMPS.get(tz)
    if table is None:
        table = _STAMPS[tz] = {}
    try:
        pairs = list(map(table.__getitem__, raws))
    except (KeyError, TypeError):
        if len(table) > _STAMPS_MAX:
            table.clear()
        for raw in raws:
            if not isinstance(raw, bytes):
                return None
            if raw not in table:
                try:
                    ts = _aware(clock_stamp(raw), tz)
                except DecodeError:
                    return None
                table[raw] = (ts, epoch(ts))
        pairs = list(map(table.__getitem__, raws))
    stamps, epochs = zip(*pairs, strict=True)
    return stamps, epochs


def _take_rows(
    table: IntervalColumns,
    rows: list[ProfileRow],
    prof: ProfilePlan,
    specs: list[tuple[int, str, int]],
    first: int,
    last: int,
    tz: tzinfo,
) -> set[int]:
    """The rows of one range into ``table``; the stamps received."""
    received: set[int] = set()
    stamps: list[datetime] = []
    values: list[list[int | None]] = [[] for _ in specs]
    statuses: list[int | None] = []
    status_col = prof.status_column
    for row in rows:
        ts = _aware(row.timestamp, tz)
        stamp = epoch(ts)
        if not first <= stamp <= last:
            continue
        received.add(stamp)
        stamps.append(ts)
        cells = row.values
        status = None
        if status_col is not None:
            raw_status = cells[status_col]
            status = raw_status if isinstance(raw_status, int) else None
        statuses.append(status)
        for (col, _, _), column in zip(specs, values, strict=True):
            value = cells[col]
            column.append(value if type(value) is int else None)  # not a bool nor other cell
    table.extend(stamps, values, statuses)
    return received


def _account(
    out: Readout,
    received: set[int],
    *,
    meter_id: str,
    group: Group,
    first: int,
    last: int,
    limit: int | None,
) -> None:
    """Coverage of a range the meter answered in full, and what is still missing of it."""
    prof = group.profile
    period = prof.period_s
    covered_to = first - period  # the meter answered [first, covered_to] in full
    if limit is not None and min(last, limit) >= first:
        covered_to = min(last, limit)
        start, end = _utc(first), _utc(covered_to)
        out.coverage.extend(Coverage(meter_id, name, start, end) for name in prof.channels.values())
    # every channel comes from the same rows: a stamp is missing on all or none
    missing = [t for t in range(covered_to + period, last + 1, period) if t not in received]
    out.remaining.extend(group_missing(missing, period))


#: The UTC datetime of an epoch second: a night's sessions ask for the same few ranges.
_utc = functools.lru_cache(maxsize=4096)(from_epoch)


@functools.lru_cache(maxsize=4096)
def _clock_octets(seconds: int, local: tzinfo | None) -> bytes:
    """The date-time octets of a range bound (an epoch second), as :func:`range_access` gives
    them: UTC with its deviation, or with ``local`` a wall time there without one."""
    at = from_epoch(seconds)
    if local is not None:
        at = at.astimezone(local).replace(tzinfo=None)
    return CosemDateTime.from_datetime(at).to_bytes()


def _aware(ts: datetime, tz: Any) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=tz)
