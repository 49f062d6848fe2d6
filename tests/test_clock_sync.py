"""Clock synchronisation during collection, against the simulator's drifting meter clocks.

The fleet runs on a fixed true time; each simulated meter's clock has drifted by the model
(``model.meter_clock``), some by minutes, some by more than the 900 s shift_time allows. A
collection run with clock sync must leave every meter within the threshold, by shift_time
or by setting the time, and record each correction with the drift it found.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_collector_fleet import DAY, plan_text
from test_operations import NOW, SEED, SimClock, management_fleet, sim_secret

from collector.clock_sync import SHIFT_LIMIT_S, measure_drift, sync_clock
from collector.inventory import import_inventory
from collector.meter_tasks import MeterTasks
from collector.operations import management_secret, management_target
from collector.plan import parse_plan
from collector.service import Collector
from collector.session import Session
from collector.transport import open_transport
from simulator.fleet import Fleet, meter_number
from simulator.meter import SimulatedMeter
from storage.database import Database, open_database
from storage.operations import clock_corrections_of

THRESHOLD_S = 10.0
TRUE_NOW = datetime.fromtimestamp(NOW, UTC)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "hes.db")
    yield database
    database.close()


def drift(n: int) -> float:
    return SimulatedMeter(n, SEED).meter_time(NOW) - NOW


def drifting_fleet_start(count: int) -> int:
    """Meters n..n+count-1, all online, with a clock beyond 900 s, one beyond the threshold
    within 900 s, and one within the threshold."""
    n = 1
    while True:
        ids = range(n, n + count)
        d = [abs(drift(k)) for k in ids]
        if (
            all(SimulatedMeter(k, SEED).online(NOW) for k in ids)
            and any(x > SHIFT_LIMIT_S for x in d)
            and any(THRESHOLD_S < x <= SHIFT_LIMIT_S for x in d)
            and any(x <= THRESHOLD_S for x in d)
        ):
            return n
        n += 1


def meter_clock_error(fleet: Fleet, meter_id: str) -> float:
    """The simulated meter's own clock minus true time, corrections included."""
    meter = fleet.pool.acquire(meter_number(meter_id))
    try:
        return meter.meter_time(NOW) - NOW
    finally:
        fleet.pool.release(meter)


async def test_collection_brings_drifting_clocks_within_the_threshold_and_records_it(
    tmp_path: Path, db: Database
) -> None:
    first = drifting_fleet_start(6)
    async with management_fleet(
        tmp_path, db, tcp=6, first_meter=first, clock=SimClock(NOW), first_address="127.7.5.1"
    ) as fleet:
        tasks = MeterTasks(db, clock_threshold_s=THRESHOLD_S, events=False, now=lambda: TRUE_NOW)
        summary = await Collector(
            db, parse_plan(plan_text()), DAY, seed=1, secrets=sim_secret, after_read=tasks
        ).run()
        assert summary.stats.complete == 6, summary.as_dict()
        assert tasks.stats.errors == {}
        before = {m.meter_id: drift(meter_number(m.meter_id)) for m in db.meters()}
        beyond = {m for m, d in before.items() if abs(d) > THRESHOLD_S}
        assert tasks.stats.clock_checked == 6 and tasks.stats.clock_corrected == len(beyond)
        for meter_id, d in before.items():
            assert abs(meter_clock_error(fleet, meter_id)) <= THRESHOLD_S
            rows = clock_corrections_of(db, meter_id)
            if meter_id not in beyond:
                assert rows == []
                continue
            assert len(rows) == 1
            row = rows[0]
            assert row.drift_s == pytest.approx(d, abs=0.02)
            assert row.method == ("set_time" if abs(d) > SHIFT_LIMIT_S else "shift_time")
            assert row.residual_s is not None and abs(row.residual_s) <= THRESHOLD_S
            assert row.residual_s == pytest.approx(meter_clock_error(fleet, meter_id), abs=0.02)
            assert row.threshold_s == THRESHOLD_S and row.corrected_at == TRUE_NOW

        # A second check finds every clock within the threshold and corrects nothing.
        for meter in db.meters():
            async with Session(
                open_transport(management_target(meter)),
                authentication="lls",
                password=management_secret(meter, sim_secret),
                request_timeout=3.0,
            ) as session:
                check = await sync_clock(
                    session, meter.meter_id, threshold_s=THRESHOLD_S, now=lambda: TRUE_NOW, db=db
                )
                assert not check.corrected
                assert check.drift_s == pytest.approx(
                    await measure_drift(session, lambda: TRUE_NOW), abs=1e-6
                )
        assert sum(len(clock_corrections_of(db, m.meter_id)) for m in db.meters()) == len(beyond)


async def test_public_client_meters_are_left_alone(tmp_path: Path, db: Database) -> None:
    """MeterTasks runs on authenticated associations only: the public client cannot set."""
    first = drifting_fleet_start(6)
    async with management_fleet(
        tmp_path, db, tcp=1, first_meter=first, clock=SimClock(NOW), first_address="127.7.6.1"
    ) as fleet:
        path = tmp_path / "public.csv"
        meter = db.meters()[0]
        path.write_text(
            f"meter_id,transport,host,port\n{meter.meter_id},tcp,{meter.host},{meter.port}\n",
            encoding="utf-8",
        )
        import_inventory(db, path)
        assert db.meters()[0].authentication == "none"
        tasks = MeterTasks(db, clock_threshold_s=0.0, now=lambda: TRUE_NOW)
        await Collector(db, parse_plan(plan_text()), DAY, seed=1, after_read=tasks).run()
        assert (tasks.stats.sessions, tasks.stats.skipped_public) == (1, 1)
        assert meter_clock_error(fleet, meter.meter_id) == pytest.approx(drift(first))
        assert clock_corrections_of(db, meter.meter_id) == []
