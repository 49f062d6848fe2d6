"""Line loss per transformer area: the simulator's area model, the inventory role, the pure
per-area arithmetic, and ``hes report --line-loss`` end to end against the simulator's truth.

End to end: a seeded fleet of 3 areas of 4 customers (two areas on GPRS meters, one on an
RS-485 bus) plus their 3 transformer meters, one customer under-registering (area 1) and one
customer the collector cannot reach (area 0, its inventory row points at an address the fleet
does not serve). The real ``hes meters import``, ``hes collect`` and ``hes report`` run in
subprocesses; every area's figures are held against ``AreaPlan.truth``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_collector_fleet import FleetThread, plan_text
from typer.testing import CliRunner

from app.serve_config import load_config
from cli import app
from collector.inventory import InventoryError, parse_inventory
from collector.plan import PlanError, parse_plan
from contracts.meters import INVENTORY_COLUMNS
from simulator import model
from simulator.areas import ORDINARY, AreaPlan, Transformer, UnderRegistering
from simulator.fleet import Fleet, FleetSpec, meter_id_text, meter_number
from storage.database import open_database
from storage.gaps import day_window
from storage.line_loss import AreaMember, area_losses, area_members, boundary_values
from storage.records import IntervalRead, MeterRecord

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120
#: Seed 4 with 12 customers in areas of 4 and a twelfth under-registering: meter 5 (area 1)
#: registers 44.1 %, enough to push its area far out of the default 0..10 % band.
SEED = 4
DAY = date(2026, 3, 10)
#: The simulator's fixed clock: 05:00 UTC two days after DAY, so every meter holds DAY and
#: the next midnight (collected as ``--day DAY+1`` with one back day).
NOW = datetime(2026, 3, 12, 5, 0, tzinfo=UTC).timestamp()
UNREACHABLE = 2  # a customer of area 0 that the collector cannot reach


def area_plan() -> AreaPlan:
    return AreaPlan(seed=SEED, first_meter=1, customers=12, area_size=4, under_share=1 / 12)


def day_stamps(day: date = DAY) -> tuple[int, int]:
    start, end = day_window(day)
    return int(start.timestamp()), int(end.timestamp())


# -- the simulator's area model ----------------------------------------------------------


def test_transformer_supplies_the_true_consumption_of_its_customers_plus_the_loss() -> None:
    plan = area_plan()
    start, end = day_stamps()
    for area in range(plan.areas):
        number = plan.transformer(area)
        supply = plan.energy(number)
        assert isinstance(supply, Transformer)
        spec = supply.spec(number, SEED)
        loss = plan.loss_bp(area)
        assert 200 <= loss <= 600
        rows = supply.load_profile(spec, start, end + 1)
        assert [r[0] for r in rows] == list(range(start, end + 1, model.INTERVAL))
        a_plus = [r[2] for r in rows]
        assert a_plus == sorted(a_plus), "the transformer's register runs back"
        for a, b in ((start, end), (start + 3600, start + 4500), (start + 36000, end - 900)):
            true = sum(
                model.registers(model.meter_spec(c, SEED), b).active_import
                - model.registers(model.meter_spec(c, SEED), a).active_import
                for c in plan.customers_of(area)
            )
            supplied = (
                supply.registers(spec, b).active_import - supply.registers(spec, a).active_import
            )
            assert abs(supplied - true * (10_000 + loss) / 10_000) <= 1
            assert supplied == a_plus[(b - start) // 900] - a_plus[(a - start) // 900]
        assert model.powered(spec, start + 12 * 3600)
        assert spec.phases == 3


def test_under_registering_meter_holds_its_fraction_and_the_others_the_model() -> None:
    plan = area_plan()
    under = plan.under_registering
    assert len(under) == 1
    (number, per_mille), *_ = under.items()
    assert 400 <= per_mille <= 900
    energy = plan.energy(number)
    assert isinstance(energy, UnderRegistering)
    spec = energy.spec(number, SEED)
    start, end = day_stamps()
    true_rows = model.load_profile(spec, start, end)
    held_rows = energy.load_profile(spec, start, end)
    assert [r[0] for r in held_rows] == [r[0] for r in true_rows]
    assert [r[2] for r in held_rows] == [r[2] * per_mille // 1000 for r in true_rows]
    assert [r[3] for r in held_rows] == [r[3] for r in true_rows]  # export is not affected
    for t in (start, start + 5000, end):
        true = model.registers(spec, t).active_import
        assert energy.registers(spec, t).active_import == true * per_mille // 1000
    truth = plan.truth(plan.area_of(number) or 0, start, end)
    (u,) = truth.under
    assert (u.meter, u.per_mille) == (number, per_mille)
    assert abs(u.registered_wh - u.true_wh * per_mille / 1000) <= 1
    for other in set(range(1, 13)) - {number}:
        assert plan.energy(other) is ORDINARY
        assert plan.area_of(other) == (other - 1) // 4


def test_fleet_serves_areas_and_writes_their_inventory(tmp_path: Path) -> None:
    spec = FleetSpec(
        seed=SEED, tcp_meters=8, buses=1, meters_per_bus=4, tcp_port=0, baudrate=None, area_size=4
    )
    assert (spec.total_meters, spec.transformer_meters, spec.served_tcp) == (12, 3, 11)
    assert spec.locate(13) == ("tcp", 8, 0)
    assert spec.tcp_meter(8) == 13
    with pytest.raises(ValueError, match="not in this fleet"):
        spec.locate(16)
    with FleetThread(Fleet(spec, clock=lambda: NOW)) as fleet:
        path = tmp_path / "fleet.csv"
        assert fleet.write_inventory(path) == 15
    records = {r.meter_id: r for r in parse_inventory(path)}
    plan = spec.area_plan()
    assert plan is not None
    for number in range(1, 16):
        rec = records[meter_id_text(number)]
        area = plan.area_of(number)
        assert area is not None
        assert rec.area == plan.name(area)
        assert rec.role == ("transformer" if number > 12 else "customer")
    assert records[meter_id_text(13)].transport == "tcp"
    assert records[meter_id_text(13)].host == "127.1.0.9"
    plain = FleetSpec(seed=SEED, tcp_meters=2, tcp_port=0)
    assert plain.area_plan() is None and plain.served_tcp == 2


# -- the inventory's role ------------------------------------------------------------------


def _inventory(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "meters.csv"
    path.write_text("meter_id,transport,host,area,role\n" + "\n".join(rows) + "\n")
    return path


def test_inventory_role_is_checked(tmp_path: Path) -> None:
    ok = parse_inventory(_inventory(tmp_path, ["A,tcp,h1,north,", "T,tcp,h2,north,Transformer"]))
    assert [(r.meter_id, r.role) for r in ok] == [("A", "customer"), ("T", "transformer")]
    for rows, message in (
        (["A,tcp,h1,north,feeder"], "role 'feeder' is not one of customer, transformer"),
        (["T,tcp,h1,,transformer"], "role transformer needs an area"),
        (
            ["T1,tcp,h1,north,transformer", "T2,tcp,h2,north,transformer"],
            "'T2' is a second transformer of area 'north' (the first is 'T1', line 2)",
        ),
    ):
        with pytest.raises(InventoryError, match="rejected") as info:
            parse_inventory(_inventory(tmp_path, rows))
        assert message in str(info.value)


def test_plan_line_loss_band(tmp_path: Path) -> None:
    base = plan_text()
    assert parse_plan(base).line_loss.band == (0.0, 0.10)
    plan = parse_plan(base + '\n[line_loss]\nband = [0.01, 0.08]\nchannel = "AP"\n')
    assert (plan.line_loss.band, plan.line_loss.channel) == ((0.01, 0.08), "AP")
    # hes serve's config carries the plan inline, [line_loss] included
    config = tmp_path / "hes.toml"
    config.write_text(base + "\n[line_loss]\nband = [0.0, 0.05]\n", encoding="utf-8")
    assert load_config(config).plan.line_loss.band == (0.0, 0.05)
    for table, message in (
        ("band = [0.2, 0.1]", "line_loss.band: band 0.2:0.1 must satisfy 0 <= low < high"),
        ("band = [0.1]", "line_loss.band: expected [low, high]"),
        ("margin = 1", "line_loss.margin: unknown key"),
    ):
        with pytest.raises(PlanError, match="line_loss") as info:
            parse_plan(base + f"\n[line_loss]\n{table}\n")
        assert message in str(info.value)


# -- the per-area arithmetic ---------------------------------------------------------------

T0 = datetime(2026, 3, 10, tzinfo=UTC)
T1 = T0 + timedelta(days=1)


def _members(customers: int, transformer: bool = True) -> list[AreaMember]:
    out = [AreaMember(f"C{k}", "a", "customer") for k in range(customers)]
    return [*out, AreaMember("T", "a", "transformer")] if transformer else out


@settings(max_examples=200, deadline=None)
@given(
    supplied=st.integers(0, 10**9),
    sold=st.lists(st.integers(0, 10**8), min_size=1, max_size=6),
    scaler=st.integers(-2, 2),
    low=st.floats(0, 0.5),
    width=st.floats(0.001, 0.5),
    gap=st.sampled_from([None, "T", "C0"]),
)
def test_area_arithmetic(
    supplied: int, sold: list[int], scaler: int, low: float, width: float, gap: str | None
) -> None:
    base = 10**6
    values = [("T", T0, base, scaler), ("T", T1, base + supplied, scaler)]
    for k, s in enumerate(sold):
        values += [(f"C{k}", T0, base, scaler), (f"C{k}", T1, base + s, scaler)]
    values = [v for v in values if not (v[0] == gap and v[1] == T1)]
    band = (low, low + width)
    (a,) = area_losses(_members(len(sold)), values, T0, T1, band)
    unit = Decimal(10) ** (scaler - 3)
    counted = [s for k, s in enumerate(sold) if f"C{k}" != gap]
    assert a.sold_kwh == sum(counted) * unit
    assert a.customers == len(sold) and a.customers_counted == len(counted)
    if gap is not None:
        assert (a.status, a.missing, a.loss_rate) == ("incomplete", (gap,), None)
        return
    assert a.supplied_kwh == supplied * unit
    assert a.loss_kwh == (supplied - sum(sold)) * unit
    if supplied == 0:
        assert (a.loss_rate, a.status) == (None, "out_of_band")
        return
    rate = (supplied - sum(sold)) / supplied
    assert a.loss_rate is not None and a.loss_rate == pytest.approx(rate)
    assert a.status == ("ok" if band[0] <= a.loss_rate <= band[1] else "out_of_band")
    if sum(sold) > supplied:
        assert a.status == "out_of_band"  # negative loss is never ok


def test_area_without_transformer_and_bounded_missing_list() -> None:
    (a,) = area_losses(_members(2, transformer=False), [], T0, T1, (0.0, 0.1))
    assert (a.status, a.transformer, a.supplied_kwh, a.missing_count) == (
        "no_transformer",
        None,
        None,
        2,
    )
    (b,) = area_losses(_members(30), [("T", T0, 1, 0), ("T", T1, 2, 0)], T0, T1, (0.0, 0.1))
    assert (b.status, b.missing_count, len(b.missing)) == ("incomplete", 30, 10)
    # a register that runs back is not trusted
    back = [("T", T0, 5, 0), ("T", T1, 9, 0), ("C0", T0, 5, 0), ("C0", T1, 4, 0)]
    (c,) = area_losses(_members(1), back, T0, T1, (0.0, 0.1))
    assert (c.status, c.missing) == ("incomplete", ("C0",))


# -- the storage query (SQLite and PostgreSQL) ---------------------------------------------


def _record(meter_id: str, area: str | None, role: str | None, **kw: Any) -> MeterRecord:
    return MeterRecord(
        meter_id,
        "tcp",
        "10.0.0.1",
        4059,
        None,
        None,
        1,
        16,
        "none",
        meter_id,
        area,
        role=role,
        **kw,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_boundary_values_and_members(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = str(tmp_path / "hes.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    records = [
        _record("T1", "a1", "transformer"),
        _record("C1", "a1", "customer"),
        _record("C2", "a1", None),
        _record("C3", "a2", "customer"),
        _record("LATE", "a2", "customer", installed_on=(T1 + timedelta(days=3)).date()),
        _record("LONE", None, None),
    ]
    reads = [
        IntervalRead(m, ch, ts, 100 * k + j, -1)
        for k, m in enumerate(("T1", "C1", "C2", "C3", "LONE"))
        for ch in ("1.0.1.8.0.255", "1.0.2.8.0.255")
        for j, ts in enumerate((T0, T0 + timedelta(minutes=15), T1))
    ]
    with open_database(url) as db:
        db.upsert_meters(records)
        assert [m.role for m in db.meters()] == [r.role for r in sorted(records)]
        db.insert_interval_reads(reads)
        got = sorted(boundary_values(db, "1.0.1.8.0.255", (T0, T1)))
        want = sorted(
            (r.meter_id, r.ts, r.value, -1)
            for r in reads
            if r.channel == "1.0.1.8.0.255" and r.ts in (T0, T1) and r.meter_id != "LONE"
        )
        assert got == want
        only = sorted(boundary_values(db, "1.0.1.8.0.255", (T1,), area="a2"))
        assert only == [("C3", T1, 302, -1)]
        assert list(boundary_values(db, "1.0.1.8.0.255", ())) == []
        members = area_members(db, T0.date())
        assert [(m.meter_id, m.area, m.role) for m in members] == [
            ("C1", "a1", "customer"),
            ("C2", "a1", "customer"),
            ("T1", "a1", "transformer"),
            ("C3", "a2", "customer"),
        ]
        assert [m.meter_id for m in area_members(db, T1.date() + timedelta(days=3), "a2")] == [
            "C3",
            "LATE",
        ]
        a1, a2 = area_losses(members, got, T0, T1, (0.0, 0.1))
        # 0.2 Wh supplied, 0.4 Wh sold: a negative loss, never ok
        assert (a1.status, a1.supplied_kwh, a1.sold_kwh, a1.loss_rate) == (
            "out_of_band",
            Decimal("0.0002"),
            Decimal("0.0004"),
            -1.0,
        )
        assert a2.status == "no_transformer"


# -- end to end -------------------------------------------------------------------------------


def hes(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The fleet collected by the real CLI (DAY and the day after); the database path."""
    tmp = tmp_path_factory.mktemp("line_loss")
    spec = FleetSpec(
        seed=SEED,
        tcp_meters=8,
        buses=1,
        meters_per_bus=4,
        tcp_port=0,
        baudrate=None,
        area_size=4,
        under_share=1 / 12,
    )
    with FleetThread(Fleet(spec, clock=lambda: NOW)) as fleet:
        assert fleet.areas == area_plan()  # the truth the tests hold the report against
        inventory = tmp / "meters.csv"
        with inventory.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=INVENTORY_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in fleet.inventory_rows():
                if meter_number(row["meter_id"]) == UNREACHABLE:
                    row["host"] = "127.1.0.200"  # no meter of the fleet answers there
                writer.writerow(row)
        plan = tmp / "plan.toml"
        plan.write_text(plan_text(concurrency=20, back_days=1), encoding="utf-8")
        db = tmp / "hes.db"
        imported = hes("meters", "import", str(inventory), "--db", str(db), home=tmp)
        assert imported.returncode == 0, imported.stderr
        run = hes(
            "collect",
            "--db",
            str(db),
            "--config",
            str(plan),
            "--day",
            (DAY + timedelta(days=1)).isoformat(),
            "--seed",
            "1",
            home=tmp,
        )
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        assert summary["complete"] == 14, summary
    yield db


def report(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return hes(
        "report", "--line-loss", "--date", DAY.isoformat(), "--db", str(db), *args, home=db.parent
    )


runner = CliRunner()


def report_in_process(db: Path, *args: str, day: date = DAY) -> tuple[int, str, str]:
    """The same command through typer's runner (no interpreter start per case)."""
    argv = ["report", "--line-loss", "--date", day.isoformat(), "--db", str(db), *args]
    result = runner.invoke(app, argv)
    return result.exit_code, result.stdout, result.stderr


def _kwh(wh: int) -> float:
    return float(Decimal(wh) / 1000)


def test_report_matches_the_simulators_truth(collected: Path) -> None:
    out = report(collected, "--format", "json")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    plan = area_plan()
    start, end = day_stamps()
    assert (data["day"], data["band"]) == (DAY.isoformat(), {"low": 0.0, "high": 0.1})
    by_area = {a["area"]: a for a in data["areas"]}
    assert set(by_area) == {plan.name(k) for k in range(plan.areas)}
    statuses = {}
    for k in range(plan.areas):
        truth = plan.truth(k, start, end)
        got = by_area[truth.name]
        statuses[k] = got["status"]
        assert got["transformer"] == meter_id_text(truth.transformer)
        assert got["supplied_kwh"] == _kwh(truth.supplied_wh)
        assert got["customers"] == 4
        if k == 0:  # the unreachable customer: counted out, named
            held = plan.energy(UNREACHABLE).registers
            spec = model.meter_spec(UNREACHABLE, SEED)
            short = held(spec, end).active_import - held(spec, start).active_import
            assert got["sold_kwh"] == _kwh(truth.sold_wh - short)
            assert (got["customers_counted"], got["missing_count"]) == (3, 1)
            assert got["missing"] == [meter_id_text(UNREACHABLE)]
            assert got["loss_rate"] is None and got["loss_kwh"] is None
            continue
        assert got["sold_kwh"] == _kwh(truth.sold_wh)
        assert got["loss_kwh"] == _kwh(truth.supplied_wh - truth.sold_wh)
        assert got["loss_rate"] == pytest.approx(truth.loss_rate, abs=1e-12)
        assert (got["customers_counted"], got["missing"]) == (4, [])
        in_band = 0.0 <= truth.loss_rate <= 0.1
        assert got["status"] == ("ok" if in_band else "out_of_band")
    # the scenario: area 1 holds the under-registering meter, far out of band
    (under,) = plan.truth(1, start, end).under
    assert under.meter == 5
    assert statuses == {0: "incomplete", 1: "out_of_band", 2: "ok"}
    assert data["by_status"] == {"incomplete": 1, "out_of_band": 1, "ok": 1}


def test_report_band_area_and_table(collected: Path) -> None:
    plan = area_plan()
    code, out, err = report_in_process(
        collected, "--format", "json", "--band", "0:0.5", "--area", plan.name(1)
    )
    assert code == 0, err
    (only,) = json.loads(out)["areas"]
    assert (only["area"], only["status"]) == (plan.name(1), "ok")
    code, table, err = report_in_process(collected)
    assert code == 0, err
    for text in ("out of band", "incomplete", "ok", plan.name(0), plan.name(2)):
        assert text in table
    assert f"{plan.name(0)}: lacking a value at either midnight: SIM000000002" in table
    assert "areas: 1 incomplete, 1 ok, 1 out of band" in table


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--band", "0.2:0.1"], 2, "--band '0.2:0.1': band 0.2:0.1 must satisfy"),
        (["--band", "ten"], 2, "--band 'ten': give LOW:HIGH"),
        (["--area", "nowhere"], 1, "--area 'nowhere': no meter of the inventory is in it"),
        (["--plot", "x.png"], 2, "--plot does not go with --line-loss"),
    ],
)
def test_report_refuses_bad_input(
    collected: Path, args: list[str], code: int, message: str
) -> None:
    got, _out, err = report_in_process(collected, *args)
    assert got == code
    assert message in err


def test_report_of_an_area_with_no_data(collected: Path) -> None:
    name = area_plan().name(2)
    code, _out, err = report_in_process(collected, "--area", name, day=DAY - timedelta(days=5))
    assert code == 1
    assert f"no 1.0.1.8.0.255 value of area '{name}'" in err
    assert "collect 2026-03-05 and the day after" in err
    result = runner.invoke(app, ["report", "--date", DAY.isoformat(), "--band", "0:1"])
    assert result.exit_code == 2 and "--band needs --line-loss" in result.stderr
