"""The collection service against the real simulator over real sockets on 127.0.0.1.

Each test builds a small fleet (TCP meters, one port each, and HDLC buses behind terminal-server
ports), imports it as inventory, collects a fixed day on a fixed simulator clock, and checks the
stored values one by one against the simulator's ground truth.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from test_collector_fleet import (
    CHANNELS,
    DAY,
    NOW,
    REGISTERS,
    Fleet,
    online_meter_ids,
    outage_meter_ids,
    plan_text,
    sessions_needed,
    stored_vs_truth,
    truth_rows,
)

from collector.inventory import import_inventory
from collector.plan import parse_plan
from collector.scheduler import backoff_delay
from collector.service import Collector, failure_detail
from protocols.errors import InvocationCounterRejected, KeyRejected
from simulator import model
from simulator.faults import FaultPlan, FaultSpec
from storage import schema
from storage.database import Database, open_database
from storage.gaps import day_window
from storage.records import Coverage, MeterRecord
from storage.register_events import register_select


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "hes.db")
    yield database
    database.close()


@pytest.fixture
async def fleet(tmp_path: Path, db: Database) -> AsyncIterator[Fleet]:
    """30 TCP meters (two of them with an outage on DAY) and 2 buses of 5, 30 % of sessions
    failing transiently (no answer, corrupt frame, dropped link) by a seeded fault plan."""
    outage = outage_meter_ids(2, 5000)
    ids = online_meter_ids(38, 1000)
    faults = FaultPlan(FaultSpec.transient(0.3), seed=3)
    f = Fleet([*ids[:28], *outage], [ids[28:33], ids[33:38]], faults=faults)
    await f.start()
    import_inventory(db, f.write_csv(tmp_path / "meters.csv"))
    yield f
    await f.close()


def attempts_by_meter(db: Database) -> dict[str, list[tuple[str, str | None]]]:
    out: dict[str, list[tuple[str, str | None]]] = {}
    for a in sorted(db.attempts(), key=lambda a: a.started):
        out.setdefault(a.meter_id, []).append((a.outcome, a.error_class))
    return out


async def test_collects_a_day_value_for_value_through_transient_faults(
    fleet: Fleet, db: Database
) -> None:
    plan = parse_plan(plan_text(back_days=1))
    summary = await Collector(db, plan, DAY, seed=1).run()

    assert summary.stats.complete == 40, summary.as_dict()
    assert summary.incomplete == {}
    assert summary.stats.retries > 0
    for day in (DAY - timedelta(days=1), DAY):
        for sim_id in fleet.all_ids:
            assert stored_vs_truth(db, sim_id, day) == []
    # The outage meters have gaps, yet count complete (coverage), and the report agrees.
    for sim_id in fleet.tcp_ids[-2:]:
        assert len(truth_rows(sim_id, DAY)) < 96
    report = db.daily_report(DAY)
    assert report["success_rate"] == 1.0
    assert report["intervals_missing"] == 0
    # TCP meters needed exactly the sessions the fault plan predicts; every failed one was
    # recorded with its class and retried; HDLC repairs some faults inside a session.
    attempts = attempts_by_meter(db)
    assert fleet.faults is not None
    for sim_id in fleet.tcp_ids:
        tries = attempts[Fleet.name(sim_id)]
        assert len(tries) == sessions_needed(fleet.faults, sim_id), tries
        assert tries[-1] == ("ok", None)
        assert all(o == "failed" and c in ("timeout", "link", "decode") for o, c in tries[:-1])
    for bus in fleet.buses:
        for sim_id in bus:
            tries = attempts[Fleet.name(sim_id)]
            assert 1 <= len(tries) <= sessions_needed(fleet.faults, sim_id)
    # One session at a time per bus: the terminal servers never had to turn a client away.
    for server in fleet.bus_servers:
        assert server.stats.rejected_busy == 0
        assert server.stats.peak_sessions_in_flight == 1
        assert server.stats.connections >= 5
    # Registers: raw value and scaler at the meter's clock.
    m, o, r = schema.interval_meters, schema.obis_codes, schema.register_values
    rows = db.execute_read(
        register_select().with_only_columns(m.c.meter_id, o.c.obis, r.c.value, r.c.scaler)
    )
    assert len(rows) == 40 * len(REGISTERS)
    for meter_id, obis, value, scaler in rows:
        meter = fleet.meter(Fleet.sim_id(meter_id))
        regs = model.registers(meter.spec, meter.meter_time(NOW))
        want = {
            "1.0.1.8.0.255": regs.active_import,
            "1.0.2.8.0.255": regs.active_export,
            "1.0.3.8.0.255": regs.reactive_import,
            "1.0.4.8.0.255": regs.reactive_export,
        }[obis]
        assert (value, scaler) == (want, 0), (meter_id, obis)

    # A second run finds every day complete in storage and contacts no meter.
    again = await Collector(db, plan, DAY, seed=1).run()
    assert again.stats.skipped_complete == 40
    assert again.stats.attempts == 0


async def test_rereads_only_the_gaps(fleet: Fleet, db: Database) -> None:
    plan = parse_plan(plan_text())
    await Collector(db, plan, DAY, seed=2).run()
    total = db.count_interval_values()
    victim = Fleet.name(fleet.tcp_ids[3])
    bus_victim = Fleet.name(fleet.buses[1][2])
    start, _ = day_window(DAY)
    # Storage as a run that never got 05:00-06:45 would have left it: no rows, no coverage.
    removed = db.forget_intervals(
        [victim, bus_victim], start + timedelta(hours=5), start + timedelta(hours=7)
    )
    db.forget_intervals([victim, bus_victim], start, start + timedelta(days=1), values=False)
    assert removed == 2 * 8 * 4
    db.record_coverage(
        Coverage(m, c, a, b)
        for m in (victim, bus_victim)
        for c in CHANNELS
        for a, b in (
            (start, start + timedelta(hours=4, minutes=45)),
            (start + timedelta(hours=7), start + timedelta(hours=23, minutes=45)),
        )
    )
    assert db.missing_intervals(victim, CHANNELS[0], start, start + timedelta(days=1)) == [
        (start + timedelta(hours=5), start + timedelta(hours=6, minutes=45))
    ]
    before = db.count_rows("read_attempts")

    summary = await Collector(db, plan, DAY, seed=2).run()

    assert summary.stats.skipped_complete == 38
    assert summary.stats.intervals_stored == removed
    assert db.count_interval_values() == total
    assert db.count_rows("read_attempts") - before >= 2
    for sim_id in (fleet.tcp_ids[3], fleet.buses[1][2]):
        assert stored_vs_truth(db, sim_id, DAY) == []


async def test_intervals_the_meter_has_not_closed_are_asked_again_later(
    tmp_path: Path, db: Database
) -> None:
    """Collecting the simulator's *current* day: the meter answers up to its clock, coverage
    stops there, the rest stays missing until a later run when the meter has it."""
    ids = online_meter_ids(4, 1000)
    f = Fleet(ids[:3], [ids[3:]])
    await f.start()
    try:
        import_inventory(db, f.write_csv(tmp_path / "m.csv"))
        plan = parse_plan(plan_text())
        today = DAY + timedelta(days=1)
        first = await Collector(db, plan, today, once=True, wait_for_window=False).run()
        assert first.stats.complete == 0
        assert set(first.incomplete.values()) == {"incomplete"}
        missing = db.incomplete_meters(today, ["1.0.1.8.0.255"])
        for sim_id in ids:
            meter_now = f.meter(sim_id).meter_time(NOW)
            closed = int(meter_now // 900) - int(day_window(today)[0].timestamp() // 900) + 1
            assert missing[Fleet.name(sim_id)] == 96 - closed
        f.now = NOW + 86400  # a day later every interval of `today` is closed
        second = await Collector(db, plan, today, once=True).run()
        assert second.stats.complete == 4
        for sim_id in ids:
            assert stored_vs_truth(db, sim_id, today) == []
    finally:
        await f.close()


async def test_permanent_errors_are_not_retried(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = online_meter_ids(7, 1000)
    good, wrong, nosecret, offline = ids[0], ids[1], ids[2], ids[3]
    faults = FaultPlan(FaultSpec(offline=0.0), seed=1)
    f = Fleet(
        ids, [], faults=faults, lls={good: "keys/good", wrong: "keys/wrong", nosecret: "keys/none"}
    )
    await f.start()
    try:
        import_inventory(db, f.write_csv(tmp_path / "m.csv"))
        monkeypatch.setenv("HES_PASSWORD_KEYS_GOOD", f.meter(good).spec.password.decode())
        monkeypatch.setenv("HES_PASSWORD_KEYS_WRONG", "not-the-password")
        monkeypatch.delenv("HES_PASSWORD_KEYS_NONE", raising=False)
        # One meter is unreachable: its port is closed.
        await f.wrapper_servers[offline].close()
        text = plan_text().replace(
            'registers = ["1.0.1.8.0.255"', 'registers = ["1.0.1.8.9.255", "1.0.1.8.0.255"'
        )
        plan = parse_plan(text)
        summary = await Collector(db, plan, DAY, seed=5).run()
    finally:
        await f.close()
    attempts = attempts_by_meter(db)
    assert attempts[Fleet.name(wrong)] == [("failed", "authentication_failed")]
    assert attempts[Fleet.name(nosecret)] == [("failed", "no_secret")]
    assert attempts[Fleet.name(offline)] == [("failed", "link")] * plan.retry.max_attempts
    # An undefined register is reported, not retried, and costs none of the profile.
    assert attempts[Fleet.name(good)] == [("partial", "object_undefined")]
    reachable = [s for s in ids if s not in (wrong, nosecret, offline)]
    for sim_id in reachable:
        assert stored_vs_truth(db, sim_id, DAY) == []
    assert summary.incomplete == {
        Fleet.name(wrong): "authentication_failed",
        Fleet.name(nosecret): "no_secret",
        Fleet.name(offline): "link",
    }
    assert summary.stats.complete == len(reachable)
    report = db.daily_report(DAY)
    assert report["incomplete_by_last_error_class"] == {
        "authentication_failed": 1,
        "link": 1,
        "no_secret": 1,
    }


async def test_stop_finishes_in_flight_sessions_and_the_next_run_resumes(
    tmp_path: Path, db: Database
) -> None:
    ids = online_meter_ids(24, 1000)
    f = Fleet(ids[:16], [ids[16:24]], latency=0.01)
    await f.start()
    try:
        import_inventory(db, f.write_csv(tmp_path / "m.csv"))
        plan = parse_plan(plan_text(concurrency=3))
        collector = Collector(db, plan, DAY, seed=3)
        task = asyncio.create_task(collector.run())
        while collector.stats.done < 3:
            await asyncio.sleep(0.01)
        collector.stop()
        summary = await task
        assert summary.interrupted
        assert 3 <= summary.stats.done < 24
        assert len(summary.incomplete) == 24 - summary.stats.complete
        stored = db.count_interval_values()
        # Whatever was stored is right, and the next run reads only the rest.
        for sim_id in ids:
            if Fleet.name(sim_id) not in summary.incomplete:
                assert stored_vs_truth(db, sim_id, DAY) == []
        rest = await Collector(db, plan, DAY, seed=3).run()
        assert rest.stats.skipped_complete == summary.stats.complete
        assert rest.stats.complete == 24 - summary.stats.complete
        assert db.count_interval_values() == stored + rest.stats.intervals_stored
        for sim_id in ids:
            assert stored_vs_truth(db, sim_id, DAY) == []
    finally:
        await f.close()


async def test_postgresql_collection_matches_ground_truth(tmp_path: Path, pg_url: str) -> None:
    ids = online_meter_ids(13, 1000)
    f = Fleet(ids[:9], [ids[9:13]], faults=FaultPlan(FaultSpec.transient(0.2), seed=9))
    await f.start()
    database = open_database(pg_url)
    try:
        import_inventory(database, f.write_csv(tmp_path / "m.csv"))
        plan = parse_plan(plan_text())
        summary = await Collector(database, plan, DAY, seed=4).run()
        assert summary.stats.complete == 13, summary.as_dict()
        for sim_id in ids:
            assert stored_vs_truth(database, sim_id, DAY) == []
        again = await Collector(database, plan, DAY).run()
        assert again.stats.attempts == 0
        assert database.count_interval_values() == 4 * sum(len(truth_rows(s, DAY)) for s in ids)
    finally:
        database.close()
        await f.close()


def test_backoff_grows_and_is_jittered_reproducibly() -> None:
    a = [backoff_delay(random.Random(7), n, 2.0, 60.0) for n in range(1, 8)]
    b = [backoff_delay(random.Random(7), n, 2.0, 60.0) for n in range(1, 8)]
    assert a == b
    for n, d in enumerate(a, start=1):
        step = min(60.0, 2.0 * 2 ** (n - 1))
        assert step / 2 <= d <= step
    rng = random.Random(1)
    spread = {round(backoff_delay(rng, 3, 2.0, 60.0), 6) for _ in range(20)}
    assert len(spread) == 20


async def test_meters_no_group_accepts_are_reported_not_read(db: Database) -> None:
    plan = parse_plan(plan_text().replace('name = "all"', 'name = "all"\nmatch = {area = "x*"}'))
    db.upsert_meters(
        [
            MeterRecord(
                "M001000", "tcp", "127.0.0.1", 9, None, None, 1, 16, "none", "M001000", area="north"
            )
        ]
    )
    summary = await Collector(db, plan, DAY).run()
    assert summary.stats.not_planned == 1
    assert summary.stats.attempts == 0
    assert summary.incomplete == {"M001000": "not_planned"}


def test_retry_follows_the_transient_flag_of_every_error_class() -> None:
    """Retrying is decided by ``transient`` alone, so the flags must say what retrying can fix."""
    from collector import service
    from protocols import errors

    def classes(root: type) -> list[type]:
        out = [root]
        for sub in root.__subclasses__():
            out += classes(sub)
        return out

    flags = {c.error_class: c.transient for c in classes(errors.DlmsError)}
    for name in ("timeout", "link", "bad_frame", "decode", "temporary_failure"):
        assert flags[name] is True, name
    for name in (
        "authentication_failed",
        "association_refused",
        "object_undefined",
        "access_denied",
        "security",
        "invocation_counter_rejected",
        "hls_verification_failed",
    ):
        assert flags[name] is False, name
    assert service.NoKeys("x").transient is False
    assert service.SessionTimeout("x").transient is True


async def test_a_disabled_meter_is_not_read(tmp_path: Path, db: Database) -> None:
    ids = online_meter_ids(3, 1000)
    f = Fleet(ids, [])
    await f.start()
    try:
        import_inventory(db, f.write_csv(tmp_path / "m.csv"))
        off = Fleet.name(ids[1])
        db.set_enabled([off], False)
        summary = await Collector(db, parse_plan(plan_text()), DAY, seed=1).run()
        assert summary.stats.total == 2
        assert summary.stats.complete == 2
        assert off not in attempts_by_meter(db)
        assert stored_vs_truth(db, ids[0], DAY) == []
        assert db.interval_reads(off, CHANNELS[0], *day_window(DAY)) == []
    finally:
        await f.close()


def test_a_refused_counter_is_stored_with_its_recovery_step() -> None:
    refused = InvocationCounterRejected("meter expects at least 2007", 2007)
    detail = failure_detail(refused, "m-17")
    assert detail.startswith("meter expects at least 2007; ")
    assert "`hes keys counter m-17 --at-least 2007`" in detail
    assert failure_detail(InvocationCounterRejected("no counter given"), "m-17") == (
        "no counter given"
    )
    assert failure_detail(KeyRejected("other keys"), "m-17") == "other keys"
