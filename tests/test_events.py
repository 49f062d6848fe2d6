"""Event-log collection against the real simulator: incremental reads, names, outages, MQTT.

Two reads twenty simulated days apart: the second asks each log only for entries from the
newest stored one on, stores no duplicate, and the stored logs equal the model's ground
truth (``model.events`` / ``model.power_events`` over what the meter held at each read).
Outage durations are checked against ``model.outage``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_collector_fleet import DAY, plan_text
from test_mqtt import subscribed
from test_operations import NOW, SEED, SimClock, management_fleet, sim_secret

from collector.events import (
    EVENT_NAMES,
    POWER_FAILURE_LOG,
    STANDARD_EVENT_LOG,
    collect_events,
    event_name,
    outages_from,
)
from collector.meter_tasks import MeterTasks
from collector.mqtt import MqttOutbox
from collector.operations import management_secret, management_target
from collector.plan import parse_plan
from collector.service import Collector
from collector.session import Session
from collector.transport import open_transport
from simulator import model
from simulator.fleet import meter_number
from simulator.meter import SimulatedMeter
from simulator.objects import EVENT_LOG_CAPACITY, EVENT_LOG_DAYS
from storage.database import Database, open_database
from storage.operations import outages_of
from storage.queries import events_of
from storage.records import Event, MeterRecord

LATER = NOW + 20 * model.DAY


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "hes.db")
    yield database
    database.close()


def truth(meter_id: str, log: str, true_now: float) -> list[tuple[datetime, int]]:
    """What the meter's log holds at true time ``true_now`` (the model, same window)."""
    n = meter_number(meter_id)
    spec = model.meter_spec(n, SEED)
    t = SimulatedMeter(n, SEED).meter_time(true_now)
    fn = model.events if log == STANDARD_EVENT_LOG else model.power_events
    rows = fn(spec, t - EVENT_LOG_DAYS * model.DAY, int(t) + 1)[-EVENT_LOG_CAPACITY:]
    return [(datetime.fromtimestamp(ts, UTC), code) for ts, code in rows]


def stored(db: Database, meter_id: str, log: str) -> list[tuple[datetime, int, str | None]]:
    entries = events_of(db, meter_id, None, None, log_obis=log, limit=100_000)
    return [(e.ts, e.code, e.name) for e in entries]


def fleet_start(count: int) -> int:
    """Meters n..n+count-1 online at NOW and LATER, with new power and standard events between
    the two reads among them, and power events before the first."""
    n = 1000
    while True:
        ids = range(n, n + count)
        meters = [SimulatedMeter(k, SEED) for k in ids]
        if all(m.online(NOW) and m.online(LATER) for m in meters):
            names = [f"SIM{k:09d}" for k in ids]
            new_power = sum(
                len(truth(m, POWER_FAILURE_LOG, LATER))
                - len(
                    [
                        r
                        for r in truth(m, POWER_FAILURE_LOG, LATER)
                        if r in truth(m, POWER_FAILURE_LOG, NOW)
                    ]
                )
                for m in names
            )
            new_std = sum(
                len(
                    set(truth(m, STANDARD_EVENT_LOG, LATER))
                    - set(truth(m, STANDARD_EVENT_LOG, NOW))
                )
                for m in names
            )
            if new_power and new_std:
                return n
        n += 1


async def session_for(meter: MeterRecord) -> Session:
    return Session(
        open_transport(management_target(meter)),
        authentication="lls",
        password=management_secret(meter, sim_secret),
        request_timeout=3.0,
    )


async def test_two_reads_are_incremental_without_duplicates_and_match_the_model(
    tmp_path: Path, db: Database
) -> None:
    clock = SimClock(NOW)
    first = fleet_start(3)
    async with management_fleet(
        tmp_path, db, tcp=3, first_meter=first, clock=clock, first_address="127.7.3.1"
    ):
        meters = db.meters()
        first_run = {}
        for meter in meters:
            async with await session_for(meter) as session:
                first_run[meter.meter_id] = await collect_events(session, db, meter.meter_id)
        for meter in meters:
            result = first_run[meter.meter_id]
            for read in result.logs:
                assert read.requested_from is None  # nothing stored: the whole buffer
                want = truth(meter.meter_id, read.log_obis, NOW)
                assert [(t, c) for t, c, _ in stored(db, meter.meter_id, read.log_obis)] == want
                assert read.stored == len(read.new) == len(want)

        clock.t = LATER
        outages_found = 0
        for meter in meters:
            last = {
                log: stored(db, meter.meter_id, log)[-1][0]
                for log in (STANDARD_EVENT_LOG, POWER_FAILURE_LOG)
                if stored(db, meter.meter_id, log)
            }
            async with await session_for(meter) as session:
                result = await collect_events(session, db, meter.meter_id)
            for read in result.logs:
                log = read.log_obis
                old = truth(meter.meter_id, log, NOW)
                now_held = truth(meter.meter_id, log, LATER)
                # Asked from the newest stored entry on; got only it (again) and newer ones.
                assert read.requested_from == last.get(log)
                if read.requested_from is not None:
                    boundary = [r for r in now_held if r[0] == read.requested_from]
                    newer = [r for r in now_held if r[0] > read.requested_from]
                    assert read.entries == len(boundary) + len(newer)
                    assert [(e.ts, e.code) for e in read.new] == newer
                rows = stored(db, meter.meter_id, log)
                assert len(rows) == len(set(rows))
                assert [(t, c) for t, c, _ in rows] == sorted(set(old) | set(now_held))
                assert all(name == event_name(code) for _, code, name in rows)

            # Outages: every model outage wholly inside what was read, durations included.
            spec = model.meter_spec(meter_number(meter.meter_id), SEED)
            lo = SimulatedMeter(spec.meter_id, SEED).meter_time(NOW) - EVENT_LOG_DAYS * model.DAY
            hi = SimulatedMeter(spec.meter_id, SEED).meter_time(LATER)
            want_outages = []
            days = range(int(lo - model.EPOCH) // model.DAY, int(hi - model.EPOCH) // model.DAY + 1)
            for d in days:
                o = model.outage(spec, d)
                if o is not None and lo <= o[0] and o[1] <= hi:
                    want_outages.append(o)
            got = outages_of(db, meter.meter_id)
            pairs = [(int(o.power_down.timestamp()), int(o.power_up.timestamp())) for o in got]
            assert pairs == want_outages
            assert [o.duration_s for o in got] == [b - a for a, b in want_outages]
            outages_found += len(got)
    assert outages_found > 0
    # The fleet had something new to find in the second read (see fleet_start).
    newest = [stored(db, m.meter_id, POWER_FAILURE_LOG) for m in meters]
    assert any(rows and rows[-1][0].timestamp() > NOW for rows in newest)


def test_outage_pairing_closes_an_outage_opened_by_an_earlier_read() -> None:
    t0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    t1 = datetime(2026, 3, 1, 10, 7, 30, tzinfo=UTC)
    t2 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    t3 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    up = Event("M", POWER_FAILURE_LOG, t1, 2)
    found, still_open = outages_from("M", [up, Event("M", POWER_FAILURE_LOG, t2, 1)], t0)
    assert [(o.power_down, o.power_up, o.duration_s) for o in found] == [(t0, t1, 450)]
    assert still_open == t2
    found, still_open = outages_from("M", [Event("M", POWER_FAILURE_LOG, t3, 2)], still_open)
    assert [o.duration_s for o in found] == [3600] and still_open is None
    assert outages_from("M", [up], None) == ([], None)  # a power-up alone is no outage
    assert EVENT_NAMES[44] == "meter cover opened" and event_name(250) == "event 250"


async def test_collector_reads_events_in_the_meter_session_and_publishes_them(
    tmp_path: Path, db: Database, mqtt_broker: tuple[str, int]
) -> None:
    """hes collect's per-meter session with MeterTasks: events stored once, published once."""
    first = fleet_start(2)
    prefix = f"hes-test-{uuid.uuid4().hex[:8]}"
    host, port = mqtt_broker
    outbox = MqttOutbox(
        tmp_path / "spool.db",
        f"mqtt://{host}:{port}",
        client_id=f"{prefix}-pub",
        topic_prefix=prefix,
    )
    async with (
        management_fleet(
            tmp_path, db, tcp=2, first_meter=first, clock=SimClock(NOW), first_address="127.7.4.1"
        ),
        subscribed(mqtt_broker, prefix) as sub,
    ):
        tasks = MeterTasks(
            db,
            clock_threshold_s=None,
            events=True,
            publish=lambda m, k, p: outbox.enqueue_meter(m, "events", p),
        )
        plan = parse_plan(plan_text())
        summary = await Collector(db, plan, DAY, seed=1, secrets=sim_secret, after_read=tasks).run()
        assert summary.stats.complete == 2, summary.as_dict()
        assert tasks.stats.sessions == 2 and tasks.stats.errors == {}
        await outbox.close(timeout=10)
        messages = await sub.wait_for(2)
    meters = [m.meter_id for m in db.meters()]
    by_topic = {str(m.topic): json.loads(bytes(m.payload)) for m in messages}
    assert set(by_topic) == {f"{prefix}/{m}/events" for m in meters}
    for meter_id in meters:
        payload = by_topic[f"{prefix}/{meter_id}/events"]
        rows = stored(db, meter_id, STANDARD_EVENT_LOG) + stored(db, meter_id, POWER_FAILURE_LOG)
        assert len(payload["events"]) == len(rows) > 0
        got = sorted((e["ts"], e["code"], e["name"]) for e in payload["events"])
        want = sorted((ts.strftime("%Y-%m-%dT%H:%M:%SZ"), c, n) for ts, c, n in rows)
        assert got == want
    assert tasks.stats.events_new == sum(
        len(truth(m, log, NOW)) for m in meters for log in (STANDARD_EVENT_LOG, POWER_FAILURE_LOG)
    )
