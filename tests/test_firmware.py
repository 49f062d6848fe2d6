"""Firmware upgrade through the image transfer object against the simulated meters.

Image transfer, Blue Book class 18 version 0 at 0.0.44.0.0.255: attributes 2
image_block_size, 3 image_transferred_blocks_status, 4 image_first_not_transferred_block_number,
5 image_transfer_enabled, 6 image_transfer_status (0..7, not initiated .. activation failed),
7 image_to_activate_info; methods 1 initiate, 2 block transfer, 3 verify, 4 activate. Checked
against the attribute and status list of docs.rs/spodes-rs 0.7.1 src/classes/image_transfer.rs
(IEC 62056-6-2 4.4.6.4). The simulator's acceptance rule (an image ends with the SHA-256 of
the bytes before it) is its own, see ``simulator.image_transfer``.

Over the TCP wrapper and an HDLC bus behind a terminal-server port, with a small client max
PDU (256) so a 3 KiB image takes 15 blocks of 208 bytes.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import ApiService
from hypothesis import given
from hypothesis import strategies as st
from test_collector_fleet import plan_text
from test_daemon import until_final
from test_operations import (
    NOW,
    SEED,
    SimClock,
    _hes,
    management_fleet,
    online_run,
    secret_env,
    sim_secret,
)
from typer.testing import CliRunner

import cli
from collector.daemon import HeadEnd
from collector.firmware import read_many, upload_many, upload_meter
from collector.image_transfer import FirmwareImage, block_count, image_block, missing_blocks
from collector.inventory import import_inventory
from collector.plan import parse_plan
from collector.telemetry import Telemetry
from contracts.meters import SECURE_PROFILE
from protocols import axdr
from protocols.errors import DataAccessError, TemporaryFailure
from protocols.security import SecurityContext, SecurityKeys
from simulator import image_transfer, model
from simulator.fleet import BusEndpoint, Fleet, FleetSpec, meter_number
from simulator.image_transfer import Firmware, PowerCut, sign
from simulator.quirks import Quirks
from storage import jobs
from storage.database import Database, open_database
from storage.jobs import JobError, JobRequest, check_params
from storage.keystore import KeyStore, MasterKey, security_context
from storage.operations import commands
from storage.records import MeterRecord

PDU = 256
BLOCK = image_transfer.block_size_for(PDU, 1024)
BODY = 3000
BLOCKS = -(-(BODY + 32) // BLOCK)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "hes.db")
    yield database
    database.close()


def image(version: str, seed: int = 1) -> FirmwareImage:
    body = random.Random(seed).randbytes(BODY)
    return FirmwareImage(version.encode(), sign(body))


def firmware(fleet: Fleet, meter_id: str) -> Firmware:
    """The image transfer state of the simulated meter itself."""
    meter = fleet.pool.acquire(meter_number(meter_id))
    try:
        return meter.current_state().firmware
    finally:
        fleet.pool.release(meter)


# ---------------------------------------------------------------------------------------------
# The block planner


@given(st.integers(1, 300), st.integers(1, 64), st.data())
def test_missing_blocks_are_exactly_the_clear_bits(size: int, bs: int, data: st.DataObject) -> None:
    count = block_count(size, bs)
    held = data.draw(st.lists(st.booleans(), min_size=0, max_size=count + 3))
    bitmap = axdr.BitString.from_bits("".join("1" if b else "0" for b in held))
    first = next((n for n, b in enumerate(held) if not b), len(held))
    expected = [n for n in range(count) if n >= len(held) or not held[n]]
    assert missing_blocks(bitmap, first, count) == expected
    assert missing_blocks(bitmap, 0, count) == expected
    body = bytes(range(256)) * 2
    assert b"".join(image_block(body[:size], n, bs) for n in range(count)) == body[:size]


def test_no_bitmap_means_every_block_from_the_first_missing() -> None:
    assert missing_blocks(None, 0, 4) == [0, 1, 2, 3]
    assert missing_blocks(axdr.BitString.from_bits(""), 2, 4) == [2, 3]
    with pytest.raises(ValueError, match="block size 0"):
        block_count(10, 0)


# ---------------------------------------------------------------------------------------------
# The simulated image transfer object on its own (sans-IO)


def _initiate(fw: Firmware, identifier: bytes, size: int, bs: int = 4) -> None:
    image_transfer.invoke(fw, 1, (identifier, size), bs)


def test_simulated_object_refuses_what_does_not_fit_and_keeps_a_transfer_in_progress() -> None:
    fw = Firmware()
    data = sign(b"0123456789")
    with pytest.raises(DataAccessError, match="before image_transfer_initiate"):
        image_transfer.invoke(fw, 2, (0, data[:4]), 4)
    _initiate(fw, b"V2", len(data))
    with pytest.raises(DataAccessError, match="holds 3 bytes, not 4"):
        image_transfer.invoke(fw, 2, (0, data[:3]), 4)
    with pytest.raises(DataAccessError, match="block 99"):
        image_transfer.invoke(fw, 2, (99, data[:4]), 4)
    image_transfer.invoke(fw, 2, (1, data[4:8]), 4)
    _initiate(fw, b"V2", len(data))  # same image: a resume keeps block 1
    assert fw.transfer is not None and set(fw.transfer.blocks) == {1}
    with pytest.raises(DataAccessError, match="incomplete: 1 of 11"):
        image_transfer.invoke(fw, 3, 0, 4)
    assert fw.status == image_transfer.VERIFICATION_FAILED
    with pytest.raises(DataAccessError, match="without a verified image"):
        image_transfer.invoke(fw, 4, 0, 4)
    _initiate(fw, b"V2", len(data))  # after a failed verification: afresh
    assert fw.transfer is not None and not fw.transfer.blocks
    assert fw.active == image_transfer.DEFAULT_FIRMWARE


def test_simulated_object_power_cut_keeps_the_block_and_verification_runs_in_background() -> None:
    fw = Firmware()
    data = sign(b"abcdefgh")  # 40 bytes: 10 blocks of 4
    _initiate(fw, b"V3", len(data))
    for n in range(2):
        image_transfer.invoke(fw, 2, (n, image_block(data, n, 4)), 4, power_cut_after=3)
    with pytest.raises(PowerCut):
        image_transfer.invoke(fw, 2, (2, image_block(data, 2, 4)), 4, power_cut_after=3)
    assert fw.transfer is not None and fw.transfer.first_missing() == 3
    for n in range(3, 10):
        image_transfer.invoke(fw, 2, (n, image_block(data, n, 4)), 4, power_cut_after=3)
    with pytest.raises(TemporaryFailure):
        image_transfer.invoke(fw, 3, 0, 4)
    assert fw.status == image_transfer.VERIFICATION_INITIATED
    assert axdr.decode(image_transfer.get_attribute(fw, 6, 4)) == 3
    assert axdr.decode(image_transfer.get_attribute(fw, 7, 4)) == [(40, b"V3", data[-32:])]
    # A session lost during verification: initiating the same image again keeps every block.
    _initiate(fw, b"V3", len(data))
    assert fw.transfer is not None and fw.transfer.complete()
    with pytest.raises(TemporaryFailure):
        image_transfer.invoke(fw, 3, 0, 4)
    image_transfer.invoke(fw, 3, 0, 4)  # the outcome is there at the next verify too
    assert axdr.decode(image_transfer.get_attribute(fw, 7, 4)) == [(40, b"V3", data[-32:])]
    image_transfer.invoke(fw, 4, 0, 4)
    assert fw.active == b"V3"
    status = axdr.decode(image_transfer.get_attribute(fw, 6, 4))
    assert status == image_transfer.ACTIVATION_SUCCESSFUL


# ---------------------------------------------------------------------------------------------
# Uploads over TCP and an HDLC bus


async def test_full_upload_confirms_the_new_version(tmp_path: Path, db: Database) -> None:
    first = online_run(1, 1100)
    async with management_fleet(
        tmp_path, db, tcp=1, first_meter=first, clock=SimClock(NOW), first_address="127.7.30.1"
    ) as fleet:
        meter = db.meters()[0]
        report = await upload_meter(
            meter, image("SIM-FW-2.0.0"), secrets=sim_secret, max_pdu_size=PDU, request_timeout=3
        )
        assert report.ok, report.as_dict()
        assert (report.block_size, report.blocks, report.sent, report.held) == (
            BLOCK,
            BLOCKS,
            [BLOCKS],
            [0],
        )
        assert (report.old_version, report.new_version) == ("SIM-FW-1.0.0", "SIM-FW-2.0.0")
        assert report.verified and report.activated and not report.already_active
        assert firmware(fleet, meter.meter_id).active == b"SIM-FW-2.0.0"

        # Run again: the meter already runs it, nothing is sent.
        again = await upload_meter(
            meter, image("SIM-FW-2.0.0"), secrets=sim_secret, max_pdu_size=PDU, request_timeout=3
        )
        assert again.ok and again.already_active and again.sent == [] and not again.activated
        assert again.new_version == "SIM-FW-2.0.0"


@pytest.mark.parametrize(("tcp", "bus", "address"), [(1, 0, "127.7.31.1"), (0, 1, "127.7.32.1")])
async def test_image_blocks_bigger_than_the_meter_pdu_go_in_general_block_transfer(
    tmp_path: Path, db: Database, tcp: int, bus: int, address: str
) -> None:
    """With GBT the meter announces 2048-byte blocks, twice its max PDU: each ACTION goes out
    in GBT blocks of at most 1024 bytes, the meter's window of 3 at a time, over the TCP
    wrapper and an HDLC bus (where each block of a window waits for the meter's RR)."""
    first = online_run(1, 1300 + 100 * bus)
    async with management_fleet(
        tmp_path, db, tcp=tcp, bus=bus, first_meter=first, clock=SimClock(NOW),
        first_address=address, quirks=Quirks(gbt_window=3),
    ) as fleet:  # fmt: skip
        meter = db.meters()[0]
        report = await upload_meter(
            meter, image("SIM-FW-3.0.0"), secrets=sim_secret, request_timeout=3, gbt_window=2
        )
        assert report.ok, report.as_dict()
        assert report.block_size == image_transfer.GBT_BLOCK_SIZE > 1024
        assert report.blocks == -(-(BODY + 32) // image_transfer.GBT_BLOCK_SIZE)
        assert firmware(fleet, meter.meter_id).active == b"SIM-FW-3.0.0"
        stats = fleet.tcp.stats if fleet.tcp is not None else fleet.buses[0].stats
        assert stats.gbt_blocks >= report.blocks  # every image block was answered in GBT


async def test_power_cut_mid_transfer_then_resume_sends_only_the_missing_blocks(
    tmp_path: Path, db: Database
) -> None:
    first = online_run(2, 1200)
    cut = 6
    async with management_fleet(
        tmp_path,
        db,
        tcp=2,
        first_meter=first,
        clock=SimClock(NOW),
        first_address="127.7.31.1",
        quirks=Quirks(power_cut_after_blocks=cut),
    ) as fleet:
        one, two = db.meters()
        new = image("SIM-FW-2.1.0")
        # One session allowed: the power cut ends the upload; the meter keeps 6 blocks.
        broken = await upload_meter(
            one, new, secrets=sim_secret, sessions=1, max_pdu_size=PDU, request_timeout=3
        )
        assert not broken.ok and broken.error_class == "link"
        assert broken.sent == [cut] and not broken.verified
        state = firmware(fleet, one.meter_id)
        assert state.transfer is not None and sorted(state.transfer.blocks) == list(range(cut))
        assert state.active == b"SIM-FW-1.0.0"
        # What the head-end reads of it (hes firmware status): 6 blocks held, still initiated.
        (seen,) = await read_many([one], secrets=sim_secret)
        assert {k: seen[k] for k in ("outcome", "active_firmware", "status", "blocks_held")} == {
            "outcome": "ok",
            "active_firmware": "SIM-FW-1.0.0",
            "status": "initiated",
            "blocks_held": cut,
        }
        assert (seen["first_missing"], seen["block_size"], seen["to_activate"]) == (cut, BLOCK, [])

        resumed = await upload_meter(one, new, secrets=sim_secret, max_pdu_size=PDU)
        assert resumed.ok, resumed.as_dict()
        assert (resumed.held, resumed.sent, resumed.resumed_from) == ([cut], [BLOCKS - cut], cut)
        assert firmware(fleet, one.meter_id).active == b"SIM-FW-2.1.0"

        # With sessions to spare one call rides the cut out: every block sent exactly once.
        report = await upload_meter(two, new, secrets=sim_secret, max_pdu_size=PDU)
        assert report.ok, report.as_dict()
        assert (report.sent, report.held) == ([cut, BLOCKS - cut], [0, cut])
        assert report.blocks_sent == BLOCKS
        assert firmware(fleet, two.meter_id).active == b"SIM-FW-2.1.0"


async def test_corrupted_image_is_refused_at_verify_and_the_version_stays(
    tmp_path: Path, db: Database
) -> None:
    first = online_run(1, 1300)
    async with management_fleet(
        tmp_path, db, tcp=1, first_meter=first, clock=SimClock(NOW), first_address="127.7.32.1"
    ) as fleet:
        meter = db.meters()[0]
        good = image("SIM-FW-3.0.0")
        bad = bytearray(good.data)
        bad[1000] ^= 0x01
        report = await upload_meter(
            meter,
            FirmwareImage(good.identifier, bytes(bad)),
            secrets=sim_secret,
            max_pdu_size=PDU,
        )
        assert not report.ok and report.error_class == "verification_failed"
        assert "image_transfer_status 4" in (report.error or "")
        assert report.sent == [BLOCKS] and not report.verified and not report.activated
        state = firmware(fleet, meter.meter_id)
        assert (state.status, state.active) == (image_transfer.VERIFICATION_FAILED, b"SIM-FW-1.0.0")

        # The good image afterwards starts afresh and goes through.
        report = await upload_meter(meter, good, secrets=sim_secret, max_pdu_size=PDU)
        assert report.ok and report.held == [0] and report.sent == [BLOCKS]
        assert firmware(fleet, meter.meter_id).active == b"SIM-FW-3.0.0"


async def test_a_meter_that_rolls_back_fails_as_version_not_changed(
    tmp_path: Path, db: Database
) -> None:
    first = online_run(1, 1350)
    async with management_fleet(
        tmp_path,
        db,
        tcp=1,
        first_meter=first,
        clock=SimClock(NOW),
        first_address="127.7.36.1",
        quirks=Quirks(firmware_rollback=True),
    ) as fleet:
        meter = db.meters()[0]
        report = await upload_meter(
            meter, image("SIM-FW-3.1.0"), secrets=sim_secret, max_pdu_size=PDU, request_timeout=3
        )
        assert (report.ok, report.error_class) == (False, "version_not_changed")
        assert report.verified and not report.activated
        assert (report.old_version, report.new_version) == ("SIM-FW-1.0.0", "SIM-FW-1.0.0")
        assert "'SIM-FW-1.0.0' after activation" in (report.error or "")
        assert firmware(fleet, meter.meter_id).active == image_transfer.DEFAULT_FIRMWARE


@pytest.mark.parametrize(
    ("endpoint", "transport", "cut", "version", "search_from"),
    [
        ("tcp", "hdlc-tcp", 4, "SIM-FW-4.0.0", 1400),
        ("pty", "serial", 9, "SIM-FW-4.1.0", 1450),
    ],
)
async def test_upload_over_a_bus_resumes_after_a_power_cut(
    tmp_path: Path,
    db: Database,
    endpoint: BusEndpoint,
    transport: str,
    cut: int,
    version: str,
    search_from: int,
) -> None:
    """A bus behind a terminal server, and one on a pty: the meter loses power after ``cut``
    blocks, the next session sends the rest."""
    first = online_run(1, search_from)
    async with management_fleet(
        tmp_path,
        db,
        tcp=0,
        bus=1,
        first_meter=first,
        clock=SimClock(NOW),
        quirks=Quirks(power_cut_after_blocks=cut),
        bus_endpoint=endpoint,
    ) as fleet:
        meter = db.meters()[0]
        assert meter.transport == transport
        report = await upload_meter(
            meter, image(version), secrets=sim_secret, max_pdu_size=PDU, request_timeout=3
        )
        assert report.ok, report.as_dict()
        assert (report.sent, report.held) == ([cut, BLOCKS - cut], [0, cut])
        assert firmware(fleet, meter.meter_id).active == version.encode()


async def test_a_secured_meter_takes_the_image_over_ciphered_sessions(
    tmp_path: Path, db: Database
) -> None:
    """HLS-GMAC with suite-0 ciphering: every block a glo- APDU, the resume too."""
    first = online_run(2, 1700)
    spec = FleetSpec(
        seed=SEED,
        tcp_meters=2,
        first_meter=first,
        tcp_port=0,
        first_address="127.7.35.1",
        baudrate=None,
        secure_share=1.0,
        quirks=Quirks(power_cut_after_blocks=5),
    )
    async with Fleet(spec, clock=SimClock(NOW)) as fleet:
        fleet.write_inventory(tmp_path / "fleet.csv")
        import_inventory(db, tmp_path / "fleet.csv")
        with_keys, without = db.meters()
        assert with_keys.security_profile == SECURE_PROFILE
        keystore = KeyStore(db, MasterKey(bytes(range(32))))
        keys = model.keys(meter_number(with_keys.meter_id), SEED)
        keystore.put(with_keys.meter_id, SecurityKeys(keys.encryption_key, keys.authentication_key))

        def security_for(meter: MeterRecord) -> SecurityContext:
            return security_context(keystore, meter.meter_id)

        telemetry = Telemetry()
        reports = await upload_many(
            [with_keys, without],
            image("SIM-FW-8.0.0"),
            secrets=sim_secret,
            db=db,
            requested_by="t",
            security_for=security_for,
            telemetry=telemetry,
            max_pdu_size=PDU,
            request_timeout=3,
        )
        ok, refused = reports
        assert ok.ok, ok.as_dict()
        assert (ok.sent, ok.held) == ([5, BLOCKS - 5], [0, 5])
        assert firmware(fleet, with_keys.meter_id).active == b"SIM-FW-8.0.0"
        assert (refused.ok, refused.error_class, refused.sent) == (False, "no_keys", [])
        # the upload counts as a session in the service's metrics; no keys, no session
        assert telemetry.sessions.labels("ok", "")._value.get() == 1
        assert telemetry.sessions_in_flight._value.get() == 0
        assert firmware(fleet, without.meter_id).active == image_transfer.DEFAULT_FIRMWARE
    assert sorted((a.meter_id, a.outcome, a.error_class) for a in commands(db)) == [
        (with_keys.meter_id, "ok", None),
        (without.meter_id, "failed", "no_keys"),
    ]


# ---------------------------------------------------------------------------------------------
# hes firmware upload


async def test_cli_upload_by_area(tmp_path: Path, db: Database) -> None:
    first = online_run(2, 1500)
    async with management_fleet(
        tmp_path, db, tcp=2, first_meter=first, clock=SimClock(NOW), first_address="127.7.33.1"
    ) as fleet:
        ids = [m.meter_id for m in db.meters()]
        area = db.meters()[0].area
        assert area is not None
        env = secret_env(ids)
        path = tmp_path / "fw.bin"
        path.write_bytes(image("SIM-FW-5.0.0").data)
        dbfile = str(tmp_path / "hes.db")
        common = ["--db", dbfile, "--max-pdu", str(PDU), "--timeout", "3"]

        code, out, err = await _hes(
            "firmware",
            "upload",
            "--image",
            str(path),
            "--identifier",
            "SIM-FW-5.0.0",
            "--area",
            area,
            "--by",
            "fw-desk",
            *common,
            env=env,
        )
        assert code == 0, err
        summary = json.loads(out)
        assert (summary["meters"], summary["ok"], summary["failed"]) == (2, 2, 0)
        for result in summary["results"]:
            assert result["outcome"] == "ok"
            assert (result["blocks_sent"], result["resumed_from"]) == (BLOCKS, 0)
            assert (result["old_version"], result["new_version"]) == (
                "SIM-FW-1.0.0",
                "SIM-FW-5.0.0",
            )
        assert [firmware(fleet, m).active for m in ids] == [b"SIM-FW-5.0.0"] * 2

        code, out, err = await _hes(
            "firmware", "status", "--all", "--db", dbfile, "--timeout", "3", env=env
        )
        assert code == 0, err
        states = json.loads(out)["results"]
        assert [(r["meter_id"], r["active_firmware"], r["status"]) for r in states] == [
            (m, "SIM-FW-5.0.0", "activation_successful") for m in ids
        ]
        assert states[0]["to_activate"][0]["identification"] == "SIM-FW-5.0.0"
    audit = commands(db)
    assert sorted((a.meter_id, a.command, a.requested_by, a.outcome) for a in audit) == [
        (m, "firmware", "fw-desk", "ok") for m in sorted(ids)
    ]
    assert {a.error for a in audit} == {"SIM-FW-1.0.0 -> SIM-FW-5.0.0"}


def test_cli_bad_input_is_a_json_error_and_sends_nothing(tmp_path: Path) -> None:
    path = tmp_path / "fw.bin"
    path.write_bytes(image("SIM-FW-6").data)
    (tmp_path / "empty.bin").write_bytes(b"")
    inventory = tmp_path / "inv.csv"
    inventory.write_text(
        "meter_id,transport,host,security_profile,client_sap\nA1,tcp,127.0.0.1,,16\n"
        f"S1,tcp,127.0.0.2,{SECURE_PROFILE},1\n",
        encoding="utf-8",
    )
    database = open_database(tmp_path / "hes.db")
    import_inventory(database, inventory)
    database.close()
    app = cli.build(["firmware"])
    runner = CliRunner()

    def refused(*args: str) -> str:
        result = runner.invoke(
            app,
            ["firmware", "upload", *args, "--db", str(tmp_path / "hes.db")],
            env={"HES_MASTER_KEY": None, "HES_MASTER_KEY_FILE": None},
        )
        assert result.exit_code == 2, (result.stdout, result.stderr)
        message = json.loads(result.stdout)["error"]
        assert message in result.stderr
        return str(message)

    good = ["--image", str(path), "--identifier", "SIM-FW-6"]
    missing = str(tmp_path / "nope.bin")
    assert "cannot read image" in refused("--image", missing, "--identifier", "X", "--meter", "A1")
    assert "is empty" in refused(
        "--image", str(tmp_path / "empty.bin"), "--identifier", "X", "--meter", "A1"
    )
    assert "must not be empty" in refused(
        "--image", str(path), "--identifier", " ", "--meter", "A1"
    )
    assert "must be ASCII" in refused("--image", str(path), "--identifier", "v\u00e9", "--all")
    assert "not in the inventory: NOPE" in refused(*good, "--meter", "A1", "--meter", "NOPE")
    assert "no meters given" in refused(*good)
    assert "'west' has no meters" in refused(*good, "--area", "west")
    assert "secured meters need the key store: no master key" in refused(*good, "--meter", "S1")


# ---------------------------------------------------------------------------------------------
# The firmware job of the service's queue


def test_firmware_job_params_are_checked() -> None:
    ok = {"image": "/srv/fw/v2.bin", "identifier": "SIM-FW-2"}
    check_params("firmware", ok, ["M1"])
    check_params("firmware", {**ok, "sessions": 5}, ["M1"])
    for params, meters, field in (
        (ok, None, "meters"),
        ({"identifier": "X"}, ["M1"], "params.image"),
        ({"image": "/f", "identifier": " "}, ["M1"], "params.identifier"),
        ({**ok, "identifier": "v\u00e9"}, ["M1"], "params.identifier"),
        ({**ok, "sessions": 0}, ["M1"], "params.sessions"),
        ({**ok, "sessions": "3"}, ["M1"], "params.sessions"),
        ({**ok, "block": 64}, ["M1"], "params.block"),
    ):
        with pytest.raises(JobError) as err:
            check_params("firmware", params, meters)
        assert err.value.field == field, params


async def test_a_firmware_job_in_the_service_queue_upgrades_its_meters(
    tmp_path: Path, db: Database
) -> None:
    first = online_run(2, 1600)
    clock = SimClock(NOW)
    async with management_fleet(
        tmp_path, db, tcp=1, bus=1, first_meter=first, clock=clock, first_address="127.7.34.1"
    ) as fleet:
        ids = [m.meter_id for m in db.meters()]
        path = tmp_path / "fw.bin"
        path.write_bytes(image("SIM-FW-7.0.0").data)
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
            params = {"image": str(path), "identifier": "SIM-FW-7.0.0"}
            job, _ = await service.queue.submit(
                JobRequest("firmware", params, ids, requested_by="ops")
            )
            job = await until_final(db, job.id)
            assert job.state == "done", (job.error, job.result)
            assert job.result["count"] == 2
            assert {r["new_version"] for r in job.result["meters"]} == {"SIM-FW-7.0.0"}
            assert [firmware(fleet, m).active for m in ids] == [b"SIM-FW-7.0.0"] * 2
            audit = commands(db)
            assert sorted((a.meter_id, a.requested_by, a.outcome) for a in audit) == [
                (m, "ops", "ok") for m in sorted(ids)
            ]

            missing = {"image": str(tmp_path / "gone.bin"), "identifier": "SIM-FW-8"}
            job, _ = await service.queue.submit(
                JobRequest("firmware", missing, ids[:1], requested_by="ops")
            )
            job = await until_final(db, job.id)
            assert job.state == "failed" and "cannot read image" in (job.error or "")
            assert firmware(fleet, ids[0]).active == b"SIM-FW-7.0.0"
        finally:
            service.stop()
            await asyncio.wait_for(loop, 30)


def test_the_api_queues_a_firmware_job(api_service: ApiService) -> None:
    api_service.db.upsert_meters(
        [MeterRecord("M1", "tcp", "10.0.0.1", 4059, None, None, 1, 16, "none", "M1")]
    )
    body = {
        "kind": "firmware",
        "meters": ["M1"],
        "params": {"image": "/srv/fw/v2.bin", "identifier": "SIM-FW-2", "sessions": 4},
    }
    with api_service.client(api_service.operator_token) as http:
        r = http.post("/api/jobs", json=body)
        refused = http.post("/api/jobs", json={**body, "params": {"image": "/f"}})
    assert r.status_code == 201, r.text
    job = jobs.get(api_service.db, r.json()["id"])
    assert job is not None and (job.kind, job.meters, job.state) == ("firmware", ["M1"], "queued")
    assert job.params == body["params"]
    assert (refused.status_code, refused.json()["field"]) == (400, "body.params.identifier")
