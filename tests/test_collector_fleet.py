"""A small simulator fleet for the collector tests, built from the simulator's own parts.

TCP meters each listen on a port of their own (the WrapperServer picks the meter by port);
RS-485 buses are HdlcBus behind an HdlcTcpServer. Every server runs on a fixed simulator clock,
so what the meters answer, and the ground truth to check it against, never depends on when the
test runs. Faults come from the simulator's own seeded FaultPlan (no answer, corrupt frame, dropped
link per session; meters permanently offline), so a test can predict who fails when.

Also runnable from a thread (:class:`FleetThread`) for tests that run the real CLI in a
subprocess against it. The checks at the bottom run against this module itself.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from simulator import model
from simulator.bus_server import HdlcBus, HdlcTcpServer
from simulator.faults import FaultPlan, SessionFault
from simulator.meter import SimulatedMeter
from simulator.server import WrapperServer
from storage.database import Database
from storage.gaps import day_window

SEED = 20260311
DAY = date(2026, 3, 10)
#: Simulator time: 03:00 UTC the morning after DAY, inside the collection window.
NOW = datetime(2026, 3, 11, 3, 0, tzinfo=UTC).timestamp()
CHANNELS = ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.3.8.0.255", "1.0.4.8.0.255")
REGISTERS = CHANNELS
CSV_HEADER = (
    "meter_id,transport,host,port,physical_address,client_sap,authentication,password_ref,"
    "link_id,area,station"
)

TEST_PLAN = """
[collector]
concurrency = {concurrency}

[retry]
max_attempts = 4
backoff_base_s = 0.05
backoff_max_s = 0.2

[timeouts]
request_s = 0.5
session_s = 30.0
hdlc_frame_s = 0.15
hdlc_retries = 1

[[group]]
name = "all"
back_days = {back_days}
registers = ["1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.3.8.0.255", "1.0.4.8.0.255"]

[group.profile]
obis = "1.0.99.1.0.255"
period_s = 900
status_column = 1

[group.profile.channels]
2 = "1.0.1.8.0.255"
3 = "1.0.2.8.0.255"
4 = "1.0.3.8.0.255"
5 = "1.0.4.8.0.255"
"""


def plan_text(concurrency: int = 50, back_days: int = 0) -> str:
    return TEST_PLAN.format(concurrency=concurrency, back_days=back_days)


def online_meter_ids(count: int, start: int, seed: int = SEED, now: float = NOW) -> list[int]:
    """The first ``count`` simulator ids from ``start`` that answer at ``now``."""
    out: list[int] = []
    n = start
    while len(out) < count:
        if SimulatedMeter(n, seed).online(now):
            out.append(n)
        n += 1
    return out


def sessions_needed(plan: FaultPlan, sim_id: int) -> int:
    """Sessions a meter needs under ``plan`` until one goes through (slow ones do)."""
    n = 0
    while plan.session_fault(sim_id, n) not in (SessionFault.NONE, SessionFault.SLOW):
        n += 1
    return n + 1


@dataclass
class Fleet:
    """TCP meters and HDLC buses on 127.0.0.1, with their inventory rows."""

    tcp_ids: list[int]
    buses: list[list[int]]
    seed: int = SEED
    now: float = NOW
    faults: FaultPlan | None = None
    lls: dict[int, str] = field(default_factory=dict)  # simulator id -> password ref
    latency: float = 0.0
    wrapper_servers: dict[int, WrapperServer] = field(default_factory=dict)
    bus_servers: list[HdlcTcpServer] = field(default_factory=list)

    @staticmethod
    def name(sim_id: int) -> str:
        return f"M{sim_id:06d}"

    @staticmethod
    def sim_id(meter_id: str) -> int:
        return int(meter_id[1:])

    def meter(self, sim_id: int) -> SimulatedMeter:
        return SimulatedMeter(sim_id, self.seed)

    async def start(self) -> None:
        clock = self.clock
        for sim_id in self.tcp_ids:
            meter = self.meter(sim_id)

            def resolve(_ip: str, _port: int, m: SimulatedMeter = meter) -> SimulatedMeter:
                return m

            server = WrapperServer(
                resolve,
                "127.0.0.1",
                0,
                clock=clock,
                latency=(lambda _m: self.latency) if self.latency else None,
                faults=self.faults,
            )
            await server.start()
            self.wrapper_servers[sim_id] = server
        for bus_ids in self.buses:
            meters = {17 + i: self.meter(sim_id) for i, sim_id in enumerate(bus_ids)}
            bus = HdlcBus(meters, faults=self.faults)
            terminal = HdlcTcpServer(bus, "127.0.0.1", 0, clock=clock)
            await terminal.start()
            self.bus_servers.append(terminal)

    def clock(self) -> float:
        return self.now

    async def close(self) -> None:
        for server in self.wrapper_servers.values():
            await server.close()
        for bus in self.bus_servers:
            await bus.close()

    def csv_rows(self) -> list[str]:
        rows = []
        for sim_id in self.tcp_ids:
            port = self.wrapper_servers[sim_id].port
            if sim_id in self.lls:
                auth = f"1,lls,{self.lls[sim_id]}"
            else:
                auth = "16,none,"
            rows.append(f"{self.name(sim_id)},tcp,127.0.0.1,{port},,{auth},,north,S1")
        for b, (bus_ids, server) in enumerate(zip(self.buses, self.bus_servers, strict=True)):
            for i, sim_id in enumerate(bus_ids):
                rows.append(
                    f"{self.name(sim_id)},hdlc-tcp,127.0.0.1,{server.port},{17 + i},16,none,,"
                    f"bus-{b},south,S2"
                )
        return rows

    def write_csv(self, path: Path) -> Path:
        path.write_text("\n".join([CSV_HEADER, *self.csv_rows()]) + "\n", encoding="utf-8")
        return path

    @property
    def all_ids(self) -> list[int]:
        return [*self.tcp_ids, *(s for bus in self.buses for s in bus)]


def truth_rows(sim_id: int, day: date, seed: int = SEED) -> list[model.LoadProfileRow]:
    start, end = day_window(day)
    return model.ground_truth(sim_id, seed, start.timestamp(), end.timestamp()).load_profile


def stored_vs_truth(db: Database, sim_id: int, day: date, seed: int = SEED) -> list[str]:
    """Every difference between stored interval reads and the ground truth (empty: equal)."""
    start, end = day_window(day)
    truth = truth_rows(sim_id, day, seed)
    problems: list[str] = []
    for k, channel in enumerate(CHANNELS):
        want = [(datetime.fromtimestamp(r[0], UTC), r[2 + k], r[1]) for r in truth]
        got = [
            (r.ts, r.value, r.status)
            for r in db.interval_reads(Fleet.name(sim_id), channel, start, end)
        ]
        if got != want:
            missing = sorted(set(want) - set(got))[:3]
            extra = sorted(set(got) - set(want))[:3]
            problems.append(
                f"{Fleet.name(sim_id)} {channel}: {len(got)} stored, {len(want)} true; "
                f"missing {missing}, unexpected {extra}"
            )
    return problems


class Startable(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


F = TypeVar("F", bound=Startable)


class FleetThread(Generic[F]):
    """A fleet (this module's, or ``simulator.fleet.Fleet``) serving from its own event loop
    on a background thread."""

    def __init__(self, fleet: F) -> None:
        self.fleet = fleet
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> F:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fleet.start(), self.loop).result(timeout=30)
        return self.fleet

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fleet.close(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def test_fleet_meters_answer_at_the_fixed_clock_and_hold_the_whole_day() -> None:
    """The fixture's premise: chosen meters are online at NOW and past DAY on their clock."""
    ids = online_meter_ids(40, 1000)
    assert len(set(ids)) == 40
    day_end = day_window(DAY)[1].timestamp()
    for sim_id in ids:
        meter = SimulatedMeter(sim_id, SEED)
        assert meter.online(NOW)
        assert meter.meter_time(NOW) > day_end + timedelta(minutes=30).total_seconds()
    assert any(
        model.outage(model.meter_spec(s, SEED), (int(day_end) - model.EPOCH) // 86400 - 1)
        for s in online_meter_ids(400, 1000)
    ), "no outage day among 400 meters"


def outage_meter_ids(count: int, start: int, day: date = DAY, seed: int = SEED) -> list[int]:
    """Meters online at NOW with a power outage (a gap in the profile) on ``day``."""
    index = (int(day_window(day)[0].timestamp()) - model.EPOCH) // model.DAY
    out: list[int] = []
    sim_id = start
    while len(out) < count:
        if model.outage(model.meter_spec(sim_id, seed), index) is not None and SimulatedMeter(
            sim_id, seed
        ).online(NOW):
            out.append(sim_id)
        sim_id += 1
    return out
