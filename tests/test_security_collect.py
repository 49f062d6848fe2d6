"""Collection over HLS-GMAC + suite-0 sessions, end to end through the real ``hes`` CLI.

A mixed fleet (``hes simulate --secure-share``) whose secured meters refuse anything but
ciphered management associations: the collector reads every meter to ground truth, and no
key (hex in either case, or raw bytes) reaches the log file, the database, the MQTT spool,
the commands' output or any MQTT payload. A secured meter without keys fails with its own
permanent error class, once; a run with secured meters and no master key stops before any
session.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiomqtt
from sqlalchemy import select
from test_collector_fleet import CHANNELS, plan_text

from app.collect import CollectOptions, collect_async
from collector.inventory import import_inventory
from collector.plan import load_plan
from protocols.security import SecurityKeys
from simulator import model
from simulator.fleet import Fleet, FleetSpec, meter_id_text, meter_number
from simulator.meter import SimulatedMeter
from storage.database import Database, open_database
from storage.gaps import day_window
from storage.keystore import KeyStore, invocation_counters, load_master_key

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 90
MASTER_HEX = "5e" * 8 + "a1" * 8 + "c3" * 8 + "07" * 8


def _env(tmp: Path, master: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HES_MASTER_KEY")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp))
    if master:
        env["HES_MASTER_KEY"] = MASTER_HEX
    return env


async def hes(tmp: Path, *args: str, master: bool = False) -> tuple[int, bytes, bytes]:
    """Run ``hes ARGS`` without blocking the loop (the test listens to MQTT meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        *args,
        cwd=ROOT,
        env=_env(tmp, master),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


def online_block(seed: int, count: int) -> int:
    """A first meter number from which ``count`` consecutive meters answer right now (an
    outage lasts hours, so they still answer while the test runs); random, so concurrent
    runs use different meter ids and MQTT topics."""
    rng = random.Random()
    now = time.time()
    while True:
        first = rng.randrange(100_000, 900_000_000)
        if all(SimulatedMeter(n, seed).online(now) for n in range(first, first + count)):
            return first


def free_loopback_base() -> str:
    """A loopback /24 of its own for the fleet's meter addresses."""
    return f"127.{random.randrange(60, 250)}.{random.randrange(1, 250)}.1"


def secrets_of(seed: int, numbers: Iterable[int]) -> list[bytes]:
    """Every key as raw bytes, lower-case hex and upper-case hex; plus the master key."""
    out: list[bytes] = []
    master = bytes.fromhex(MASTER_HEX)
    for number in numbers:
        keys = model.keys(number, seed)
        for key in (keys.encryption_key, keys.authentication_key, master):
            out += [key, key.hex().encode(), key.hex().upper().encode()]
    return out


def leaks(blob: bytes, secrets: list[bytes]) -> list[int]:
    return [i for i, s in enumerate(secrets) if s in blob]


def stored_vs_truth(db: Database, number: int, seed: int, day: date) -> list[str]:
    start, end = day_window(day)
    truth = model.ground_truth(number, seed, start.timestamp(), end.timestamp()).load_profile
    problems = []
    for k, channel in enumerate(CHANNELS):
        want = [(datetime.fromtimestamp(r[0], UTC), r[2 + k], r[1]) for r in truth]
        got = [
            (r.ts, r.value, r.status)
            for r in db.interval_reads(meter_id_text(number), channel, start, end)
        ]
        if got != want:
            problems.append(f"meter {number} {channel}: {len(got)} stored, {len(want)} true")
    return problems


async def test_mixed_fleet_collects_to_ground_truth_and_no_key_leaks(
    tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    host, port = mqtt_broker
    seed = 6061
    first = online_block(seed, 10)
    numbers = list(range(first, first + 10))
    day = datetime.now(UTC).date() - timedelta(days=2)
    inventory, keys_csv, db = tmp_path / "fleet.csv", tmp_path / "keys.csv", tmp_path / "hes.db"
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text(concurrency=10), encoding="utf-8")

    sim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "simulate",
        "--tcp-meters",
        "10",
        "--seed",
        str(seed),
        "--first-meter",
        str(first),
        "--secure-share",
        "0.4",
        "--port",
        "0",
        "--first-address",
        free_loopback_base(),
        "--duration",
        str(TIMEOUT * 3),
        "--inventory",
        str(inventory),
        "--keys",
        str(keys_csv),
        cwd=ROOT,
        env=_env(tmp_path, False),
        stdout=asyncio.subprocess.PIPE,
    )
    outputs: list[bytes] = []
    payloads: list[bytes] = []
    try:
        assert sim.stdout is not None
        info = json.loads(await asyncio.wait_for(sim.stdout.readline(), TIMEOUT))
        assert (info["meters"], info["secured_meters"], info["key_rows"]) == (10, 4, 4)
        with inventory.open(encoding="utf-8") as fh:
            rows = {r["meter_id"]: r for r in csv.DictReader(fh)}
        secured = {
            meter_number(m) for m, r in rows.items() if r["security_profile"] == "hls-gmac-suite0"
        }
        assert len(secured) == 4
        assert {rows[meter_id_text(n)]["client_sap"] for n in secured} == {"1"}
        with keys_csv.open(encoding="utf-8") as fh:
            assert {meter_number(r["meter_id"]) for r in csv.DictReader(fh)} == secured

        for args, master in (
            (("meters", "import", str(inventory), "--db", str(db)), False),
            (("keys", "import", str(keys_csv), "--db", str(db)), True),
        ):
            code, out, err = await hes(tmp_path, *args, master=master)
            assert code == 0, err.decode()
            outputs += [out, err]

        topics = [f"hes/{meter_id_text(n)}/#" for n in numbers]
        async with aiomqtt.Client(host, port, identifier=f"t-{uuid.uuid4().hex[:12]}") as client:
            for topic in topics:
                await client.subscribe(topic, qos=1)
            seen: set[tuple[str, str]] = set()

            async def listen() -> None:
                # Until every meter's profile and registers arrived (2 messages each).
                async for message in client.messages:
                    raw = bytes(message.payload)
                    payloads.append(raw)
                    body = json.loads(raw)
                    seen.add((body["meter_id"], body["kind"]))
                    if len(seen) == 2 * len(numbers):
                        return

            listener = asyncio.create_task(listen())
            code, out, err = await hes(
                tmp_path,
                "collect",
                "--db",
                str(db),
                "--config",
                str(plan),
                "--day",
                day.isoformat(),
                "--seed",
                "7",
                "--log-file",
                str(tmp_path / "collect.jsonl"),
                "--mqtt-url",
                f"mqtt://{host}:{port}",
                "--mqtt-spool",
                str(tmp_path / "spool.db"),
                master=True,
            )
            outputs += [out, err]
            assert code == 0, err.decode()
            await asyncio.wait_for(listener, TIMEOUT)
    finally:
        if sim.returncode is None:
            sim.terminate()
        await asyncio.wait_for(sim.communicate(), TIMEOUT)

    summary = json.loads(outputs[-2])
    assert summary["complete"] == 10, summary
    assert summary["final_errors"] == {}
    database = open_database(db)
    try:
        for number in numbers:
            assert stored_vs_truth(database, number, seed, day) == []
        attempted = database.attempts()
        assert {a.meter_id for a in attempted} == {meter_id_text(n) for n in numbers}
        # Ciphered sessions reserved invocation counters, persisted per secured meter.
        counters = database.execute_read(
            select(invocation_counters.c.meter_id, invocation_counters.c.next_counter)
        )
        assert {m for m, _ in counters} == {meter_id_text(n) for n in secured}
        assert all(n > 0 for _, n in counters)
    finally:
        database.close()
    assert seen == {(meter_id_text(n), k) for n in numbers for k in ("profile", "registers")}

    secrets = secrets_of(seed, secured)
    blobs = {"stdout/stderr": b"".join(outputs), "mqtt payloads": b"".join(payloads)}
    for path in tmp_path.iterdir():
        if path.name.startswith(("hes.db", "spool.db", "collect.jsonl")):
            blobs[path.name] = path.read_bytes()
    assert {"hes.db", "collect.jsonl", "spool.db"} <= set(blobs)
    for name, blob in blobs.items():
        assert leaks(blob, secrets) == [], f"key material in {name}"
    # The check can fail: the key file itself holds every key in hex.
    assert leaks(keys_csv.read_bytes(), secrets)


async def test_secured_meter_without_keys_fails_once_with_no_keys(tmp_path: Path) -> None:
    seed = 6062
    first = online_block(seed, 2)
    spec = FleetSpec(
        seed=seed,
        tcp_meters=2,
        first_meter=first,
        tcp_port=0,
        first_address=free_loopback_base(),
        secure_share=1.0,
    )
    with_keys, without = meter_id_text(first), meter_id_text(first + 1)
    day = datetime.now(UTC).date() - timedelta(days=2)
    db_path, plan = tmp_path / "hes.db", tmp_path / "plan.toml"
    plan.write_text(plan_text(concurrency=2), encoding="utf-8")
    master_file = tmp_path / "master.key"
    master_file.write_text(MASTER_HEX, encoding="ascii")
    async with Fleet(spec) as fleet:
        fleet.write_inventory(tmp_path / "fleet.csv")
        database = open_database(db_path)
        import_inventory(database, tmp_path / "fleet.csv")
        keys = model.keys(first, seed)
        KeyStore(database, load_master_key(master_file)).put(
            with_keys, SecurityKeys(keys.encryption_key, keys.authentication_key)
        )
        database.close()

        # Secured meters and no master key: a clear error before any session.
        code, _, err = await hes(
            tmp_path,
            "collect",
            "--db",
            str(db_path),
            "--config",
            str(plan),
            "--day",
            day.isoformat(),
        )
        assert code == 2
        assert "no master key" in err.decode() and "HES_MASTER_KEY" in err.decode()

        opts = CollectOptions(
            db=str(db_path),
            config=str(plan),
            day=day,
            run_id=f"nokeys-{uuid.uuid4().hex[:8]}",
            concurrency=None,
            once=False,
            seed=1,
            log_file=None,
            master_key_file=str(master_file),
        )
        summary, signum = await collect_async(opts, load_plan(plan))
    assert signum is None
    assert summary.stats.complete == 1
    assert summary.incomplete == {without: "no_keys"}
    database = open_database(db_path)
    try:
        attempts = [(a.meter_id, a.outcome, a.error_class, a.error) for a in database.attempts()]
        assert stored_vs_truth(database, first, seed, day) == []
    finally:
        database.close()
    by_meter = {m: [(o, c, e) for mm, o, c, e in attempts if mm == m] for m in (with_keys, without)}
    assert [(o, c) for o, c, _ in by_meter[with_keys]] == [("ok", None)]
    ((outcome, error_class, error),) = by_meter[without]  # one attempt: not retried
    assert (outcome, error_class) == ("failed", "no_keys")
    assert without in error
