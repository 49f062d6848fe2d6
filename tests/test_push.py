"""Push alarms: the simulator pushes DataNotifications, the listener stores and publishes them.

The main test pushes alarms from the simulator (on a fast clock: two simulated hours a
second) while a collection of the same fleet runs, and checks that every alarm pushed is
stored once and published once to the real Mosquitto, and that the pushed alarms are the
seeded schedule's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_collector_fleet import DAY, plan_text
from test_mqtt import subscribed
from test_operations import NOW, ROOT, SEED, SimClock, management_fleet, online_run, sim_secret

from collector.events import event_name
from collector.inventory import import_inventory
from collector.mqtt import MqttOutbox
from collector.plan import parse_plan
from collector.push import PushListener, decode_alarm
from collector.service import Collector
from collector.session import Session
from protocols import xdlms
from protocols.wrapper import encode_wrapper
from simulator import model
from simulator.fleet import meter_id_text
from simulator.meter import SimulatedMeter
from simulator.push import (
    POWER_DOWN,
    POWER_UP,
    Alarm,
    AlarmPusher,
    alarm_schedule,
    notification,
)
from storage.database import Database, open_database
from storage.queries import alarms
from storage.records import MeterRecord

SPEED = 7200.0  # simulated seconds per second for the pusher's clock
WAIT_S = 20.0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "hes.db")
    yield database
    database.close()


async def until(cond: Callable[[], bool], what: str) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), WAIT_S)
    except TimeoutError:
        raise AssertionError(f"gave up waiting for {what}") from None


def stored_alarms(db: Database) -> list[tuple[str, datetime, int, str | None]]:
    found = alarms(db, None, None, limit=100_000)
    return sorted((a.meter_id, a.ts, a.code, a.name) for a in found)


def test_schedule_is_seeded_and_carries_the_model_outages() -> None:
    spec = model.meter_spec(1, SEED)
    day = next(d for d in range(model.N_DAYS // 2, model.N_DAYS) if model.outage(spec, d))
    outage = model.outage(spec, day)
    assert outage is not None
    start, end = model.EPOCH + day * model.DAY, model.EPOCH + (day + 1) * model.DAY
    alarms = alarm_schedule(1, SEED, start, end, per_day=6)
    assert alarms == alarm_schedule(1, SEED, start, end, per_day=6)
    assert alarms != alarm_schedule(1, SEED + 1, start, end, per_day=6)
    assert [(a.time, a.code) for a in alarms if a.code in (POWER_DOWN, POWER_UP)] == [
        (outage[0], POWER_DOWN),
        (outage[1], POWER_UP),
    ]
    assert {a.code for a in alarms} <= {1, 2, 42, 44, 64, 65}
    assert all(start <= a.time < end for a in alarms) and alarms == sorted(alarms)
    week = alarm_schedule(1, SEED, start, start + 7 * model.DAY, per_day=6)
    assert 20 <= len([a for a in week if a.code not in (POWER_DOWN, POWER_UP)]) <= 70
    assert alarm_schedule(1, SEED, start, end, per_day=0) == [
        a for a in alarms if a.code in (POWER_DOWN, POWER_UP)
    ]
    with pytest.raises(ValueError, match=r"outside 0\.\.24"):
        alarm_schedule(1, SEED, start, end, per_day=25)


def test_notification_decodes_to_the_alarm() -> None:
    alarm = Alarm(int(NOW), 12, 44)
    pdu = notification(alarm, SEED, 7)
    response = xdlms.decode_response(pdu[8:])
    assert isinstance(response, xdlms.DataNotification) and response.long_invoke_id == 7

    got = decode_alarm(response, lambda m: m == meter_id_text(12), datetime.now(UTC))
    assert (got.meter_id, got.ts.timestamp(), got.code, got.name) == (
        "SIM000000012",
        NOW,
        44,
        "meter cover opened",
    )


async def test_alarms_pushed_during_a_collection_are_stored_and_published(
    tmp_path: Path, db: Database, mqtt_broker: tuple[str, int]
) -> None:
    first = online_run(3, 700)
    prefix = f"hes-test-{uuid.uuid4().hex[:8]}"
    host, port = mqtt_broker
    outbox = MqttOutbox(
        tmp_path / "spool.db",
        f"mqtt://{host}:{port}",
        client_id=f"{prefix}-pub",
        topic_prefix=prefix,
    )
    publisher = asyncio.create_task(outbox.run())
    async with (
        management_fleet(
            tmp_path, db, tcp=3, first_meter=first, clock=SimClock(NOW), first_address="127.7.7.1"
        ),
        subscribed(mqtt_broker, prefix) as sub,
    ):
        listener = PushListener(db, publish=lambda m, k, p: outbox.enqueue_meter(m, "alarm", p))
        await listener.start()
        started = time.monotonic()

        def fast_clock() -> float:
            return NOW + (time.monotonic() - started) * SPEED

        numbers = list(range(first, first + 3))
        pusher = AlarmPusher(
            numbers,
            SEED,
            "127.0.0.1",
            listener.port,
            clock=fast_clock,
            per_day=24,
            poll_s=0.02,
            keep_sent=True,
        )
        pushing = asyncio.create_task(pusher.run())
        stored_in_sessions: list[int] = []

        async def after_read(_session: Session, _meter: MeterRecord) -> None:
            # Keep each meter's session open until alarms have arrived: they land mid-run.
            await until(lambda: listener.stats.stored >= 1, "a first alarm")
            stored_in_sessions.append(listener.stats.stored)

        summary = await Collector(
            db, parse_plan(plan_text()), DAY, seed=1, secrets=sim_secret, after_read=after_read
        ).run()
        assert summary.stats.complete == 3, summary.as_dict()
        assert len(stored_in_sessions) == 3 and min(stored_in_sessions) >= 1
        await until(lambda: pusher.stats.sent >= 8, "8 alarms pushed")
        pushing.cancel()
        await asyncio.gather(pushing, return_exceptions=True)
        sent = list(pusher.stats.alarms)
        await until(lambda: listener.stats.stored == len(sent), "every pushed alarm stored")
        await listener.close()
        messages = await sub.wait_for(len(sent))
    await outbox.close(timeout=10)
    await asyncio.gather(publisher, return_exceptions=True)

    assert pusher.stats.failed == 0
    want = sorted(
        (meter_id_text(a.meter_id), datetime.fromtimestamp(a.time, UTC), a.code, event_name(a.code))
        for a in sent
    )
    assert stored_alarms(db) == want
    assert listener.stats.rejected == {} and listener.stats.duplicates == 0
    # The pushed alarms are each meter's seeded schedule from the start, in order.
    checked = 0
    for n in numbers:
        mine = [a for a in sent if a.meter_id == n]
        if mine:
            t0 = SimulatedMeter(n, SEED).meter_time(NOW)
            assert mine == alarm_schedule(n, SEED, t0, mine[-1].time + 1, 24)
            checked += len(mine)
    assert checked == len(sent) >= 8
    published = sorted(
        (str(m.topic), json.loads(bytes(m.payload))["ts"], json.loads(bytes(m.payload))["code"])
        for m in messages
    )
    assert published == sorted(
        (f"{prefix}/{m}/alarm", ts.strftime("%Y-%m-%dT%H:%M:%SZ"), code) for m, ts, code, _ in want
    )


async def test_listener_rejects_what_is_not_an_alarm_and_stores_repeats_once(
    tmp_path: Path, db: Database
) -> None:
    path = tmp_path / "inv.csv"
    path.write_text("meter_id,transport,host\nSIM000000012,tcp,127.0.0.1\n", encoding="utf-8")
    import_inventory(db, path)
    published: list[tuple[str, str, dict[str, object]]] = []
    listener = PushListener(db, publish=lambda m, k, p: published.append((m, k, p)))
    await listener.start()
    try:
        pusher = AlarmPusher([], SEED, "127.0.0.1", listener.port)
        alarm = Alarm(int(NOW), 12, 42)
        assert await pusher.push(alarm) and await pusher.push(alarm)
        assert await pusher.push(Alarm(int(NOW), 13, 44))  # not in the inventory
        for data in (
            encode_wrapper(1, 0x66, xdlms.build_get_response(1, b"\x11\x05")),
            b"\x00\x07garbage",  # wrong wrapper version
        ):
            _, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(data)
            await writer.drain()
            writer.close()
        await until(
            lambda: (
                listener.stats.stored + listener.stats.duplicates == 2
                and sum(listener.stats.rejected.values()) == 3
            ),
            "the listener to handle every push",
        )
    finally:
        await listener.close()
    assert listener.stats.rejected == {
        "unknown_meter": 1,
        "not_a_notification": 1,
        "bad_wrapper": 1,
    }
    assert stored_alarms(db) == [
        ("SIM000000012", datetime.fromtimestamp(NOW, UTC), 42, "strong DC field detected")
    ]
    assert [(m, k, p["code"]) for m, k, p in published] == [("SIM000000012", "alarm", 42)]


async def test_hes_listen_command_stores_pushes(tmp_path: Path, db: Database) -> None:
    path = tmp_path / "inv.csv"
    path.write_text("meter_id,transport,host\nSIM000000012,tcp,127.0.0.1\n", encoding="utf-8")
    import_inventory(db, path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "listen",
        "--db",
        str(tmp_path / "hes.db"),
        "--port",
        "0",
        "--duration",
        "3",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), WAIT_S)
    listen_host, listen_port = json.loads(line)["listening"].rsplit(":", 1)
    pusher = AlarmPusher([], SEED, listen_host, int(listen_port))
    assert await pusher.push(Alarm(int(NOW), 12, 64))
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["stats"]["stored"] == 1
    assert stored_alarms(db) == [
        ("SIM000000012", datetime.fromtimestamp(NOW, UTC), 64, "local disconnection")
    ]


async def test_an_alarm_pushed_to_two_nodes_is_stored_and_published_once(
    pg_url: str, tmp_path: Path
) -> None:
    """Cluster mode: every node listens for pushes, into the one PostgreSQL. A meter that
    sends the same alarms to two nodes (or a repeat to either) makes one row each, and only
    the node whose insert made the row publishes it."""
    dbs = [open_database(pg_url), open_database(pg_url)]
    meters = [12, 13, 14]
    rows = "".join(f"{meter_id_text(m)},tcp,127.0.0.1\n" for m in meters)
    path = tmp_path / "inv.csv"
    path.write_text("meter_id,transport,host\n" + rows, encoding="utf-8")
    import_inventory(dbs[0], path)
    published: list[tuple[str, int]] = []
    nodes = [
        PushListener(db, publish=lambda m, _k, p: published.append((m, int(p["code"]))))
        for db in dbs
    ]
    for node in nodes:
        await node.start()
    try:
        sent = [Alarm(int(NOW) + 60 * k, m, 40 + k) for k in range(5) for m in meters]
        pushers = [AlarmPusher([], SEED, "127.0.0.1", node.port) for node in nodes]
        for alarm in sent:  # the same alarm to both nodes at once, then a repeat
            results = await asyncio.gather(*(p.push(alarm) for p in pushers))
            assert all(results)
        assert await pushers[1].push(sent[0])
        await until(
            lambda: sum(n.stats.stored + n.stats.duplicates for n in nodes) == 2 * len(sent) + 1,
            "both nodes to handle every push",
        )
    finally:
        for node in nodes:
            await node.close()
    stats = [n.stats for n in nodes]
    assert sum(s.stored for s in stats) == len(sent)
    assert sum(s.duplicates for s in stats) == len(sent) + 1
    assert sorted(published) == sorted((meter_id_text(a.meter_id), a.code) for a in sent)
    stored = stored_alarms(dbs[1])
    assert sorted((m, code) for m, _ts, code, _name in stored) == sorted(published)
    for db in dbs:
        db.close()
