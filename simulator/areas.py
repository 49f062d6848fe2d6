"""Transformer areas (line loss): customers grouped under one transformer meter each.

Why: a utility judges each area by the energy its transformer meter supplied against the
energy its customer meters sold; the gap is technical loss (a few percent) plus whatever
meters fail to register (theft, faults). The simulator plays both sides so a report on
collected data can be held against the exact truth.

Model (all deterministic from the fleet seed, pure functions of meter and meter time):

* :class:`AreaPlan` groups the fleet's customer meters in meter-number order into areas of
  ``area_size``; area ``k``'s transformer meter is meter ``first_meter + customers + k``.
* Each area has a seeded technical loss of 2-6 % (``loss_bp``, basis points). The
  transformer's A+ at meter time ``T`` is ``floor(sum of its customers' true A+ at T x
  (1 + loss))``, so over any interval it supplies the customers' true consumption plus the
  loss (to within 1 Wh of rounding). Reactive registers follow the same rule; its A- is 0
  (customers' PV export is not netted: the area's supply is its customers' import).
* A seeded share of customers under-register: they hold ``floor(true x per_mille / 1000)``
  of every import register (A+, its tariffs, R+, R-, maximum demand, power), per_mille
  seeded in 400..900, from the start of the meter's life. Export is unaffected.
* The time axis is each meter's own clock, as everywhere in :mod:`simulator.model`: the
  transformer sums its customers at the same clock reading (drift moves the labels of a
  meter's entries, not the energy), so the truth per stamp range is exact.
* The transformer meter never has an outage (it is the supply's own meter): a 3-phase
  "big" spec of its own meter number, so its passwords, keys and serial are the model's.

Ordinary meters go through :data:`ORDINARY`, which is :mod:`simulator.model` unchanged, so
``model.ground_truth`` stays true for every meter that is neither kind.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from functools import lru_cache

from simulator import model

#: Technical loss per area, basis points of the customers' true consumption.
LOSS_BP_RANGE = (200, 600)
#: What an under-registering meter registers, per mille of its true consumption.
UNDER_PER_MILLE_RANGE = (400, 900)
_BP = 10_000


class Energy:
    """An ordinary meter: the model's values as they are (the base of the other kinds)."""

    def spec(self, meter_id: int, seed: int) -> model.MeterSpec:
        return model.meter_spec(meter_id, seed)

    def registers(self, spec: model.MeterSpec, t: float) -> model.Registers:
        return model.registers(spec, t)

    def load_profile(
        self, spec: model.MeterSpec, start: float, end: float
    ) -> list[model.LoadProfileRow]:
        return model.load_profile(spec, start, end)

    def billing(self, spec: model.MeterSpec, start: float, end: float) -> list[model.BillingRow]:
        return model.billing(spec, start, end)

    def max_demand(self, spec: model.MeterSpec, t: float) -> tuple[int, int]:
        return model.max_demand(spec, t)

    def instantaneous(self, spec: model.MeterSpec, t: float) -> model.Instantaneous:
        return model.instantaneous(spec, t)


ORDINARY = Energy()


class UnderRegistering(Energy):
    """A customer meter that registers ``per_mille`` / 1000 of what its customer draws."""

    def __init__(self, per_mille: int) -> None:
        self.per_mille = per_mille

    def _scale(self, value: int) -> int:
        return value * self.per_mille // 1000

    def registers(self, spec: model.MeterSpec, t: float) -> model.Registers:
        r = model.registers(spec, t)
        s = self._scale
        t1, t2, t3, t4 = r.active_import_tariff
        return dataclasses.replace(
            r,
            active_import=s(r.active_import),
            active_import_tariff=(s(t1), s(t2), s(t3), s(t4)),
            reactive_import=s(r.reactive_import),
            reactive_export=s(r.reactive_export),
            max_demand_w=s(r.max_demand_w),
        )

    def load_profile(
        self, spec: model.MeterSpec, start: float, end: float
    ) -> list[model.LoadProfileRow]:
        s = self._scale
        return [
            (ts, st, s(a), e, s(rp), s(rm))
            for ts, st, a, e, rp, rm in model.load_profile(spec, start, end)
        ]

    def billing(self, spec: model.MeterSpec, start: float, end: float) -> list[model.BillingRow]:
        s = self._scale
        return [
            (ts, s(a), s(t1), s(t2), s(t3), s(t4), e, s(rp), s(rm))
            for ts, a, t1, t2, t3, t4, e, rp, rm in model.billing(spec, start, end)
        ]

    def max_demand(self, spec: model.MeterSpec, t: float) -> tuple[int, int]:
        w, at = model.max_demand(spec, t)
        return self._scale(w), at

    def instantaneous(self, spec: model.MeterSpec, t: float) -> model.Instantaneous:
        inst = model.instantaneous(spec, t)
        return model.Instantaneous(
            inst.voltage_dv,
            tuple(self._scale(i) for i in inst.current_ca),
            tuple(self._scale(p) for p in inst.power_w),
        )


@lru_cache(maxsize=4096)
def transformer_spec(meter_id: int, seed: int) -> model.MeterSpec:
    """The model's spec of ``meter_id``, made a 3-phase supply meter that never loses power."""
    return dataclasses.replace(
        model.meter_spec(meter_id, seed),
        kind=model.CustomerKind.BIG,
        phases=3,
        pv_daily_wh=0,
        outage_per_mille=0,
    )


def customer_import(customer: int, seed: int, stamps: range) -> list[tuple[int, int, int]]:
    """A customer's *true* (A+, R+, R-) at each stamp of ``stamps`` (its outages included:
    the register holds still while the meter is off, and the model knows its value)."""
    if not stamps:
        return []
    spec = model.meter_spec(customer, seed)
    rows = {r[0]: r for r in model.load_profile(spec, stamps.start, stamps.stop)}
    out = []
    for ts in stamps:
        row = rows.get(ts)
        if row is None:
            reg = model.registers(spec, ts)
            out.append((reg.active_import, reg.reactive_import, reg.reactive_export))
        else:
            out.append((row[2], row[4], row[5]))
    return out


class Transformer(Energy):
    """An area's supply meter: its customers' true import plus the area's technical loss."""

    def __init__(self, customers: tuple[int, ...], seed: int, loss_bp: int) -> None:
        self.customers = customers
        self.seed = seed
        self.loss_bp = loss_bp

    def _up(self, value: int) -> int:
        return value * (_BP + self.loss_bp) // _BP

    def spec(self, meter_id: int, seed: int) -> model.MeterSpec:
        return transformer_spec(meter_id, seed)

    def _sums(self, stamps: range) -> list[tuple[int, int, int]]:
        """Sum over the customers of their true (A+, R+, R-) at each stamp."""
        sums = [(0, 0, 0)] * len(stamps)
        for customer in self.customers:
            values = customer_import(customer, self.seed, stamps)
            sums = [
                (a + va, r + vr, c + vc)
                for (a, r, c), (va, vr, vc) in zip(sums, values, strict=True)
            ]
        return sums

    def registers(self, spec: model.MeterSpec, t: float) -> model.Registers:
        a = rp = rm = 0
        tariffs = [0, 0, 0, 0]
        for customer in self.customers:
            reg = model.registers(model.meter_spec(customer, self.seed), t)
            a += reg.active_import
            rp += reg.reactive_import
            rm += reg.reactive_export
            for k, v in enumerate(reg.active_import_tariff):
                tariffs[k] += v
        up = self._up
        md, md_t = self.max_demand(spec, t)
        return model.Registers(
            time=int(t),
            active_import=up(a),
            active_import_tariff=(up(tariffs[0]), up(tariffs[1]), up(tariffs[2]), up(tariffs[3])),
            active_export=0,
            reactive_import=up(rp),
            reactive_export=up(rm),
            max_demand_w=md,
            max_demand_time=md_t,
        )

    def load_profile(
        self, spec: model.MeterSpec, start: float, end: float
    ) -> list[model.LoadProfileRow]:
        first = max(-(-int(start) // model.INTERVAL) * model.INTERVAL, model.EPOCH)
        stop = min(math.ceil(end), model.LAST_TIME)
        stamps = range(first, stop, model.INTERVAL)
        up = self._up
        return [
            (ts, 0, up(a), 0, up(rp), up(rm))
            for ts, (a, rp, rm) in zip(stamps, self._sums(stamps), strict=True)
        ]

    def billing(self, spec: model.MeterSpec, start: float, end: float) -> list[model.BillingRow]:
        rows: list[model.BillingRow] = []
        first = model.EPOCH + -(-(int(start) - model.EPOCH) // model.DAY) * model.DAY
        for ts in range(first, min(math.ceil(end), model.LAST_TIME), model.DAY):
            r = self.registers(spec, ts)
            t1, t2, t3, t4 = r.active_import_tariff
            rows.append(
                (ts, r.active_import, t1, t2, t3, t4, 0, r.reactive_import, r.reactive_export)
            )
        return rows

    def max_demand(self, spec: model.MeterSpec, t: float) -> tuple[int, int]:
        midnight = model.EPOCH + (int(t) - model.EPOCH) // model.DAY * model.DAY
        n = (int(t) - midnight) // model.INTERVAL
        a = [
            self._up(s[0])
            for s in self._sums(range(midnight, midnight + n * model.INTERVAL + 1, model.INTERVAL))
        ]
        best, best_j = 0, -1
        for j in range(n):
            if a[j + 1] - a[j] > best:
                best, best_j = a[j + 1] - a[j], j
        return best * 4, midnight + (best_j + 1) * model.INTERVAL

    def instantaneous(self, spec: model.MeterSpec, t: float) -> model.Instantaneous:
        base = model.instantaneous(spec, t)
        lo = int(t) // model.INTERVAL * model.INTERVAL
        a0, a1 = (
            self._up(s[0]) for s in self._sums(range(lo, lo + model.INTERVAL + 1, model.INTERVAL))
        )
        watts = (a1 - a0) * 4 // spec.phases
        amps = tuple(watts * 1000 * 100 // (v * 95) if v else 0 for v in base.voltage_dv)
        return model.Instantaneous(base.voltage_dv, amps, (watts,) * spec.phases)


@dataclass(slots=True, frozen=True)
class UnderRegistration:
    """One under-registering customer over a stamp range: what it drew and what it held."""

    meter: int
    per_mille: int
    true_wh: int
    registered_wh: int


@dataclass(slots=True, frozen=True)
class AreaTruth:
    """An area over meter-time stamps ``[start, end]`` (the energy between the two stamps)."""

    area: int
    name: str
    transformer: int
    start: int
    end: int
    loss_bp: int
    supplied_wh: int  # the transformer's A+ delta
    consumed_wh: int  # the customers' true A+ deltas, summed
    sold_wh: int  # the customers' registered A+ deltas, summed
    under: tuple[UnderRegistration, ...]

    @property
    def technical_loss_wh(self) -> int:
        return self.supplied_wh - self.consumed_wh

    @property
    def loss_rate(self) -> float:
        """(supplied - sold) / supplied, the figure a line-loss report gives."""
        return (self.supplied_wh - self.sold_wh) / self.supplied_wh


@dataclass(slots=True, frozen=True)
class AreaPlan:
    """Which meter is in which area, each area's loss, and who under-registers.

    ``customers`` meters numbered from ``first_meter`` (the fleet's TCP and bus meters) in
    areas of ``area_size``; ``under_share`` of them (a seeded sample, exactly
    ``round(share x customers)``) under-register.
    """

    seed: int
    first_meter: int
    customers: int
    area_size: int
    under_share: float = 0.0
    _under: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.area_size < 1:
            raise ValueError(f"area size {self.area_size} must be at least 1")
        if self.customers < 0:
            raise ValueError("customer count must not be negative")
        if not 0.0 <= self.under_share <= 1.0:
            raise ValueError(f"under-registering share {self.under_share} is not within [0, 1]")
        count = round(self.under_share * self.customers)
        rng = random.Random(f"under:{self.seed}")
        picks = sorted(rng.sample(range(self.customers), count)) if count else []
        lo, hi = UNDER_PER_MILLE_RANGE
        under = {
            self.first_meter + k: random.Random(f"under:{self.seed}:{k}").randint(lo, hi)
            for k in picks
        }
        object.__setattr__(self, "_under", under)

    @property
    def areas(self) -> int:
        return -(-self.customers // self.area_size)

    def name(self, area: int) -> str:
        """The inventory's area name of area ``area``."""
        return f"sim{self.seed}-area{area:03d}"

    def customers_of(self, area: int) -> range:
        lo = self.first_meter + area * self.area_size
        return range(lo, min(lo + self.area_size, self.first_meter + self.customers))

    def transformer(self, area: int) -> int:
        """Meter number of area ``area``'s transformer meter."""
        return self.first_meter + self.customers + area

    def area_of(self, number: int) -> int | None:
        """The area of a customer or transformer meter (None: not in this plan)."""
        k = number - self.first_meter
        if 0 <= k < self.customers:
            return k // self.area_size
        k -= self.customers
        return k if 0 <= k < self.areas else None

    def is_transformer(self, number: int) -> bool:
        return 0 <= number - self.first_meter - self.customers < self.areas

    def loss_bp(self, area: int) -> int:
        """The area's technical loss, basis points of its customers' true consumption."""
        return random.Random(f"loss:{self.seed}:{area}").randint(*LOSS_BP_RANGE)

    @property
    def under_registering(self) -> dict[int, int]:
        """Meter number -> per mille it registers, for every under-registering customer."""
        return dict(self._under)

    def energy(self, number: int) -> Energy:
        """How meter ``number`` registers energy."""
        area = self.area_of(number)
        if area is not None and self.is_transformer(number):
            return Transformer(tuple(self.customers_of(area)), self.seed, self.loss_bp(area))
        per_mille = self._under.get(number)
        return ORDINARY if per_mille is None else UnderRegistering(per_mille)

    def truth(self, area: int, start: int, end: int) -> AreaTruth:
        """Supplied, true and sold energy of ``area`` between meter-time stamps start and end."""
        if not 0 <= area < self.areas:
            raise ValueError(f"area {area} is not in this plan (0..{self.areas - 1})")
        number = self.transformer(area)
        supply = self.energy(number)
        spec = supply.spec(number, self.seed)
        supplied = (
            supply.registers(spec, end).active_import - supply.registers(spec, start).active_import
        )
        consumed = sold = 0
        under: list[UnderRegistration] = []
        for customer in self.customers_of(area):
            energy = self.energy(customer)
            cspec = energy.spec(customer, self.seed)
            drawn = (
                model.registers(cspec, end).active_import
                - model.registers(cspec, start).active_import
            )
            held = (
                energy.registers(cspec, end).active_import
                - energy.registers(cspec, start).active_import
            )
            consumed += drawn
            sold += held
            if customer in self._under:
                under.append(UnderRegistration(customer, self._under[customer], drawn, held))
        return AreaTruth(
            area=area,
            name=self.name(area),
            transformer=number,
            start=start,
            end=end,
            loss_bp=self.loss_bp(area),
            supplied_wh=supplied,
            consumed_wh=consumed,
            sold_wh=sold,
            under=tuple(under),
        )
