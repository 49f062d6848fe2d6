"""Cost of DLMS security: sessions/s with HLS-GMAC + suite 0 versus none, same run.

One process runs a simulator (TCP wrapper, 127.0.0.1) and the collector's ``Session``;
each session associates, reads the clock, the A+ register and four hours of load profile,
and releases. Plain sessions use the public client (no authentication); secured ones the
management client with HLS-GMAC and authenticated encryption (keys from the simulator's
model, counters in memory). Rounds alternate so drift hits both alike. Figures go to
bench/security_sessions.json; nothing is asserted.

    .venv/bin/python -m bench.security_sessions [--sessions 300 --concurrency 16 --rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from collector.profile_reader import read_profile
from collector.session import Session
from collector.transport import TcpWrapperTransport
from protocols.security import MemoryCounterStore, SecurityContext, SecurityKeys
from simulator.meter import SimulatedMeter
from simulator.server import WrapperServer

ROOT = Path(__file__).resolve().parents[1]

SEED = 2026
METERS = 64


async def one(
    port: int,
    meter: SimulatedMeter,
    secured: bool,
    stores: dict[int, MemoryCounterStore],
    start: datetime,
    end: datetime,
) -> None:
    if secured:
        k = meter.keys
        ctx = SecurityContext(
            SecurityKeys(k.encryption_key, k.authentication_key),
            counters=stores.setdefault(meter.meter_id, MemoryCounterStore()),
        )
        session = Session(
            TcpWrapperTransport("127.0.0.1", port, client_wport=1),
            authentication="hls-gmac",
            security=ctx,
            request_timeout=10,
        )
    else:
        session = Session(TcpWrapperTransport("127.0.0.1", port), request_timeout=10)
    async with session as s:
        await s.read_clock()
        await s.read_register("1.0.1.8.0.255")
        await read_profile(s, "1.0.99.1.0.255", start, end)


def _serve(meter: SimulatedMeter) -> Callable[[str, int], SimulatedMeter]:
    return lambda _ip, _port: meter


async def measure(sessions: int, concurrency: int, rounds: int) -> dict[str, Any]:
    meters = {i: SimulatedMeter(i, SEED) for i in range(1, METERS + 1)}
    by_port: dict[int, SimulatedMeter] = {}
    servers = []
    for meter in meters.values():
        server = WrapperServer(_serve(meter), "127.0.0.1", 0)
        await server.start()
        servers.append(server)
        by_port[server.port] = meter
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    start = end - timedelta(hours=4)
    stores: dict[int, MemoryCounterStore] = {}
    ports = list(by_port)
    results: dict[str, list[float]] = {"none": [], "hls-gmac-suite0": []}
    try:
        for _ in range(rounds):
            for secured in (False, True):
                sem = asyncio.Semaphore(concurrency)

                async def run(
                    i: int, secured: bool = secured, sem: asyncio.Semaphore = sem
                ) -> None:
                    async with sem:
                        port = ports[i % len(ports)]
                        await one(port, by_port[port], secured, stores, start, end)

                t0 = time.perf_counter()
                await asyncio.gather(*(run(i) for i in range(sessions)))
                rate = sessions / (time.perf_counter() - t0)
                results["hls-gmac-suite0" if secured else "none"].append(round(rate, 1))
    finally:
        for server in servers:
            await server.close()
    best = {k: max(v) for k, v in results.items()}
    mean = {k: round(sum(v) / len(v), 1) for k, v in results.items()}
    return {
        "what": "sessions/s (associate, clock, A+ register, 4 h load profile, release), "
        "client and simulator in one process over TCP 127.0.0.1",
        "sessions_per_round": sessions,
        "concurrency": concurrency,
        "rounds": results,
        "best": best,
        "mean": mean,
        "ratio_secured_to_plain": round(best["hls-gmac-suite0"] / best["none"], 3),
        "ratio_of_means": round(mean["hls-gmac-suite0"] / mean["none"], 3),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "security_sessions.json")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.sessions, args.concurrency, args.rounds))
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
