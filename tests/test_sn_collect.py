"""``hes collect``'s path for short-name meters: inventory rows naming a meter profile with
``referencing = "sn"`` (the shipped ``sim-short-names``) read an SN-only fleet to the ground
truth; the same fleet without the profile is refused meter by meter (an LN association to
an SN meter), so it is the profile that makes the reads work."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from test_collector_fleet import plan_text
from test_security_collect import stored_vs_truth
from test_sim_mode_e import _name_profile

from app.collect import CollectOptions, collect_async
from collector.inventory import import_inventory
from collector.jobs import RunSummary
from collector.meter_profiles import SHIPPED_DIR, load_profile
from collector.plan import load_plan
from simulator.fleet import Fleet, FleetSpec
from simulator.meter import SimulatedMeter
from simulator.quirks import Quirks, named
from storage.database import open_database

SEED = 2026
METERS = 3


def test_the_shipped_short_name_profile_says_sn() -> None:
    assert load_profile(SHIPPED_DIR / "sim-short-names.toml").referencing == "sn"
    assert load_profile(SHIPPED_DIR / "sim-standard.toml").referencing == "ln"


async def collect_quirky_fleet(
    tmp_path: Path, quirks: Quirks, profile: str | None, run_id: str
) -> tuple[RunSummary, Path, int, date]:
    """``hes collect``'s path for METERS powered TCP meters with ``quirks``, every inventory
    row naming ``profile`` (or none): the summary, the database, the first meter, the day."""
    now = time.time()
    first = next(
        n
        for n in range(1, 1000)
        if all(
            SimulatedMeter(k, SEED).online(now + d) for k in range(n, n + METERS) for d in (0, 300)
        )
    )
    spec = FleetSpec(seed=SEED, tcp_meters=METERS, first_meter=first, quirks=quirks)
    day = datetime.now(UTC).date() - timedelta(days=2)
    db_path, plan = tmp_path / "hes.db", tmp_path / "plan.toml"
    plan.write_text(plan_text(concurrency=METERS), encoding="utf-8")
    async with Fleet(spec) as fleet:
        fleet.write_inventory(tmp_path / "fleet.csv")
        if profile is not None:
            _name_profile(tmp_path / "fleet.csv", profile)
        database = open_database(db_path)
        import_inventory(database, tmp_path / "fleet.csv")
        database.close()
        opts = CollectOptions(
            db=str(db_path), config=str(plan), day=day, run_id=run_id, concurrency=None,
            once=False, seed=1, log_file=None,
        )  # fmt: skip
        summary, _ = await collect_async(opts, load_plan(plan))
    return summary, db_path, first, day


@pytest.mark.parametrize("profile", ["sim-short-names", None])
async def test_collect_an_sn_fleet_through_its_meter_profile(
    tmp_path: Path, profile: str | None
) -> None:
    summary, db_path, first, day = await collect_quirky_fleet(
        tmp_path, named(["short-names"]), profile, "sn"
    )
    database = open_database(db_path)
    try:
        if profile is None:
            assert summary.stats.complete == 0
            classes = {a.error_class for a in database.attempts()}
            assert classes and None not in classes, classes
            return
        assert summary.stats.complete == METERS, summary.incomplete
        for number in range(first, first + METERS):
            assert stored_vs_truth(database, number, SEED, day) == []
    finally:
        database.close()
