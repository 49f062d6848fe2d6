"""Simulator scale: start time and memory of a 200,000-meter fleet, and a session load on it.

Runs ``hes simulate`` in a subprocess (as a load test would), measures the time until it
announces itself (server start plus the 200,000-row inventory) and its resident memory
(VmRSS/VmHWM from /proc) when idle and after the load; then drives a few thousand DLMS
sessions from this process (clock, A+ register and one day of load profile each) against a
random subset of GPRS and bus meters. Also measures the fallback listening mode (one socket
per loopback address). Figures go to bench/sim_scale.json; nothing is asserted.

    .venv/bin/python -m bench.sim_scale [--tcp-meters 150000 --buses 50 --meters-per-bus 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from collector.profile_reader import read_profile
from collector.session import Session
from collector.transport import open_transport
from contracts.meters import MeterTarget
from protocols.errors import DlmsError
from simulator.fleet import FIRST_PHYSICAL, LoopbackRange, MeterPool
from simulator.server import WrapperServer

ROOT = Path(__file__).resolve().parents[1]

SEED = 2026


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process in MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


async def one_session(target: MeterTarget, start: datetime, end: datetime) -> str:
    try:
        async with Session(open_transport(target), request_timeout=10) as s:
            await s.read_clock()
            await s.read_register("1.0.1.8.0.255")
            await read_profile(s, "1.0.99.1.0.255", start, end)
    except DlmsError as exc:
        return exc.error_class
    return "ok"


async def drive(
    info: dict[str, Any], tcp_sessions: int, bus_sessions: int, concurrency: int
) -> dict[str, Any]:
    """Sessions against random meters: TCP ones concurrently, one at a time per bus."""
    rng = random.Random(SEED)
    tcp = info.get("tcp")
    buses = info.get("buses", [])
    addresses = LoopbackRange(tcp["first_address"], tcp["meters"]) if tcp else None
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=1)
    results: dict[str, int] = {}
    sem = asyncio.Semaphore(concurrency)

    async def tcp_one() -> None:
        assert addresses is not None and tcp is not None
        target = MeterTarget("tcp", host=addresses[rng.randrange(len(addresses))], port=tcp["port"])
        async with sem:
            kind = await one_session(target, start, end)
        results[kind] = results.get(kind, 0) + 1

    async def bus_worker(bus: dict[str, Any], n: int) -> None:
        for _ in range(n):
            physical = FIRST_PHYSICAL + rng.randrange(bus["meters"])
            target = MeterTarget(
                "hdlc-tcp", host=bus["host"], port=bus["port"], physical_address=physical
            )
            kind = await one_session(target, start, end)
            results[kind] = results.get(kind, 0) + 1

    t0 = time.perf_counter()
    jobs = [tcp_one() for _ in range(tcp_sessions if tcp else 0)]
    if buses:
        per_bus = max(1, bus_sessions // len(buses))
        jobs += [bus_worker(bus, per_bus) for bus in buses]
    await asyncio.gather(*jobs)
    seconds = time.perf_counter() - t0
    total = sum(results.values())
    return {
        "sessions": total,
        "results": results,
        "seconds": round(seconds, 2),
        "sessions_per_second": round(total / seconds, 1),
        "concurrency_tcp": concurrency,
        "each_session": "AARQ, clock, A+ register (value+scaler), 1-day load profile, RLRQ",
    }


async def per_address_bind(count: int) -> dict[str, Any]:
    """The fallback: one listening socket per loopback address."""
    addresses = LoopbackRange("127.9.0.1", count)
    pool = MeterPool(SEED)
    server = WrapperServer(
        lambda ip, port: None, port=0, hosts=addresses, release=pool.release, per_address=True
    )
    t0 = time.perf_counter()
    await server.start()
    seconds = time.perf_counter() - t0
    await server.close()
    return {"addresses": count, "start_seconds": round(seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tcp-meters", type=int, default=150_000)
    parser.add_argument("--buses", type=int, default=50)
    parser.add_argument("--meters-per-bus", type=int, default=1000)
    parser.add_argument("--tcp-sessions", type=int, default=3000)
    parser.add_argument("--bus-sessions", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "sim_scale.json")
    args = parser.parse_args()
    inventory = Path("/tmp") / f"sim_scale_{SEED}.csv"
    cmd = [
        sys.executable, "-m", "cli", "simulate",
        "--tcp-meters", str(args.tcp_meters), "--buses", str(args.buses),
        "--meters-per-bus", str(args.meters_per_bus), "--seed", str(SEED),
        "--port", str(args.port), "--baud", "0", "--inventory", str(inventory),
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        announce_s = time.perf_counter() - t0
        if not line:
            raise SystemExit("hes simulate exited without announcing the fleet")
        info = json.loads(line)
        idle = proc_memory(proc.pid)
        load = asyncio.run(drive(info, args.tcp_sessions, args.bus_sessions, args.concurrency))
        loaded = proc_memory(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        tail, _ = proc.communicate(timeout=60)
    stats = json.loads(tail.splitlines()[-1])["stats"] if tail.strip() else {}
    fallback = asyncio.run(per_address_bind(10_000))
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "command": " ".join(cmd[1:]),
        "meters": info["meters"],
        "tcp_meters": args.tcp_meters,
        "bus_meters": args.buses * args.meters_per_bus,
        "listen_mode": info.get("tcp", {}).get("listen_mode"),
        "server_start_seconds": info["start_seconds"],
        "announce_seconds_incl_interpreter_and_inventory": round(announce_s, 2),
        "inventory_rows": info["inventory_rows"],
        "rss_idle_mib": idle["VmRSS"],
        "rss_after_load_mib": loaded["VmRSS"],
        "rss_peak_mib": loaded["VmHWM"],
        "load": load,
        "simulator_stats": stats,
        "fallback_per_address_listen": fallback,
        "targets": {"start_seconds": 30, "rss_mib": 1024},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
