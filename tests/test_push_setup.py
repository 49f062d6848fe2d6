"""Push setups end to end: ``hes push`` configures simulated meters, which then push to the
listener without an object list, and the listener decodes them by the list it stored.

The meters have the ``push-without-object-list`` quirk: their Data-Notifications are a bare
structure of values, as many meters send. The pusher's own default address is a closed port,
so every alarm stored went to the destination ``hes push set`` configured, and only inside
the configured communication window.
"""

from __future__ import annotations

import asyncio
import csv
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ApiService
from hypothesis import given, settings
from hypothesis import strategies as st
from test_collector_fleet import plan_text
from test_daemon import until_final
from test_operations import (
    NOW,
    ROOT,
    SEED,
    SimClock,
    _hes,
    management_fleet,
    online_run,
    secret_env,
    sim_secret,
)
from test_push import stored_alarms, until

from collector.daemon import HeadEnd
from collector.events import event_name
from collector.inventory import import_inventory
from collector.operations import management_target
from collector.plan import parse_plan
from collector.push import PushedValues, PushListener, PushRejected, decode_push
from collector.push_setup import PushChange, run_meter
from collector.session import Session
from collector.transport import open_transport
from contracts.meters import MeterTarget
from protocols import axdr, xdlms
from protocols import push_setup as ps
from protocols.cosem import CosemDateTime
from protocols.errors import AccessDenied, DataAccessError, ObjectUndefined
from simulator import model
from simulator import push_setup as sim_setup
from simulator.areas import ORDINARY
from simulator.fleet import meter_id_text, meter_number
from simulator.meter import SimulatedMeter
from simulator.push import Alarm, AlarmPusher, alarm_schedule, fleet_pusher
from simulator.quirks import named
from storage import queries
from storage.database import Database, open_database
from storage.jobs import JobError, JobRequest, check_params
from storage.push_setups import PushSetupRecord, load_push_setups, save_push_setups
from storage.queries import alarms
from storage.records import MeterRecord

SPEED = 7200.0
VALUES_ONLY = named(["push-without-object-list"])


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "hes.db")
    yield database
    database.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def stamp(t: float) -> str:
    return CosemDateTime.from_datetime(datetime.fromtimestamp(t, UTC)).to_bytes().hex()


@pytest.mark.parametrize("transport", ["tcp", "pty"])
async def test_hes_push_set_then_values_only_pushes_are_decoded_by_the_stored_list(
    tmp_path: Path, db: Database, transport: str
) -> None:
    first = online_run(2, 900 if transport == "tcp" else 940)
    counts = {"tcp": 2, "bus": 0} if transport == "tcp" else {"tcp": 0, "bus": 2}
    async with management_fleet(
        tmp_path,
        db,
        first_meter=first,
        clock=SimClock(NOW),
        first_address="127.7.9.1",
        quirks=VALUES_ONLY,
        bus_endpoint="pty",
        **counts,
    ) as fleet:
        ids = [m.meter_id for m in db.meters()]
        listener = PushListener(db)
        await listener.start()
        window = (NOW - 1800, NOW + 4 * 3600)
        try:
            code, out, err = await _hes(
                "push",
                "set",
                *ids,
                "--destination",
                f"127.0.0.1:{listener.port}",
                "--window",
                f"{iso(window[0])}/{iso(window[1])}",
                "--db",
                str(tmp_path / "hes.db"),
                "--timeout",
                "5",
                env=secret_env(ids),
            )
            assert code == 0, (out, err)
            report = json.loads(out)
            assert report["ok"] == 2 and report["push_setup"] == "0.0.25.9.0.255"
            for result in report["results"]:
                assert result["destination"] == f"127.0.0.1:{listener.port}"
                assert result["windows"] == [{"start": stamp(window[0]), "end": stamp(window[1])}]
                # the values-only meter's factory list: no push setup entry at its head
                assert [o["obis"] for o in result["objects"]] == [
                    "0.0.42.0.0.255",
                    "0.0.96.1.0.255",
                    "0.0.96.11.0.255",
                ]
            stored = load_push_setups(db)
            assert [r.meter_id for r in stored] == sorted(ids)
            assert all(r.destination.host_port()[1] == listener.port for r in stored)
            # ground truth: what the simulated meters themselves now hold
            for meter_id in ids:
                meter = fleet.pool.view(meter_number(meter_id))
                held = meter.current_state().push_setups[ps.ALARM_PUSH_SETUP]
                record = next(r for r in stored if r.meter_id == meter_id)
                assert (record.objects, record.destination, record.windows) == (
                    held.objects,
                    held.destination,
                    held.windows,
                )

            started = time.monotonic()

            def fast_clock() -> float:
                return NOW + (time.monotonic() - started) * SPEED

            numbers = [meter_number(m) for m in ids]
            pusher = fleet_pusher(
                fleet,
                numbers,
                ("127.0.0.1", closed_port()),
                24,
                clock=fast_clock,
                poll_s=0.02,
                keep_sent=True,
            )
            pushing = asyncio.create_task(pusher.run())
            # two hours past the window: a whole clock hour, so one alarm a meter falls there
            await until(lambda: fast_clock() > window[1] + 2 * 3600, "the window to close")
            pushing.cancel()
            await asyncio.gather(pushing, return_exceptions=True)
            sent = list(pusher.stats.alarms)
            await until(lambda: listener.stats.stored >= len(sent), "every alarm stored")
        finally:
            await listener.close()

    assert pusher.stats.failed == 0, pusher.stats.last_error
    assert pusher.stats.outside_window >= 2
    assert listener.stats.rejected == {}
    assert listener.stats.decoded == {"stored": len(sent)}
    checked = 0
    for n in numbers:
        t0 = SimulatedMeter(n, SEED).meter_time(NOW)
        mine = [a for a in sent if a.meter_id == n]
        assert mine == alarm_schedule(n, SEED, t0, window[1] + 1, 24)
        checked += len(mine)
    assert checked == len(sent) >= 6
    assert stored_alarms(db) == sorted(
        (meter_id_text(a.meter_id), datetime.fromtimestamp(a.time, UTC), a.code, event_name(a.code))
        for a in sent
    )


async def test_values_only_push_needs_the_stored_list_and_says_so(
    tmp_path: Path,
    db: Database,
) -> None:
    path = tmp_path / "inv.csv"
    path.write_text(
        "meter_id,transport,host\nSIM000000012,tcp,127.0.0.1\nSIM000000013,tcp,127.0.0.2\n",
        encoding="utf-8",
    )
    import_inventory(db, path)
    listener = PushListener(db)
    await listener.start()
    meters = {n: SimulatedMeter(n, SEED, quirks=VALUES_ONLY) for n in (12, 13)}
    meter_for: Callable[[int], SimulatedMeter] = meters.__getitem__
    pusher = AlarmPusher([], SEED, "127.0.0.1", listener.port, meter_for=meter_for)
    try:
        assert await pusher.push(Alarm(int(NOW), 12, 44))
        await until(lambda: sum(listener.stats.rejected.values()) == 1, "the rejection")
        assert listener.stats.rejected == {"no_object_list": 1}

        setup = sim_setup.default_setup(ps.ALARM_PUSH_SETUP, describes=False)
        now = datetime.now(UTC)
        save_push_setups(
            db,
            [
                PushSetupRecord(
                    "SIM000000012", ps.ALARM_PUSH_SETUP, setup.objects, setup.destination, (), now
                ),
                # meter 13's stored list is one entry short of what it pushes
                PushSetupRecord(
                    "SIM000000013",
                    ps.ALARM_PUSH_SETUP,
                    setup.objects[:2],
                    setup.destination,
                    (),
                    now,
                ),
            ],
        )
        assert await pusher.push(Alarm(int(NOW), 12, 44))
        assert await pusher.push(Alarm(int(NOW), 13, 42))
        await until(
            lambda: listener.stats.stored == 1 and sum(listener.stats.rejected.values()) == 2,
            "the second round",
        )
        # a push from a factory-set meter carries its list: no stored list needed
        assert await AlarmPusher([], SEED, "127.0.0.1", listener.port).push(
            Alarm(int(NOW) + 60, 13, 42)
        )
        await until(lambda: listener.stats.stored == 2, "the self-described push")
    finally:
        await listener.close()
    assert listener.stats.rejected == {"no_object_list": 1, "object_list_mismatch": 1}
    assert listener.stats.decoded == {"stored": 1, "carried": 1}
    assert stored_alarms(db) == [
        ("SIM000000012", datetime.fromtimestamp(NOW, UTC), 44, "meter cover opened"),
        ("SIM000000013", datetime.fromtimestamp(NOW + 60, UTC), 42, "strong DC field detected"),
    ]


async def test_interval_push_is_matched_by_the_sender_address_and_stored_as_registers(
    tmp_path: Path,
    db: Database,
) -> None:
    """The interval push names no meter in its values: the TCP meter at the sender's address
    is the sender. Its register values come with their scaler_units and are stored as the
    meter's registers at the pushed clock; once the list drops the scaler_units the push is
    refused (no event code, no value in a known unit)."""
    first = online_run(1, 960)
    async with management_fleet(
        tmp_path,
        db,
        tcp=1,
        first_meter=first,
        clock=SimClock(NOW),
        first_address="127.7.10.1",
        quirks=VALUES_ONLY,
    ) as fleet:
        (meter_id,) = [m.meter_id for m in db.meters()]
        listener = PushListener(db)
        await listener.start()
        pusher = fleet_pusher(fleet, [first], ("127.0.0.1", listener.port), 0, keep_sent=True)

        async def hes_push(*args: str) -> dict[str, Any]:
            code, out, err = await _hes(
                "push",
                *args,
                meter_id,
                "--setup",
                "0.1.25.9.0.255",
                "--db",
                str(tmp_path / "hes.db"),
                env=secret_env([meter_id]),
            )
            assert code == 0, (out, err)
            (result,) = json.loads(out)["results"]
            return dict(result)

        try:
            # stored first, then pushed: an ACTION push may beat the read-back of its session
            await hes_push("show")
            result = await hes_push("trigger")
            assert result["pushed"]
            assert [o["class_id"] for o in result["objects"]] == [8] + [3] * 8
            await until(lambda: listener.stats.values_stored == 4, "the interval push")
            await hes_push("set", "--object", "8/0.0.1.0.0.255/2", "--object", "3/1.0.1.8.0.255/2")
            await hes_push("trigger")
            await until(lambda: sum(listener.stats.rejected.values()) == 1, "the second push")
        finally:
            await listener.close()
    assert [(a.meter_id, a.name) for a in pusher.stats.actions] == [
        (first, ps.INTERVAL_PUSH_SETUP)
    ] * 2
    assert listener.stats.rejected == {"no_event_code": 1}
    assert listener.stats.decoded == {"stored": 1}
    # ground truth: the simulated meter's registers at the meter time it pushed
    t = pusher.stats.actions[0].meter_time
    truth = ORDINARY.registers(model.meter_spec(first, SEED), t)
    at = datetime.fromtimestamp(int(t * 100) / 100, UTC)
    stored = {
        r.obis: (r.ts, r.value, r.scaler, r.unit)
        for r in queries.register_reads(db, meter_id, at, at + timedelta(seconds=1))
    }
    assert stored == {
        "1.0.1.8.0.255": (at, truth.active_import, 0, 30),
        "1.0.2.8.0.255": (at, truth.active_export, 0, 30),
        "1.0.3.8.0.255": (at, truth.reactive_import, 0, 32),
        "1.0.4.8.0.255": (at, truth.reactive_export, 0, 32),
    }


async def test_bad_arguments_exit_2_and_reach_no_meter(tmp_path: Path) -> None:
    for args, message in (
        (["set", "M1"], "nothing to set"),
        (["set", "M1", "--window", "2026-03-11T00:00/2026-03-11T01:00Z"], "no time zone"),
        (["set", "M1", "--window", "2026-03-11T02:00Z/2026-03-11T01:00Z"], "ends before"),
        (["set", "M1", "--object", "3/1.0.1.8.0/2"], "not an OBIS code"),
        (["set", "M1", "--destination", "host:port"], "--destination"),
        (["show", "M1", "--setup", "0.0.1.0.0.255"], "0.b.25.9.0.255"),
        (["show", "M1"], "not in the inventory: M1"),
    ):
        code, out, err = await _hes("push", *args, "--db", str(tmp_path / "hes.db"))
        assert code == 2, (args, out, err)
        assert message in json.loads(out.splitlines()[0])["error"], (args, out)


def test_push_setup_job_params_are_checked() -> None:
    ok = {"destination": "127.0.0.1:4060", "windows": ["2026-03-11T00:00Z/2026-03-11T06:00Z"]}
    check_params("push_setup", ok, ["M1"])
    check_params("push_setup", {}, ["M1"])  # read back only
    check_params("push_setup", {"setup": "0.1.25.9.0.255", "trigger": True}, ["M1"])
    for params, meters, field in (
        (ok, None, "meters"),
        ({"destination": "host:port"}, ["M1"], "params.destination"),
        ({"windows": ["2026-03-11T00:00/2026-03-11T06:00Z"]}, ["M1"], "params.windows"),
        ({"windows": "2026-03-11T00:00Z/2026-03-11T06:00Z"}, ["M1"], "params.windows"),
        ({"objects": ["3/1.0.1.8.0.255"]}, ["M1"], "params.objects"),
        ({"setup": "0.0.1.0.0.255"}, ["M1"], "params.setup"),
        ({"retries": 3}, ["M1"], "params.retries"),
    ):
        with pytest.raises(JobError) as err:
            check_params("push_setup", params, meters)
        assert err.value.field == field, params


async def test_a_push_setup_job_configures_its_meters(tmp_path: Path, db: Database) -> None:
    first = online_run(2, 980)
    clock = SimClock(NOW)
    async with management_fleet(
        tmp_path, db, tcp=1, bus=1, first_meter=first, clock=clock, first_address="127.7.11.1"
    ) as fleet:
        ids = [m.meter_id for m in db.meters()]
        service = HeadEnd(
            db,
            parse_plan(plan_text()),
            now=lambda: datetime.fromtimestamp(clock.t, UTC),
            secrets=sim_secret,
            poll_s=0.05,
            drain_s=5.0,
        )
        loop = asyncio.create_task(service.run())
        try:
            await service.wait_ready()
            objects = ["40/0.0.25.9.0.255/2", "1/0.0.96.1.0.255/2", "1/0.0.96.11.0.255/2"]
            params = {"destination": "127.0.0.9:4070", "objects": objects}
            job, _ = await service.queue.submit(
                JobRequest("push_setup", params, ids, requested_by="ops")
            )
            job = await until_final(db, job.id)
            assert job.state == "done", (job.error, job.result)
            assert job.result["count"] == 2
            # a meter refuses an object it does not have: the job says which meter and why
            bad = {"objects": ["3/1.0.99.8.0.255/2"]}
            failed, _ = await service.queue.submit(
                JobRequest("push_setup", bad, ids[:1], requested_by="ops")
            )
            failed = await until_final(db, failed.id)
        finally:
            service.stop()
            await asyncio.wait_for(loop, 30)
    assert failed.state == "failed" and ids[0] in (failed.error or "")
    assert failed.result["meters"][0]["error_class"] == "object_undefined"
    want = tuple(ps.parse_object(o) for o in objects)
    for record in load_push_setups(db):
        assert record.objects == want
        assert record.destination == ps.tcp_destination("127.0.0.9", 4070)
        held = fleet.pool.view(meter_number(record.meter_id)).current_state().push_setups
        assert held[ps.ALARM_PUSH_SETUP].objects == want
    assert sorted(r.meter_id for r in load_push_setups(db)) == sorted(ids)


async def test_the_meter_refuses_bad_push_setup_writes(tmp_path: Path, db: Database) -> None:
    first = online_run(1, 990)
    async with management_fleet(
        tmp_path, db, tcp=1, first_meter=first, clock=SimClock(NOW), first_address="127.7.12.1"
    ):
        (meter,) = db.meters()
        password = sim_secret(f"sim/{meter.meter_id}")
        ln = "0.0.25.9.0.255"
        window = ps.parse_window("2026-03-11T05:00Z/2026-03-11T06:00Z")
        reversed_window = ps.Window(window.end, window.start)
        session = Session(
            open_transport(management_target(meter, 5.0)), authentication="lls", password=password
        )
        async with session:
            for attribute, value, error in (
                (2, ps.object_list_value([ps.parse_object("3/1.0.99.8.0.255/2")]), ObjectUndefined),
                # a push setup's own entry may only be its object list
                (
                    2,
                    ps.object_list_value([ps.parse_object("40/0.0.25.9.0.255/3")]),
                    ObjectUndefined,
                ),
                (3, ps.destination_value(ps.SendDestination(0, b"no-port")), DataAccessError),
                (4, ps.windows_value([reversed_window]), DataAccessError),
                (6, axdr.u16(300), DataAccessError),
            ):
                with pytest.raises(error) as exc:
                    await session.set(ps.CLASS_ID, ln, attribute, value)
                if error is DataAccessError:
                    assert exc.value.result == 12, attribute  # type-unmatched
            await session.set(ps.CLASS_ID, ln, 6, axdr.u8(3))
            assert await session.get(ps.CLASS_ID, ln, 6) == 3
            with pytest.raises(DataAccessError):
                await session.action(ps.CLASS_ID, ln, 1, axdr.i8(1))
            await session.action(ps.CLASS_ID, ln, 1, axdr.i8(0))  # nobody listens: still ok
        public = Session(open_transport(MeterTarget("tcp", host=meter.host, port=meter.port)))
        async with public:
            with pytest.raises(AccessDenied):
                await public.get(ps.CLASS_ID, ln, 2)


_ALARM_LIST = sim_setup.default_setup(ps.ALARM_PUSH_SETUP, describes=False).objects
_INTERVAL_LIST = sim_setup.default_setup(ps.INTERVAL_PUSH_SETUP, describes=False).objects


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.booleans())
def test_listener_decoding_refuses_any_body_with_a_reason(body: bytes, stored: bool) -> None:
    notification = xdlms.DataNotification(1, None, body)
    lists = [(ps.ALARM_PUSH_SETUP, _ALARM_LIST), (ps.INTERVAL_PUSH_SETUP, _INTERVAL_LIST)]
    try:
        pushed = decode_push(
            notification,
            lambda m: m == "SIM1",
            datetime.now(UTC),
            lambda _m: lists if stored else [],
            lambda: "SIM1",
        )
    except PushRejected as exc:
        assert exc.reason and str(exc)
    else:
        assert pushed.meter_id == "SIM1"
        if isinstance(pushed, PushedValues):
            assert pushed.registers and all(r.meter_id == "SIM1" for r in pushed.registers)
        else:
            assert isinstance(pushed.code, int)


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 7), st.binary(max_size=80))
def test_the_meter_refuses_any_malformed_write_with_a_data_access_result(
    attribute: int, data: bytes
) -> None:
    setup = sim_setup.default_setup(ps.ALARM_PUSH_SETUP)
    try:
        changed = sim_setup.set_attribute(
            setup, ps.ALARM_PUSH_SETUP, attribute, data, lambda _c, _n, _a: True
        )
    except DataAccessError as exc:
        assert exc.result in (4, 12)
    else:
        # what the meter took reads back as the same value
        decode = {
            2: ps.decode_object_list,
            3: ps.decode_destination,
            4: ps.decode_windows,
        }.get(attribute, axdr.decode)
        assert decode(sim_setup.get_attribute(changed, attribute)) == decode(data)


async def test_hes_simulate_pushes_what_hes_push_trigger_asks_for(tmp_path: Path) -> None:
    """``hes simulate --push-to`` wires the fleet's ACTION push: ``hes push trigger`` makes a
    values-only meter push at once, to the destination ``hes push set`` gave it."""
    first = online_run(1, 1010)
    inventory = tmp_path / "fleet.csv"
    sim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "simulate",
        "--tcp-meters",
        "1",
        "--seed",
        str(SEED),
        "--first-meter",
        str(first),
        "--port",
        "0",
        "--first-address",
        "127.7.13.1",
        "--push-to",
        f"127.0.0.1:{closed_port()}",
        "--alarms-per-day",
        "0",
        "--quirk",
        "push-without-object-list",
        "--duration",
        "60",
        "--inventory",
        str(inventory),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    database = open_database(tmp_path / "hes.db")
    listener = PushListener(database)
    try:
        assert sim.stdout is not None
        json.loads(await asyncio.wait_for(sim.stdout.readline(), 30))
        with inventory.open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            row.update(client_sap="1", authentication="lls", password_ref=f"sim/{row['meter_id']}")
        with inventory.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        import_inventory(database, inventory)
        await listener.start()
        (meter_id,) = [r["meter_id"] for r in rows]
        for args in (
            ("set", "--destination", f"127.0.0.1:{listener.port}"),
            ("trigger",),
        ):
            code, out, err = await _hes(
                "push",
                *args,
                meter_id,
                "--db",
                str(tmp_path / "hes.db"),
                env=secret_env([meter_id]),
            )
            assert code == 0, (out, err)
        await until(lambda: listener.stats.stored == 1, "the triggered alarm push")
        assert listener.stats.decoded == {"stored": 1}
        (alarm,) = alarms(database, None, None, limit=10)
        # the event code the meter holds: its standard event log's newest code
        spec = model.meter_spec(first, SEED)
        t = alarm.ts.timestamp()
        newest = model.events(spec, t - 180 * model.DAY, t + 1)
        assert alarm.meter_id == meter_id and alarm.code == newest[-1][1]
    finally:
        await listener.close()
        database.close()
        sim.terminate()
        await sim.wait()


def test_the_api_shows_a_meters_stored_push_setups(api_service: ApiService) -> None:
    api_service.db.upsert_meters(
        [MeterRecord("M1", "tcp", "127.0.0.1", 4059, None, None, 1, 1, "lls", "tcp:127.0.0.1")]
    )
    objects = tuple(ps.parse_object(o) for o in ("1/0.0.96.1.0.255/2", "1/0.0.96.11.0.255/2"))
    window = ps.parse_window("2026-03-11T00:00Z/2026-03-11T06:00Z")
    read_at = datetime(2026, 3, 11, 3, tzinfo=UTC)
    dest = ps.tcp_destination("10.0.0.5", 4060)
    record = PushSetupRecord("M1", ps.ALARM_PUSH_SETUP, objects, dest, (window,), read_at, 0, 3, 60)
    save_push_setups(api_service.db, [record])
    with api_service.reader() as client:
        r = client.get("/api/meters/M1/push-setups")
        assert r.status_code == 200, r.text
        (shown,) = r.json()["push_setups"]
        assert shown == record.as_dict()
        assert shown["destination"] == "10.0.0.5:4060"
        assert [o["obis"] for o in shown["objects"]] == ["0.0.96.1.0.255", "0.0.96.11.0.255"]
        missing = client.get("/api/meters/M9/push-setups")
        assert missing.status_code == 404 and missing.json()["error"] == "unknown_meter"
    with api_service.client() as anonymous:
        assert anonymous.get("/api/meters/M1/push-setups").status_code == 401
    # stored again: the row is replaced, not added
    save_push_setups(api_service.db, [record])
    assert len(load_push_setups(api_service.db, ["M1"])) == 1


async def test_an_sn_meter_is_configured_by_short_names(tmp_path: Path, db: Database) -> None:
    """Over short-name referencing the same push setup is written, read and pushed (the
    push method at its Blue Book offset 0x38)."""
    first = online_run(1, 1020)
    async with management_fleet(
        tmp_path,
        db,
        tcp=1,
        first_meter=first,
        clock=SimClock(NOW),
        first_address="127.7.14.1",
        quirks=named(["short-names"]),
    ) as fleet:
        (meter,) = db.meters()
        pushes: list[bytes] = []
        fleet.pool.on_push = lambda _m, name, _t: pushes.append(name)
        change = PushChange(destination=ps.tcp_destination("127.0.0.1", 4099))
        report, record = await run_meter(
            meter,
            ps.ALARM_PUSH_SETUP,
            change,
            secrets=sim_secret,
            trigger=True,
            options={"referencing": "sn"},  # as the sim-short-names profile says
        )
    assert report["outcome"] == "ok", report
    assert record is not None and record.destination.host_port() == ("127.0.0.1", 4099)
    assert pushes == [ps.ALARM_PUSH_SETUP]
