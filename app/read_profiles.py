"""The profiles of ``hes read``, for a person at a bench as much as for a script.

Each column is named (``protocols.obis_names``) and carries the unit and scaler of its
register, read from the meter; each row gives the scaled values beside the raw ones. A read
without ``--from``/``--to`` takes a bounded default range, the last day up to the meter's
clock, and says so; a range that comes back empty says why it likely is.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from collector.profile_reader import REGISTER_CLASSES, read_profile
from collector.session import Session
from protocols.cosem import Obis, ProfileColumn, ScalerUnit
from protocols.errors import DlmsError
from protocols.obis_names import obis_name

#: The range a profile read covers when neither end is given, up to the meter's clock.
DEFAULT_SPAN = timedelta(hours=24)
CLASS_PROFILE_GENERIC = 7


def profile_range(
    start: datetime | None, end: datetime | None, meter_now: datetime
) -> tuple[datetime, datetime, str | None]:
    """The range to read and, when a default filled an end, the sentence that says so."""
    if start is not None and end is not None:
        return start, end, None
    if start is None and end is None:
        return (
            meter_now - DEFAULT_SPAN,
            meter_now,
            "no --from/--to: the last 24 h up to the meter clock",
        )
    if start is None:
        assert end is not None
        return end - DEFAULT_SPAN, end, "no --from: the 24 h before --to"
    return start, meter_now, "no --to: up to the meter clock"


def _column_name(column: ProfileColumn) -> str:
    name = obis_name(column.obis) or str(column.obis)
    return name if column.attribute == 2 else f"{name}, attribute {column.attribute}"


async def _scalers(session: Session, columns: list[ProfileColumn]) -> list[ScalerUnit | None]:
    """The scaler_unit of every register column (None for the others, or unreadable)."""
    wanted = [i for i, c in enumerate(columns) if c.class_id in REGISTER_CLASSES]
    items = [(columns[i].class_id, columns[i].obis, 3) for i in wanted]
    out: list[ScalerUnit | None] = [None] * len(columns)
    if not items:
        return out
    values: list[Any] = []
    if session.with_list():
        values = await session.get_many(items)
    else:
        for item in items:
            try:
                values.append(await session.get(*item))
            except DlmsError as exc:
                values.append(exc)
    for i, value in zip(wanted, values, strict=True):
        if not isinstance(value, DlmsError):
            try:
                out[i] = ScalerUnit.from_value(value)
            except DlmsError:
                out[i] = None
    return out


def jsonable(value: Any) -> Any:
    """A decoded value as JSON takes it: octets in hex, date-times in ISO 8601."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _scaled(value: Any, scaler: ScalerUnit | None) -> Any:
    if scaler is None or not isinstance(value, int) or isinstance(value, bool):
        return jsonable(value)
    return scaler.apply(value)


def _epoch(t: datetime) -> float:
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


async def _matches_without_deviation(
    session: Session, obis: str, start: datetime, end: datetime
) -> bool:
    """Whether the same range, its bounds without a deviation, gives entries (some meters
    match nothing otherwise)."""
    session.range_deviation = False
    try:
        return bool((await read_profile(session, obis, start, end)).rows)
    except DlmsError:
        return False
    finally:
        session.range_deviation = True


async def _why_empty(
    session: Session, obis: str, start: datetime, end: datetime, meter_now: datetime, period: int
) -> str:
    """The likely reason no entry came back for [start, end]."""
    if _epoch(start) > _epoch(meter_now):
        return (
            f"the range starts after the meter clock ({meter_now.isoformat()}): "
            "nothing is captured there yet"
        )
    if period > 0:
        first_capture = -(-int(_epoch(start)) // period) * period
        if first_capture > _epoch(end):
            return f"the range holds no capture instant: the meter captures every {period} s"
    try:
        entries = await session.get(CLASS_PROFILE_GENERIC, obis, 7)
    except DlmsError as exc:
        return f"the meter sent no entry in the range (entries_in_use unreadable: {exc})"
    if entries == 0:
        return "the profile buffer is empty (entries_in_use 0)"
    if session.range_deviation and await _matches_without_deviation(session, obis, start, end):
        return (
            "the meter matches no entry when the range's bounds carry a clock deviation, but "
            "does without one: read it with a meter profile whose clock.range_bounds is "
            '"unspecified"'
        )
    return (
        f"none of the meter's {entries} entries is in the range: the meter was off then, "
        "or its buffer does not reach back that far"
    )


async def profile_json(
    session: Session,
    obis: str,
    start: datetime | None,
    end: datetime | None,
    meter_now: datetime,
) -> dict[str, Any]:
    """One profile as ``hes read`` prints it: range, named columns, scaled rows."""
    first, last, note = profile_range(start, end, meter_now)
    data = await read_profile(session, obis, first, last)
    scalers = await _scalers(session, data.columns)
    columns = []
    for column, scaler in zip(data.columns, scalers, strict=True):
        columns.append(
            {
                "name": _column_name(column),
                "obis": str(column.obis),
                "class_id": column.class_id,
                "attribute": column.attribute,
                "unit": None if scaler is None else scaler.unit_name,
                "scaler": None if scaler is None else scaler.scaler,
            }
        )
    window: dict[str, Any] = {"from": first.isoformat(), "to": last.isoformat()}
    if note is not None:
        window["default"] = note
    out: dict[str, Any] = {
        "obis": data.obis,
        "name": obis_name(Obis.parse(obis)),
        "capture_period": data.capture_period,
        "range": window,
        "columns": columns,
        "rows": [
            {
                "timestamp": jsonable(row.timestamp),
                "values": [_scaled(v, s) for v, s in zip(row.values, scalers, strict=True)],
                "raw": jsonable(row.values),
            }
            for row in data.rows
        ],
    }
    if not data.rows:
        out["empty"] = await _why_empty(session, obis, first, last, meter_now, data.capture_period)
    return out
