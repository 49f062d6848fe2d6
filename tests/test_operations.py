"""Remote disconnect/reconnect against the real simulator fleet over 127.0.0.1, audited.

The fleet is the simulator's own (``simulator.fleet``: TCP meters on loopback addresses and an
HDLC bus behind a terminal-server port) on a fixed clock, imported as inventory rows for the
management client (SAP 1, LLS, a password reference per meter). The relay is checked in the
simulated meters themselves, and each command in the audit table.
Also holds the fleet helpers the event, clock and push tests share.
"""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.inventory import import_inventory
from collector.operations import (
    CONNECTED,
    DISCONNECTED,
    SelectionError,
    read_meter_file,
    run_command,
    select_meters,
)
from contracts.meters import INVENTORY_COLUMNS
from simulator import model
from simulator.fleet import BusEndpoint, Fleet, FleetSpec, meter_number
from simulator.meter import SimulatedMeter
from simulator.quirks import NO_QUIRKS, Quirks
from storage.database import Database, open_database
from storage.operations import commands

ROOT = Path(__file__).resolve().parents[1]
SEED = 707
#: Simulator time: 2026-03-11 03:00 UTC.
NOW = datetime(2026, 3, 11, 3, 0, tzinfo=UTC).timestamp()


class SimClock:
    """A settable clock for the fleet (true unix time)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def online_run(count: int, start: int, now: float = NOW, seed: int = SEED) -> int:
    """First meter number n >= start such that meters n .. n+count-1 all answer at ``now``."""
    n = start
    while True:
        if all(SimulatedMeter(n + k, seed).online(now) for k in range(count)):
            return n
        n += 1


def sim_secret(ref: str) -> bytes | None:
    """The key store of the tests: ref ``sim/<meter id>`` names the simulated meter's password."""
    if not ref.startswith("sim/"):
        return None
    return model.meter_spec(meter_number(ref[4:]), SEED).password


def secret_env(meter_ids: list[str]) -> dict[str, str]:
    """HES_PASSWORD_<REF> variables for the CLI (see collector.service.env_secret)."""
    env = dict(os.environ)
    for meter_id in meter_ids:
        secret = sim_secret(f"sim/{meter_id}")
        assert secret is not None
        env[f"HES_PASSWORD_SIM_{meter_id}"] = secret.decode()
    return env


@asynccontextmanager
async def management_fleet(
    tmp_path: Path,
    db: Database,
    *,
    tcp: int,
    bus: int = 0,
    first_meter: int,
    clock: SimClock,
    first_address: str = "127.7.0.1",
    quirks: Quirks = NO_QUIRKS,
    bus_endpoint: BusEndpoint = "tcp",
) -> AsyncIterator[Fleet]:
    """Start a fleet and import it for the management client (LLS, ref ``sim/<id>``)."""
    spec = FleetSpec(
        quirks=quirks,
        bus_endpoint=bus_endpoint,
        seed=SEED,
        tcp_meters=tcp,
        buses=1 if bus else 0,
        meters_per_bus=bus,
        baudrate=None,
        tcp_port=0,
        first_address=first_address,
        first_meter=first_meter,
    )
    fleet = Fleet(spec, clock=clock)
    await fleet.start()
    try:
        path = tmp_path / "inventory.csv"
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=INVENTORY_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in fleet.inventory_rows():
                row.update(
                    client_sap="1", authentication="lls", password_ref=f"sim/{row['meter_id']}"
                )
                writer.writerow(row)
        import_inventory(db, path)
        yield fleet
    finally:
        await fleet.close()


def relay(fleet: Fleet, meter_id: str) -> int:
    """Control state of the simulated meter itself."""
    meter = fleet.pool.acquire(meter_number(meter_id))
    try:
        return meter.current_state().control_state
    finally:
        fleet.pool.release(meter)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "hes.db")
    yield database
    database.close()


async def test_disconnect_then_reconnect_switch_the_relay_and_are_audited(
    tmp_path: Path, db: Database
) -> None:
    first = online_run(5, 100)
    async with management_fleet(
        tmp_path, db, tcp=3, bus=2, first_meter=first, clock=SimClock(NOW)
    ) as fleet:
        meters = db.meters()
        ids = [m.meter_id for m in meters]
        assert len(ids) == 5 and {m.transport for m in meters} == {"tcp", "hdlc-tcp"}
        assert all(relay(fleet, m) == CONNECTED for m in ids)

        results = await run_command(
            db, meters, "disconnect", requested_by="alice", secrets=sim_secret, request_timeout=3.0
        )
        assert [r.ok for r in results] == [True] * 5, [r.as_dict() for r in results]
        for r in results:
            assert r.state is not None
            assert r.state.control_state == DISCONNECTED and r.state.output_state is False
            assert relay(fleet, r.meter_id) == DISCONNECTED

        results = await run_command(
            db, meters[:2], "reconnect", requested_by="bob", secrets=sim_secret, request_timeout=3.0
        )
        assert all(r.ok and r.state is not None and r.state.output_state for r in results)
        assert [relay(fleet, m) for m in ids] == [CONNECTED] * 2 + [DISCONNECTED] * 3

    audit = commands(db)
    assert sorted((a.command, a.meter_id, a.requested_by, a.outcome) for a in audit) == sorted(
        [
            *(("disconnect", m, "alice", "ok") for m in ids),
            *(("reconnect", m, "bob", "ok") for m in ids[:2]),
        ]
    )
    for a in audit:
        assert a.requested_at <= a.finished_at and a.requested_at.tzinfo is not None
        assert a.output_state is (a.command == "reconnect")
        assert a.control_state == (CONNECTED if a.command == "reconnect" else DISCONNECTED)


async def test_wrong_or_missing_secret_fails_is_audited_and_leaves_the_relay(
    tmp_path: Path, db: Database
) -> None:
    first = online_run(2, 300)
    async with management_fleet(
        tmp_path, db, tcp=2, first_meter=first, clock=SimClock(NOW), first_address="127.7.1.1"
    ) as fleet:
        meters = db.meters()

        def wrong(ref: str) -> bytes | None:
            return b"00000000" if ref.endswith(meters[0].meter_id) else None

        results = await run_command(
            db, meters, "disconnect", requested_by="eve", secrets=wrong, request_timeout=3.0
        )
        assert [r.error_class for r in results] == ["authentication_failed", "no_secret"]
        assert all(relay(fleet, m.meter_id) == CONNECTED for m in meters)
    audit = sorted(commands(db), key=lambda a: a.meter_id)
    assert [(a.meter_id, a.outcome, a.error_class, a.output_state) for a in audit] == [
        (meters[0].meter_id, "failed", "authentication_failed", None),
        (meters[1].meter_id, "failed", "no_secret", None),
    ]
    assert "sim/" in (audit[1].error or "")


def test_selection_by_file_and_group_and_unknown_ids(tmp_path: Path, db: Database) -> None:
    path = tmp_path / "inv.csv"
    path.write_text(
        "meter_id,transport,host,area\nA1,tcp,127.0.0.1,north\nA2,tcp,127.0.0.2,north\n"
        "B1,tcp,127.0.0.3,south\n",
        encoding="utf-8",
    )
    import_inventory(db, path)
    listing = tmp_path / "meters.txt"
    listing.write_text("# to cut\nmeter_id\nB1, overdue\n\nA1\n", encoding="utf-8")
    assert read_meter_file(listing) == ["B1", "A1"]
    assert [m.meter_id for m in select_meters(db, file=listing)] == ["B1", "A1"]
    assert [m.meter_id for m in select_meters(db, ["B1"], group="north")] == ["B1", "A1", "A2"]
    with pytest.raises(SelectionError, match="not in the inventory: X9"):
        select_meters(db, ["A1", "X9"])
    with pytest.raises(SelectionError, match="'west' has no meters"):
        select_meters(db, group="west")
    with pytest.raises(SelectionError, match="no meters given"):
        select_meters(db)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(SelectionError, match="names no meter"):
        select_meters(db, file=empty)


async def _hes(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_disconnect_by_file_reconnect_by_group(tmp_path: Path, db: Database) -> None:
    import json

    first = online_run(3, 500)
    async with management_fleet(
        tmp_path, db, tcp=3, first_meter=first, clock=SimClock(NOW), first_address="127.7.2.1"
    ) as fleet:
        ids = [m.meter_id for m in db.meters()]
        area = db.meters()[0].area
        assert area is not None
        env = secret_env(ids)
        listing = tmp_path / "cut.txt"
        listing.write_text(f"{ids[0]}\n{ids[2]}\n", encoding="utf-8")
        dbfile = str(tmp_path / "hes.db")

        code, out, err = await _hes(
            "disconnect",
            "--file",
            str(listing),
            "--db",
            dbfile,
            "--by",
            "ops-desk",
            "--timeout",
            "3",
            env=env,
        )
        assert code == 0, err
        summary = json.loads(out)
        assert (summary["ok"], summary["failed"]) == (2, 0)
        assert [relay(fleet, m) for m in ids] == [DISCONNECTED, CONNECTED, DISCONNECTED]

        code, out, err = await _hes(
            "reconnect",
            "--group",
            area,
            "--db",
            dbfile,
            "--by",
            "ops-desk",
            "--timeout",
            "3",
            env=env,
        )
        assert code == 0, err
        assert {r["control_state"] for r in json.loads(out)["results"]} == {"connected"}
        assert [relay(fleet, m) for m in ids] == [CONNECTED] * 3

        code, out, err = await _hes("disconnect", ids[1], "NOPE", "--db", dbfile, env=env)
        assert code == 2 and "not in the inventory: NOPE" in err
        assert relay(fleet, ids[1]) == CONNECTED

        # Without the secrets the command fails (exit 1), and that is audited too.
        code, out, err = await _hes("disconnect", ids[1], "--db", dbfile, "--timeout", "3")
        assert code == 1 and json.loads(out)["results"][0]["error_class"] == "no_secret"

    audit = commands(db)
    assert sorted((a.command, a.meter_id, a.outcome) for a in audit[:5]) == [
        ("disconnect", ids[0], "ok"),
        ("disconnect", ids[2], "ok"),
        *(("reconnect", m, "ok") for m in ids),
    ]
    assert (audit[5].meter_id, audit[5].command, audit[5].outcome) == (
        ids[1],
        "disconnect",
        "failed",
    )
    assert {a.requested_by for a in audit[:5]} == {"ops-desk"}
