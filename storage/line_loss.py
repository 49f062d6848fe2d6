"""Line loss per transformer area: the reads it needs, and the arithmetic of each area.

An area's day is judged on two load-profile entries of every meter in it: the A+ register
captured at the day's first midnight and at the next one. The transformer meter's difference
is what the area was supplied, the customers' differences summed what it sold; the gap is the
loss. Why two stamps and not 96 intervals: the registers are cumulative, so the two values
say the same at a 48th of the reading (and a customer's outage gap in between does not
matter).

:func:`boundary_values` reads the two values out of each meter's day rows (for a delta-coded
row, the value at midnight is its first, stored whole). :func:`area_members` reads the inventory,
:func:`area_losses` is pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import or_, select

from storage import schema
from storage.handle import DatabaseHandle
from storage.interval_codec import bitmap_int, element_at
from storage.interval_write import DAY_S, epoch_us

_DAY_US = DAY_S * 1_000_000

#: Statuses of an area's day.
OK = "ok"
OUT_OF_BAND = "out_of_band"
INCOMPLETE = "incomplete"
NO_TRANSFORMER = "no_transformer"
#: How many meters lacking a value an area lists (the count is always whole).
MAX_LISTED = 10

#: One boundary value: ``(meter_id, ts, value, scaler)``; the physical value is
#: ``value * 10**scaler`` (Wh for the A+ channel).
BoundaryValue = tuple[str, datetime, int | None, int]


@dataclass(frozen=True, slots=True)
class AreaMember:
    """A meter of the inventory in a transformer area, and its role there."""

    meter_id: str
    area: str
    role: str  # customer | transformer


@dataclass(frozen=True, slots=True)
class AreaLoss:
    """One area's day. Energy in kWh (exact decimals); ``loss_rate`` is loss / supplied.

    ``supplied_kwh`` is None when the transformer meter lacks a value (or there is none);
    ``sold_kwh`` sums the customers that have both values (``customers_counted`` of
    ``customers``); ``loss_kwh`` and ``loss_rate`` are None unless the area is whole.
    """

    area: str
    status: str
    transformer: str | None
    customers: int
    customers_counted: int
    supplied_kwh: Decimal | None
    sold_kwh: Decimal
    loss_kwh: Decimal | None
    loss_rate: float | None
    missing_count: int
    missing: tuple[str, ...]


def boundary_values(
    db: DatabaseHandle, channel: str, stamps: Sequence[datetime], area: str | None = None
) -> Iterator[BoundaryValue]:
    """``(meter_id, ts, value, scaler)`` of ``channel`` at ``stamps`` for every meter of the
    inventory that is in an area (of ``area`` only, when given); entries not stored are
    simply absent. One set-based statement: the meters joined to their reads at the stamps.
    """
    if not stamps:
        return
    d, x = schema.interval_days, schema.interval_extra
    mk, ck, m = schema.interval_meters, schema.interval_channels, schema.meters
    wanted = {epoch_us(t): t for t in stamps}
    days = sorted({us // _DAY_US for us in wanted})
    keyed = mk.join(m, m.c.meter_id == mk.c.meter_id)
    in_area = [m.c.area.is_not(None)] + ([m.c.area == area] if area is not None else [])
    channel_key = select(ck.c.channel_key).where(ck.c.channel == channel).scalar_subquery()
    rows = db.execute_read(
        select(mk.c.meter_id, d.c.day, d.c.period_s, d.c.scaler, d.c.present, d.c.vals, d.c.nulls)
        .select_from(keyed.join(d, d.c.meter_key == mk.c.meter_key))
        .where(d.c.channel_key == channel_key, d.c.day.in_(days), *in_area)
    )
    for meter_id, day, period, scaler, present, vals, nulls in rows:
        base = day * _DAY_US
        bits = bitmap_int(present)
        null_bits = bitmap_int(nulls)
        n = bits.bit_count()
        for us, ts in wanted.items():
            slot, off = divmod(us - base, period * 1_000_000)
            if off or not 0 <= slot < 86400 // period or not bits >> slot & 1:
                continue
            index = (bits & ((1 << slot) - 1)).bit_count()
            value = None if null_bits >> slot & 1 else element_at(vals, n, index)
            yield str(meter_id), ts, value, int(scaler)
    extra = db.execute_read(
        select(mk.c.meter_id, x.c.ts_us, x.c.value, x.c.scaler)
        .select_from(keyed.join(x, x.c.meter_key == mk.c.meter_key))
        .where(x.c.channel_key == channel_key, x.c.ts_us.in_(list(wanted)), *in_area)
    )
    for meter_id, us, value, scaler in extra:
        yield str(meter_id), wanted[int(us)], value, int(scaler)


def area_members(db: DatabaseHandle, day: date, area: str | None = None) -> list[AreaMember]:
    """Meters of the inventory in an area (of ``area`` only, when given) and installed by
    ``day``, by area and id. Disabled meters count: they still draw energy, so an area
    with one is incomplete rather than short of what it sold."""
    m = schema.meters
    stmt = (
        select(m.c.meter_id, m.c.area, m.c.role)
        .where(
            m.c.area.is_not(None),
            or_(m.c.installed_on.is_(None), m.c.installed_on <= day),
        )
        .order_by(m.c.area, m.c.meter_id)
    )
    if area is not None:
        stmt = stmt.where(m.c.area == area)
    return [
        AreaMember(str(meter_id), str(a), "transformer" if role == "transformer" else "customer")
        for meter_id, a, role in db.execute_read(stmt)
    ]


def _kwh(value: int, scaler: int) -> Decimal:
    return Decimal(value).scaleb(scaler - 3)


def area_losses(
    members: Iterable[AreaMember],
    values: Iterable[BoundaryValue],
    start: datetime,
    end: datetime,
    band: tuple[float, float],
) -> list[AreaLoss]:
    """Each area's supplied, sold and lost energy between the stamps ``start`` and ``end``,
    and its status against ``band`` (the loss rates that are ``ok``, bounds included).

    A meter counts only with a value at both stamps; the transformer's A+ must not fall
    and neither may a customer's (a register that runs back is a replaced meter or bad
    data, and is listed as missing rather than trusted).
    """
    low, high = band
    at: dict[str, dict[datetime, Decimal]] = defaultdict(dict)
    for meter_id, ts, value, scaler in values:
        if value is not None:
            at[meter_id][ts] = _kwh(value, scaler)

    def delta(meter_id: str) -> Decimal | None:
        seen = at.get(meter_id, {})
        a, b = seen.get(start), seen.get(end)
        if a is None or b is None or b < a:
            return None
        return b - a

    by_area: dict[str, list[AreaMember]] = defaultdict(list)
    for member in members:
        by_area[member.area].append(member)
    out = []
    for area in sorted(by_area):
        group = by_area[area]
        transformers = [m.meter_id for m in group if m.role == "transformer"]
        customers = [m.meter_id for m in group if m.role != "transformer"]
        supply = [delta(meter_id) for meter_id in transformers]
        missing = [m for m, d in zip(transformers, supply, strict=True) if d is None]
        # (an inventory has one transformer per area; were there more, they would add up)
        supplied: Decimal | None = None
        if transformers and not missing:
            supplied = sum((d for d in supply if d is not None), Decimal(0))
        sold = Decimal(0)
        counted = 0
        for meter_id in customers:
            d = delta(meter_id)
            if d is None:
                missing.append(meter_id)
            else:
                sold += d
                counted += 1
        loss: Decimal | None = None
        rate: float | None = None
        if not transformers:
            status = NO_TRANSFORMER
        elif missing:
            status = INCOMPLETE
        else:
            assert supplied is not None
            loss = supplied - sold
            rate = float(loss / supplied) if supplied > 0 else None
            status = OK if rate is not None and low <= rate <= high else OUT_OF_BAND
        out.append(
            AreaLoss(
                area=area,
                status=status,
                transformer=transformers[0] if transformers else None,
                customers=len(customers),
                customers_counted=counted,
                supplied_kwh=supplied,
                sold_kwh=sold,
                loss_kwh=loss,
                loss_rate=rate,
                missing_count=len(missing),
                missing=tuple(missing[:MAX_LISTED]),
            )
        )
    return out
