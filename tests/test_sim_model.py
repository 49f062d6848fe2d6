"""Properties of the deterministic meter data model (simulator/model.py)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import model
from simulator.model import (
    DAY,
    INTERVAL,
    CustomerKind,
    ground_truth,
    load_profile,
    meter_spec,
    registers,
)

SEED = 42
# 2026-03-02T00:00Z, a Monday
T0 = 1772409600


def _day(t: int) -> int:
    return (t - model.EPOCH) // DAY


def _meters_with_outage(n: int, day: int, seed: int = SEED) -> list[int]:
    """Meter ids (searched from 0) that have an outage on ``day``."""
    found: list[int] = []
    mid = 0
    while len(found) < n:
        if model.outage(meter_spec(mid, seed), day) is not None:
            found.append(mid)
        mid += 1
    return found


def _meter_of_kind(kind: CustomerKind, *, pv: bool = False) -> int:
    mid = 0
    while True:
        spec = meter_spec(mid, SEED)
        if spec.kind is kind and (spec.pv_daily_wh > 0) == pv:
            return mid
        mid += 1


def _fields(r: model.Registers) -> tuple[int, ...]:
    return (
        r.active_import,
        *r.active_import_tariff,
        r.active_export,
        r.reactive_import,
        r.reactive_export,
    )


def test_determinism() -> None:
    a = ground_truth(123, SEED, T0, T0 + 2 * DAY)
    model._day.cache_clear()
    meter_spec.cache_clear()
    b = ground_truth(123, SEED, T0, T0 + 2 * DAY)
    assert a == b
    c = ground_truth(123, SEED + 1, T0, T0 + 2 * DAY)
    assert c.load_profile != a.load_profile


def test_kind_distribution() -> None:
    n = 20_000
    kinds = Counter(meter_spec(i, 7).kind for i in range(n))
    assert 0.88 < kinds[CustomerKind.HOUSEHOLD] / n < 0.92
    assert 0.08 < kinds[CustomerKind.BUSINESS] / n < 0.10
    assert 0.006 < kinds[CustomerKind.BIG] / n < 0.014
    households = [meter_spec(i, 7) for i in range(n) if meter_spec(i, 7).kind == 0]
    pv_share = sum(1 for s in households if s.pv_daily_wh) / len(households)
    assert 0.04 < pv_share < 0.06
    assert {meter_spec(i, 7).phases for i in range(200)} == {1, 3}


def test_spec_identity_fields() -> None:
    spec = meter_spec(17, SEED)
    assert spec.logical_device_name == b"HES0000000000017"
    assert len(spec.logical_device_name) == 16
    assert spec.serial_number == "SIM000000017"
    assert len(spec.password) == 8
    specs = [meter_spec(i, SEED) for i in range(2000)]
    assert len({s.serial_number for s in specs}) == 2000
    drifts = sorted(abs(s.drift_ppm) for s in specs)
    assert drifts[len(drifts) // 2] <= 50
    assert drifts[-1] > 50  # a few meters drift badly


def test_typical_daily_energy_per_kind() -> None:
    for kind, typical in model.TYPICAL_DAILY_WH.items():
        mid = _meter_of_kind(kind)
        spec = meter_spec(mid, SEED)
        rows = model.billing(spec, T0, T0 + 29 * DAY)
        mean = (rows[-1][1] - rows[0][1]) / (len(rows) - 1)
        assert 0.3 * typical < mean < 3.0 * typical


def test_registers_monotonic_over_days_with_outages() -> None:
    day = _day(T0) + 3
    for mid in [*_meters_with_outage(4, day), _meter_of_kind(CustomerKind.HOUSEHOLD, pv=True)]:
        spec = meter_spec(mid, SEED)
        prev = _fields(registers(spec, T0 + 2 * DAY))
        for t in range(T0 + 2 * DAY + 413, T0 + 5 * DAY, 413):
            cur = _fields(registers(spec, t))
            assert all(c >= p for c, p in zip(cur, prev, strict=True)), (mid, t)
            prev = cur


@settings(max_examples=150, deadline=None)
@given(
    mid=st.integers(0, 200_000),
    # LAST_TIME is the first instant past the tables, so t1 + gap must stay below it.
    t1=st.integers(model.EPOCH, model.LAST_TIME - 10 * DAY - 1),
    gap=st.integers(0, 10 * DAY),
)
def test_registers_monotonic_property(mid: int, t1: int, gap: int) -> None:
    spec = meter_spec(mid, SEED)
    a = _fields(registers(spec, t1))
    b = _fields(registers(spec, t1 + gap))
    assert all(y >= x for x, y in zip(a, b, strict=True))


def test_day_deltas_never_negative_over_years() -> None:
    """The bounded day noise never undoes a day's minimum consumption (20 years of days)."""
    for kind in CustomerKind:
        for pv in (False, True) if kind is CustomerKind.HOUSEHOLD else (False,):
            spec = meter_spec(_meter_of_kind(kind, pv=pv), SEED)
            rows = model.billing(spec, model.EPOCH, model.LAST_TIME)
            assert len(rows) == model.N_DAYS
            for a, b in itertools.pairwise(rows):
                assert all(y >= x for x, y in zip(a[1:], b[1:], strict=True))


def test_registers_equal_profile_rows_and_deltas() -> None:
    day = _day(T0) + 1
    for mid in [*_meters_with_outage(3, day), 7, _meter_of_kind(CustomerKind.HOUSEHOLD, pv=True)]:
        spec = meter_spec(mid, SEED)
        start, end = T0, T0 + 3 * DAY
        rows = load_profile(spec, start, end)
        for row in rows:
            r = registers(spec, row[0])
            assert row[2:] == (
                r.active_import,
                r.active_export,
                r.reactive_import,
                r.reactive_export,
            )
        # deltas between consecutive rows add up to the register difference over the range
        total = sum(b[2] - a[2] for a, b in itertools.pairwise(rows))
        assert total == registers(spec, rows[-1][0]).active_import - rows[0][2]
        r0, r1 = registers(spec, start), registers(spec, end)
        assert sum(r1.active_import_tariff) == r1.active_import
        assert r1.active_import - r0.active_import == sum(
            model._day(mid, SEED, d).imp[j]
            for d in range(_day(start), _day(end))
            for j in range(model.INTERVALS_PER_DAY)
        )


def test_outage_gaps_status_and_power_events() -> None:
    day = _day(T0) + 2
    for mid in _meters_with_outage(6, day):
        spec = meter_spec(mid, SEED)
        down, up = model.outage(spec, day)  # type: ignore[misc]
        assert 60 <= up - down <= model.MAX_OUTAGE_S
        day_start = model.EPOCH + day * DAY
        assert day_start + INTERVAL <= down and up <= day_start + DAY - INTERVAL
        rows = load_profile(spec, day_start, day_start + DAY)
        stamps = {r[0] for r in rows}
        expected = {t for t in range(day_start, day_start + DAY, INTERVAL) if not down <= t < up}
        assert stamps == expected
        flagged = {r[0] for r in rows if r[1] & model.STATUS_POWER_DOWN}
        assert flagged == {t for t in expected if min(t, up) - max(t - INTERVAL, down) > 0}
        assert flagged  # the first entry after power returns carries "power down"
        assert model.power_events(spec, day_start, day_start + DAY) == [
            (down, model.EVENT_POWER_DOWN),
            (up, model.EVENT_POWER_UP),
        ]
        # no consumption while off
        assert _fields(registers(spec, down)) == _fields(registers(spec, up - 1))
        assert registers(spec, up + INTERVAL).active_import >= registers(spec, up).active_import
        assert not model.powered(spec, (down + up) / 2)
        assert model.powered(spec, up)
        inst = model.instantaneous(spec, (down + up) / 2)
        assert set(inst.voltage_dv) == {0} and set(inst.power_w) == {0}


def test_most_meters_have_no_outage() -> None:
    days = range(_day(T0), _day(T0) + 30)
    with_outage = sum(
        1 for mid in range(1000) if any(model.outage(meter_spec(mid, SEED), d) for d in days)
    )
    assert 0.02 < with_outage / 1000 < 0.35


def test_billing_is_midnight_freeze() -> None:
    spec = meter_spec(_meter_of_kind(CustomerKind.BUSINESS), SEED)
    rows = model.billing(spec, T0, T0 + 5 * DAY)
    assert [r[0] for r in rows] == [T0 + d * DAY for d in range(5)]
    for row in rows:
        r = registers(spec, row[0])
        assert row[1:] == (
            r.active_import,
            *r.active_import_tariff,
            r.active_export,
            r.reactive_import,
            r.reactive_export,
        )
        assert row[1] == sum(row[2:6])


def test_max_demand_is_largest_interval_since_midnight() -> None:
    spec = meter_spec(11, SEED)
    t = T0 + 10 * DAY + 15 * 3600 + 123
    rows = load_profile(spec, T0 + 10 * DAY, t + 1)
    deltas = [(b[2] - a[2], b[0]) for a, b in itertools.pairwise(rows)]
    best = max(d for d, _ in deltas)
    first_best_time = next(ts for d, ts in deltas if d == best)
    r = registers(spec, t)
    assert r.max_demand_w == best * 4
    assert r.max_demand_time == first_best_time
    assert registers(spec, T0).max_demand_w == 0


def test_shapes_look_like_customers() -> None:
    def mean_hourly(mid: int, day: int, hours: range) -> float:
        dd = model._day(mid, SEED, day)
        return sum(dd.imp[h * 4 + q] for h in hours for q in range(4)) / len(hours)

    home = _meter_of_kind(CustomerKind.HOUSEHOLD)
    monday = _day(T0)
    assert mean_hourly(home, monday, range(18, 21)) > 1.5 * mean_hourly(home, monday, range(1, 5))
    shop = _meter_of_kind(CustomerKind.BUSINESS)
    sunday = monday + 6
    assert mean_hourly(shop, monday, range(9, 17)) > 3 * mean_hourly(shop, monday, range(0, 5))
    assert sum(model._day(shop, SEED, monday).imp) > 2 * sum(model._day(shop, SEED, sunday).imp)
    pv = _meter_of_kind(CustomerKind.HOUSEHOLD, pv=True)
    dd = model._day(pv, SEED, monday)
    assert sum(dd.exp) > 0
    assert sum(dd.exp[:20]) == 0 and sum(dd.exp[84:]) == 0  # no export at night


def test_meter_clock_drift_and_inverse() -> None:
    spec = meter_spec(99, SEED)
    t = spec.sync_reference + 30 * DAY
    mt = model.meter_clock(spec, t)
    assert mt - t == pytest.approx(spec.drift_ppm * 1e-6 * 30 * DAY)
    assert model.true_time(spec, mt) == pytest.approx(t)


def test_events_are_seeded_and_outside_outages() -> None:
    found = 0
    for mid in range(300):
        spec = meter_spec(mid, SEED)
        evs = model.events(spec, T0, T0 + 60 * DAY)
        assert evs == sorted(evs)
        for ts, code in evs:
            assert T0 <= ts < T0 + 60 * DAY
            assert code in {4, 5, 40, 41, 44, 45, 47}
            assert model.powered(spec, ts)
        found += len(evs)
    assert found > 0


def test_ground_truth_bundle() -> None:
    gt = ground_truth(5, SEED, T0, T0 + DAY)
    spec = meter_spec(5, SEED)
    assert gt.registers == registers(spec, T0 + DAY)
    assert gt.load_profile == load_profile(spec, T0, T0 + DAY)
    assert gt.billing == model.billing(spec, T0, T0 + DAY)
    assert len(gt.billing) == 1
    assert gt.load_profile[0][0] == T0 and gt.load_profile[-1][0] < T0 + DAY


def test_out_of_range_day_rejected() -> None:
    with pytest.raises(ValueError):
        registers(meter_spec(1, SEED), model.LAST_TIME + DAY)


def test_outage_never_removes_a_whole_tariff_or_the_pv_window() -> None:
    """The allocation needs some powered interval in every tariff (and PV) window each day."""
    longest_cover = model.MAX_OUTAGE_S // INTERVAL  # intervals an outage can switch fully off
    for layout in model.LAYOUT_TARIFF:
        for k in set(layout):
            idx = [j for j, t in enumerate(layout) if t == k]
            assert idx[-1] - idx[0] + 1 > longest_cover
    pv = [j for j, w in enumerate(model.PV_SHAPE) if w]
    assert len(pv) > longest_cover and pv == list(range(pv[0], pv[-1] + 1))
