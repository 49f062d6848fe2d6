"""The load test behind ``hes bench``: a simulator fleet and the collector as separate processes.

Each scenario starts ``python -m cli simulate`` and (where the collector is measured)
``python -m cli collect`` as child processes and reads their own resource use from
``os.wait4`` when they end: CPU seconds (user + system) and peak RSS (``ru_maxrss``, which
for the collector with ``--workers`` also covers its worker processes). Every wait has a
deadline; a child that outlives it is killed and the scenario says so (``timed_out``).
Nothing here asserts a timing: the figures go to ``results.json`` and ``results.md``.

Scenarios (see ``SCENARIOS``):

1. ``throughput``: N GPRS meters, no emulated latency, 1 % transient faults, one day.
2. ``peers``: one sample of meters read by our Session, dlms-cosem's blocking DlmsClient and
   Gurux's GXDLMSClient (sequential and in a thread pool of our concurrency), same run, with
   no emulated latency (CPU-bound); then (2b, ``latency``) the same clients against a fleet
   with emulated GPRS round trips, all six at once, each in its own process.
3. ``gprs``: GPRS round trips (~1.2 s median, lognormal) on many meters: sessions in flight
   and how close the wall time gets to the latency bound (round trips x RTT / concurrency).
4. ``buses``: RS-485 buses at 9600 baud: wire utilisation per bus.
5. ``storage`` (``bench/storage_bench.py``): ingest through the collector's recorder on
   SQLite and PostgreSQL, bytes on disk per value, ``hes report`` of a large day.
6. ``security``, 7. ``service`` (``bench/service_load.py``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import multiprocessing
import os
import platform
import queue
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from collector.profile_reader import read_profile
from collector.session import Session
from collector.transport import TcpWrapperTransport
from protocols.errors import DlmsError
from simulator import model
from simulator.fleet import LatencySpec, LoopbackRange, meter_number
from storage.database import open_database

#: The checkout (or install) this package sits in: children run there, figures default there.
ROOT = Path(__file__).resolve().parents[1]

SEED = 2026
PROFILE_OBIS = "1.0.99.1.0.255"
A_PLUS = "1.0.1.8.0.255"
CHANNELS = ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.3.8.0.255", "1.0.4.8.0.255")
PERIOD_S = 900
PG_BASE = os.environ.get("HES_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SCENARIOS: tuple[str, ...] = ("throughput", "peers", "gprs", "buses", "storage", "security")
#: Seconds to wait for ``hes simulate`` to announce itself, and for it to stop on SIGTERM.
ANNOUNCE_S = 120.0
STOP_S = 60.0
#: Seconds between SIGTERM and SIGKILL for a child past its deadline.
KILL_GRACE_S = 30.0

PLAN_TOML = """
[collector]
concurrency = {concurrency}

[timeouts]
request_s = {request_s}

[retry]
backoff_base_s = {backoff_base_s}
backoff_max_s = {backoff_max_s}

[[group]]
name = "bench"
back_days = 0
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


@dataclass(slots=True)
class Sizes:
    """Counts of every scenario; ``scaled`` shrinks them for quick runs."""

    meters: int = 200_000
    concurrency: int = 500
    #: collector processes of scenario 1 (one per core pays; see bench/README.md)
    workers: int = 2
    peer_sample: int = 200
    peer_concurrency: int = 50
    #: Scenario 2b (emulated GPRS round trips): meters read by our asyncio client and the
    #: peers' thread pools, sessions at once, and the (smaller) sample of the sequential clients.
    peer_latency_sample: int = 1000
    peer_latency_concurrency: int = 200
    peer_latency_sequential_sample: int = 8
    gprs_meters: int = 20_000
    gprs_concurrency: int = 4000
    buses: int = 4
    meters_per_bus: int = 10
    #: Scenario 5: meters ingested on each backend, and the day ``hes report`` is timed on.
    storage_meters: int = 20_000
    storage_report_meters: int = 200_000
    security_meters: int = 10_000
    collect_timeout_s: float = 1800.0
    #: The plan's request timeout in the fleets with injected faults (a no-answer fault
    #: costs a session this long); the smoke run's is shorter so CI does not wait it out.
    request_s: float = 10.0
    #: The plan's retry backoff (base, cap): the plan's defaults; the smoke run's is short, as
    #: a meter in a simulated outage at the run's hour is retried until its attempts run out.
    backoff_s: tuple[float, float] = (2.0, 300.0)
    #: Scenario 3's request timeout: above the emulated GPRS round trip's 6 s at most.
    gprs_request_s: float = 30.0

    def plan(self, concurrency: int, request_s: float | None = None) -> str:
        """The reading plan of a collection at these sizes."""
        base, cap = self.backoff_s
        return PLAN_TOML.format(
            concurrency=concurrency,
            request_s=self.request_s if request_s is None else request_s,
            backoff_base_s=base,
            backoff_max_s=cap,
        )

    def scaled(self, factor: float) -> Sizes:
        def n(value: int, low: int) -> int:
            return max(low, round(value * factor))

        return Sizes(
            meters=n(self.meters, 10),
            concurrency=self.concurrency,
            workers=self.workers,
            peer_sample=n(self.peer_sample, 4),
            peer_concurrency=min(self.peer_concurrency, n(self.peer_sample, 4)),
            peer_latency_sample=n(self.peer_latency_sample, 4),
            peer_latency_concurrency=min(
                self.peer_latency_concurrency, n(self.peer_latency_sample, 4)
            ),
            peer_latency_sequential_sample=n(self.peer_latency_sequential_sample, 1),
            gprs_meters=n(self.gprs_meters, 10),
            gprs_concurrency=min(self.gprs_concurrency, n(self.gprs_meters, 10)),
            buses=self.buses,
            meters_per_bus=n(self.meters_per_bus, 1),
            storage_meters=n(self.storage_meters, 5),
            storage_report_meters=n(self.storage_report_meters, 10),
            security_meters=n(self.security_meters, 10),
            collect_timeout_s=self.collect_timeout_s,
            request_s=self.request_s,
            backoff_s=self.backoff_s,
            gprs_request_s=self.gprs_request_s,
        )


#: The CI smoke run: every scenario, small enough for well under a minute in all.
SMOKE = Sizes(
    meters=300,
    concurrency=100,
    peer_sample=8,
    peer_concurrency=4,
    peer_latency_sample=20,
    peer_latency_concurrency=10,
    peer_latency_sequential_sample=2,
    gprs_meters=100,
    gprs_concurrency=100,
    buses=2,
    meters_per_bus=1,
    storage_meters=20,
    storage_report_meters=50,
    security_meters=60,
    collect_timeout_s=120.0,
    request_s=4.0,
    backoff_s=(0.25, 1.0),
    gprs_request_s=10.0,
)


# -- child processes --------------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    """What a child process used, from wait4 (its own rusage, not the harness's)."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    exit_code: int
    timed_out: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
        }


class Child:
    """``python -m cli ARGS`` with stdout piped and stderr to a log file in the work dir."""

    def __init__(self, args: Sequence[str], log: Path) -> None:
        self.args = [sys.executable, "-m", "cli", *args]
        self.log = log
        self._err: IO[bytes] = open(log, "wb")  # closed in wait()
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._err, text=True
        )
        self.started = time.perf_counter()
        self.usage: Usage | None = None

    def readline(self, timeout: float) -> str:
        """The next stdout line, or '' when none came within ``timeout`` (or EOF)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else ""

    def wait(self, timeout: float) -> Usage:
        """Reap the child (SIGTERM past ``timeout``, SIGKILL after a grace) and return its own
        resource use."""
        deadline = time.monotonic() + timeout
        timed_out = False
        pid = self.proc.pid
        while True:
            got, status, ru = os.wait4(pid, os.WNOHANG)
            if got:
                break
            if time.monotonic() >= deadline:
                if not timed_out:
                    # SIGTERM first: the collector stops cleanly and still prints its summary
                    timed_out = True
                    os.kill(pid, signal.SIGTERM)
                    deadline = time.monotonic() + KILL_GRACE_S
                    continue
                os.kill(pid, signal.SIGKILL)
                got, status, ru = os.wait4(pid, 0)
                break
            time.sleep(0.05)
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code
        self._err.close()
        self.usage = Usage(
            wall_s=time.perf_counter() - self.started,
            cpu_s=ru.ru_utime + ru.ru_stime,
            peak_rss_mib=ru.ru_maxrss / 1024,
            exit_code=code,
            timed_out=timed_out,
        )
        return self.usage

    def output(self) -> str:
        """Whatever stdout still holds (after :meth:`wait`)."""
        assert self.proc.stdout is not None
        text = self.proc.stdout.read()
        self.proc.stdout.close()
        return text

    def stderr_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.usage is None and self.proc.poll() is None:
            self.proc.kill()


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message names the step and its stderr tail."""


def run_cli(args: Sequence[str], log: Path, timeout: float) -> tuple[str, Usage]:
    """Run one ``hes`` command to completion; BenchError unless it exits 0 in time."""
    child = Child(args, log)
    usage = child.wait(timeout)
    out = child.output()
    if usage.exit_code != 0:
        raise BenchError(
            f"hes {' '.join(args[:2])} exited {usage.exit_code}"
            f"{' (killed after timeout)' if usage.timed_out else ''}: {child.stderr_tail()}"
        )
    return out, usage


class Fleet:
    """``hes simulate`` as a child: started, announced, stopped with SIGTERM."""

    def __init__(self, args: Sequence[str], workdir: Path, name: str) -> None:
        self.inventory = workdir / f"{name}.csv"
        self.child = Child(
            ["simulate", "--seed", str(SEED), "--port", "0", "--inventory",
             str(self.inventory), *args],
            workdir / f"{name}-simulate.log",
        )  # fmt: skip
        line = self.child.readline(ANNOUNCE_S)
        if not line:
            self.child.kill()
            self.child.wait(STOP_S)
            raise BenchError(f"hes simulate did not announce its fleet: {self.child.stderr_tail()}")
        self.info: dict[str, Any] = json.loads(line)
        self.stats: dict[str, Any] = {}

    def stop(self) -> Usage:
        """SIGTERM, reap, and keep the counters it prints on exit."""
        if self.child.usage is not None:
            return self.child.usage
        self.child.proc.send_signal(signal.SIGTERM)
        usage = self.child.wait(STOP_S)
        for line in reversed(self.child.output().splitlines()):
            if line.startswith("{"):
                self.stats = json.loads(line).get("stats", {})
                break
        return usage


@contextmanager
def fleet(args: Sequence[str], workdir: Path, name: str) -> Iterator[Fleet]:
    """A running fleet that is always stopped, whatever happens inside."""
    f = Fleet(args, workdir, name)
    try:
        yield f
    finally:
        f.stop()


# -- figures ----------------------------------------------------------------------------------


def collect_day(now: datetime | None = None) -> date:
    """Yesterday, once today's collection window (00:05) is open on every meter's clock; else
    the day before. A meter whose clock lags (up to ``MAX_DRIFT_PPM`` since the model's drift
    reference: hours by now) has not yet captured yesterday's last intervals, and the run
    would count it incomplete at that hour only."""
    moment = now or datetime.now(UTC)
    lag_s = model.MAX_DRIFT_PPM * 1e-6 * max(0.0, moment.timestamp() - model.DRIFT_REFERENCE)
    return (moment - timedelta(days=1, minutes=6, seconds=lag_s)).date()


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _rate(count: float, seconds: float) -> float | None:
    return round(count / seconds, 2) if seconds > 0 else None


@dataclass(slots=True)
class AttemptRow:
    meter_id: str
    seconds: float
    round_trips: int
    outcome: str
    link_id: str
    started: datetime
    finished: datetime
    wire_bytes: int


def read_attempts(db_path: Path) -> list[AttemptRow]:
    """Every read attempt of the run of an inventory meter, with its meter's link, from the
    collector's database."""
    db = open_database(db_path)
    try:
        links = {m.meter_id: m.link_id for m in db.meters()}
        attempts = db.attempts()
    finally:
        db.close()
    out: list[AttemptRow] = []
    for a in attempts:
        if a.meter_id not in links:
            continue
        if a.finished is None:
            raise BenchError(f"the attempt of {a.meter_id} started {a.started} has no end")
        out.append(
            AttemptRow(a.meter_id, (a.finished - a.started).total_seconds(), a.round_trips,
                       a.outcome, links[a.meter_id], a.started, a.finished, a.bytes_tx + a.bytes_rx)
        )  # fmt: skip
    return out


def session_figures(attempts: Sequence[AttemptRow]) -> dict[str, Any]:
    """p50/p99 session time and round trips per session (all attempts, and ok ones)."""
    times = [a.seconds for a in attempts]
    rts = [a.round_trips for a in attempts if a.outcome == "ok"]
    return {
        "attempts": len(attempts),
        "session_s_p50": _r(percentile(times, 50)),
        "session_s_p99": _r(percentile(times, 99)),
        "round_trips_per_session_mean": _r(statistics.fmean(rts) if rts else None, 2),
        "round_trips_per_session_p50": percentile(rts, 50),
        "round_trips_per_session_max": max(rts) if rts else None,
        **completion_figures(attempts),
    }


def completion_figures(attempts: Sequence[AttemptRow]) -> dict[str, Any]:
    """Seconds from the first session's start until 99 % / 99.9 % / all of the meters that
    were read had their first good session: the bulk of a run, apart from its retry tail."""
    if not attempts:
        return {}
    t0 = min(a.started for a in attempts)
    first_ok: dict[str, datetime] = {}
    for a in attempts:
        if a.outcome == "ok" and (a.meter_id not in first_ok or a.finished < first_ok[a.meter_id]):
            first_ok[a.meter_id] = a.finished
    done = sorted((f - t0).total_seconds() for f in first_ok.values())
    if not done:
        return {}

    def at(q: float) -> float:
        return round(done[max(0, math.ceil(q * len(done)) - 1)], 2)

    return {"s_to_99pct_read": at(0.99), "s_to_999pct_read": at(0.999), "s_to_all_read": at(1.0)}


# -- collector runs ---------------------------------------------------------------------------


@dataclass(slots=True)
class CollectRun:
    """One ``hes meters import`` + ``hes collect`` + ``hes report`` against a fleet."""

    summary: dict[str, Any]
    report: dict[str, Any]
    usage: Usage
    import_s: float
    attempts: list[AttemptRow] = field(default_factory=list)


def run_collector(
    fleet_: Fleet,
    workdir: Path,
    name: str,
    *,
    concurrency: int,
    workers: int,
    timeout: float,
    request_s: float = 10.0,
    keys: Path | None = None,
    backoff_s: tuple[float, float] = (2.0, 300.0),
) -> CollectRun:
    day = collect_day()
    db = workdir / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    plan = workdir / f"{name}-plan.toml"
    sizes = Sizes(request_s=request_s, backoff_s=backoff_s)
    plan.write_text(sizes.plan(concurrency))
    _, imp = run_cli(
        ["meters", "import", str(fleet_.inventory), "--db", str(db)],
        workdir / f"{name}-import.log", 600,
    )  # fmt: skip
    secured: list[str] = []
    if keys is not None:
        # a fresh master key per run, in a file only this run reads
        master = workdir / f"{name}-master.key"
        master.write_text(os.urandom(32).hex() + "\n")
        master.chmod(0o600)
        secured = ["--master-key-file", str(master)]
        run_cli(["keys", "import", str(keys), "--db", str(db), *secured],
                workdir / f"{name}-keys.log", 600)  # fmt: skip
    child = Child(
        ["collect", "--db", str(db), "--config", str(plan), "--day", day.isoformat(),
         "--no-progress", "--seed", "1", "--workers", str(workers), *secured],
        workdir / f"{name}-collect.log",
    )  # fmt: skip
    usage = child.wait(timeout)
    text = child.output().strip().splitlines()
    if not text:
        raise BenchError(
            f"hes collect printed no summary (exit {usage.exit_code}, "
            f"timed out: {usage.timed_out}): {child.stderr_tail()}"
        )
    summary = json.loads(text[-1])
    rep, _ = run_cli(
        ["report", "--date", day.isoformat(), "--db", str(db), "--config", str(plan),
         "--format", "json", "--worst", "5"],
        workdir / f"{name}-report.log", 600,
    )  # fmt: skip
    return CollectRun(summary, json.loads(rep), usage, imp.wall_s, read_attempts(db))


def unpowered_meters(attempts: Sequence[AttemptRow], seed: int = SEED) -> list[str]:
    """Meters never read that were in a simulated power outage at every attempt.

    Ground truth from ``simulator.model`` (the meter's own clock at each attempt's start):
    a meter without power answers nobody, so these count against the collection but not
    against the collector.
    """
    by_meter: dict[str, list[AttemptRow]] = {}
    for a in attempts:
        by_meter.setdefault(a.meter_id, []).append(a)
    out: list[str] = []
    for mid, rows in by_meter.items():
        if any(r.outcome == "ok" for r in rows):
            continue
        spec = model.meter_spec(meter_number(mid), seed)
        if all(
            not model.powered(spec, model.meter_clock(spec, r.started.timestamp())) for r in rows
        ):
            out.append(mid)
    return sorted(out)


def powered_block(
    attempts: Sequence[AttemptRow], meters: int, complete: int | None
) -> dict[str, Any]:
    """Success rate among the meters that had power when the collector called."""
    unpowered = unpowered_meters(attempts)
    reachable = meters - len(unpowered)
    return {
        "unpowered_meters": len(unpowered),
        "unpowered_sample": unpowered[:10],
        "success_rate_powered": (
            None if complete is None or not reachable else round(complete / reachable, 6)
        ),
    }


def _collector_block(run: CollectRun, meters: int) -> dict[str, Any]:
    s = run.summary
    seconds = float(s.get("seconds") or run.usage.wall_s)
    values = int(s.get("intervals_stored", 0))
    return {
        **powered_block(run.attempts, meters, run.report.get("complete_meters")),
        "meters": meters,
        "wall_s": _r(seconds, 2),
        "process_wall_s": _r(run.usage.wall_s, 2),
        "meters_per_s": _rate(meters, seconds),
        "values_stored": values,
        "values_per_s": _rate(values, seconds),
        "success_rate": run.report.get("success_rate"),
        "collector_success_rate": s.get("success_rate"),
        "complete_meters": run.report.get("complete_meters"),
        "intervals_missing": run.report.get("intervals_missing"),
        "attempts": s.get("attempts"),
        "retries": s.get("retries"),
        "errors": s.get("errors"),
        "final_errors": s.get("final_errors"),
        "peak_in_flight": s.get("peak_in_flight"),
        "collector_cpu_s": _r(run.usage.cpu_s, 2),
        "collector_cpu_ms_per_meter": _r(1000 * run.usage.cpu_s / meters, 3),
        "collector_peak_rss_mib": _r(run.usage.peak_rss_mib, 1),
        "collector_timed_out": run.usage.timed_out,
        "import_s": _r(run.import_s, 2),
        **session_figures(run.attempts),
    }


def _simulator_block(usage: Usage, meters: int, stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "simulator_cpu_s": _r(usage.cpu_s, 2),
        "simulator_cpu_ms_per_meter": _r(1000 * usage.cpu_s / meters, 3),
        "simulator_peak_rss_mib": _r(usage.peak_rss_mib, 1),
        "simulator_stats": stats,
    }


# -- scenario 1: throughput -------------------------------------------------------------------


def scenario_throughput(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """N GPRS meters, no latency, 1 % of sessions with a transient fault; one day."""
    n = sizes.meters
    with fleet(["--tcp-meters", str(n), "--baud", "0", "--faults", "0.01"], workdir,
               "throughput") as f:  # fmt: skip
        run = run_collector(
            f, workdir, "throughput", concurrency=sizes.concurrency, workers=sizes.workers,
            timeout=sizes.collect_timeout_s, request_s=sizes.request_s,
            backoff_s=sizes.backoff_s,
        )  # fmt: skip
        sim = f.stop()
    return {
        "description": f"{n} GPRS meters (TCP wrapper), no emulated latency, 1% of sessions "
        "with a transient fault (no answer, corrupt frame, dropped link), one day of 15-min "
        "profile (4 channels) + 4 registers per meter",
        "concurrency": sizes.concurrency,
        "workers": sizes.workers,
        **_collector_block(run, n),
        **_simulator_block(sim, n, f.stats),
    }


# -- scenario 2: peers ------------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    host: str
    port: int


def _day_range(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1) - timedelta(seconds=PERIOD_S)


class _TimedTcpWrapper(TcpWrapperTransport):
    """Our TCP transport, timing each answered request (send to complete reply) into a list:
    the round trip as the client sees it (scenario 2b only)."""

    def __init__(self, host: str, port: int, exchanges: list[float]) -> None:
        super().__init__(host, port)
        self._exchanges = exchanges

    async def request(self, apdu: bytes, timeout: float) -> bytes:
        t0 = time.perf_counter()
        reply = await super().request(apdu, timeout)
        self._exchanges.append(time.perf_counter() - t0)
        return reply


async def _ours(
    targets: Sequence[Target], concurrency: int, day: date, exchanges: list[float] | None = None
) -> list[str]:
    """Our Session, ``concurrency`` sessions at once; ``exchanges`` (if given) collects the
    time of every answered request."""
    start, end = _day_range(day)
    sem = asyncio.Semaphore(concurrency)

    def transport(t: Target) -> TcpWrapperTransport:
        if exchanges is None:
            return TcpWrapperTransport(t.host, t.port)
        return _TimedTcpWrapper(t.host, t.port, exchanges)

    async def one(t: Target) -> str:
        async with sem:
            try:
                async with Session(transport(t), request_timeout=10) as s:
                    await s.read_clock()
                    await s.read_register(A_PLUS)
                    data = await read_profile(s, PROFILE_OBIS, start, end)
            except DlmsError as exc:
                return exc.error_class
            return "ok" if len(data.rows) == 86400 // PERIOD_S else "ok_outage_gap"

    return list(await asyncio.gather(*(one(t) for t in targets)))


@functools.cache
def _timed_dlms_cosem_transport() -> Any:
    """dlms-cosem's TcpTransport, timing each request (send to complete reply) into the
    instance's ``exchanges`` list (scenario 2b only)."""
    from dlms_cosem.io import TcpTransport

    class TimedTcpTransport(TcpTransport):
        exchanges: list[float]

        def send_request(self, bytes_to_send: bytes) -> bytes:
            t0 = time.perf_counter()
            reply: bytes = super().send_request(bytes_to_send)
            self.exchanges.append(time.perf_counter() - t0)
            return reply

    return TimedTcpTransport


def _dlms_cosem_one(t: Target, day: date, exchanges: list[float] | None = None) -> str:
    """dlms-cosem's blocking client: associate, clock, A+ value and scaler, a day of profile."""
    from dlms_cosem import cosem, enumerations, utils
    from dlms_cosem.client import DlmsClient
    from dlms_cosem.cosem.selective_access import CaptureObject, RangeDescriptor
    from dlms_cosem.io import BlockingTcpIO, TcpTransport
    from dlms_cosem.security import NoSecurityAuthentication

    start, end = _day_range(day)
    clock = cosem.CosemAttribute(enumerations.CosemInterface.CLOCK, cosem.Obis(0, 0, 1, 0, 0), 2)
    reg = enumerations.CosemInterface.REGISTER
    a_plus = cosem.Obis(1, 0, 1, 8, 0)
    profile = cosem.CosemAttribute(
        enumerations.CosemInterface.PROFILE_GENERIC, cosem.Obis(1, 0, 99, 1, 0), 2
    )
    access = RangeDescriptor(
        restricting_object=CaptureObject(cosem_attribute=clock, data_index=0),
        from_value=start,
        to_value=end,
    )
    transport = (TcpTransport if exchanges is None else _timed_dlms_cosem_transport())(
        client_logical_address=16,
        server_logical_address=1,
        io=BlockingTcpIO(t.host, t.port, timeout=10),
    )
    if exchanges is not None:
        transport.exchanges = exchanges
    try:
        with DlmsClient(transport, NoSecurityAuthentication()).session() as s:
            utils.parse_as_dlms_data(s.get(clock))
            utils.parse_as_dlms_data(s.get(cosem.CosemAttribute(reg, a_plus, 2)))
            utils.parse_as_dlms_data(s.get(cosem.CosemAttribute(reg, a_plus, 3)))
            rows = utils.parse_as_dlms_data(s.get(profile, access_descriptor=access))
    except Exception as exc:  # a peer's own exception types: counted by name
        return type(exc).__name__
    return "ok" if len(rows) == 86400 // PERIOD_S else "ok_outage_gap"


def _gurux_one(t: Target, day: date, exchanges: list[float] | None = None) -> str:
    """Gurux's GXDLMSClient over a blocking socket (wrapper): the same reads as ours."""
    import gurux_dlms as gurux
    from gurux_dlms.enums import Authentication, InterfaceType
    from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister

    start, end = _day_range(day)
    client = gurux.GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    try:
        with socket.create_connection((t.host, t.port), timeout=10) as sock:

            def exchange(frames: Any) -> Any:
                reply = gurux.GXReplyData()
                for frame in [frames] if isinstance(frames, bytes | bytearray) else frames:
                    pending = bytes(frame)
                    while True:
                        t0 = time.perf_counter()
                        sock.sendall(pending)
                        buffer = gurux.GXByteBuffer()
                        while not client.getData(buffer, reply, gurux.GXReplyData()):
                            chunk = sock.recv(65536)
                            if not chunk:
                                raise ConnectionError("the meter closed the connection")
                            buffer.set(chunk)
                        if exchanges is not None:
                            exchanges.append(time.perf_counter() - t0)
                        if not reply.isMoreData():
                            break
                        pending = bytes(client.receiverReady(reply))
                return reply

            client.parseAareResponse(exchange(client.aarqRequest()).data)
            clock = GXDLMSClock("0.0.1.0.0.255")
            client.updateValue(clock, 2, exchange(client.read(clock, 2)).value)
            register = GXDLMSRegister(A_PLUS)
            for attribute in (3, 2):
                client.updateValue(
                    register, attribute, exchange(client.read(register, attribute)).value
                )
            profile = GXDLMSProfileGeneric(PROFILE_OBIS)
            client.updateValue(profile, 3, exchange(client.read(profile, 3)).value)
            reply = exchange(client.readRowsByRange(profile, start, end))
            client.updateValue(profile, 2, reply.value)
            exchange(client.releaseRequest())
    except Exception as exc:  # a peer's own exception types: counted by name
        return type(exc).__name__
    return "ok" if len(profile.buffer) == 86400 // PERIOD_S else "ok_outage_gap"


def _quiet_dlms_cosem() -> None:
    """dlms-cosem logs every frame at debug level through structlog by default; a user
    measuring throughput would turn that off, so it is filtered to warnings here."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _timed(fn: Callable[[], list[str]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    results = fn()
    seconds = time.perf_counter() - t0
    counts: dict[str, int] = {}
    for r in results:
        counts[r] = counts.get(r, 0) + 1
    return {
        "sessions": len(results),
        # a meter with a power outage that day answers fewer rows: still a good session
        "ok": counts.get("ok", 0) + counts.get("ok_outage_gap", 0),
        "results": counts,
        "seconds": _r(seconds),
        "sessions_per_s": _rate(len(results), seconds),
    }


def _pool(fn: Callable[[Target, date], str], targets: Sequence[Target], day: date,
          threads: int) -> list[str]:  # fmt: skip
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda t: fn(t, day), targets))


def _ratios(clients: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """ours_asyncio's sessions/s over each peer's (None where a figure is missing)."""
    ours = clients.get("ours_asyncio", {}).get("sessions_per_s") or 0.0
    return {
        f"ours_vs_{name}": _r(ours / peer["sessions_per_s"], 2) if peer["sessions_per_s"] else None
        for name, peer in clients.items()
        if not name.startswith("ours")
    }


def _run_client(
    name: str, targets: Sequence[Target], concurrency: int, day: date, exchanges: list[float]
) -> list[str]:
    """One client of scenario 2b over ``targets`` (``concurrency`` 1: one after another)."""
    if name.startswith("ours"):
        return asyncio.run(_ours(targets, concurrency, day, exchanges))
    one = _dlms_cosem_one if name.startswith("dlms_cosem") else _gurux_one
    if concurrency == 1:
        return [one(t, day, exchanges) for t in targets]
    return _pool(functools.partial(one, exchanges=exchanges), targets, day, concurrency)


def _memory_kib(field_name: str) -> int | None:
    """VmRSS / VmHWM of this process from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _latency_client(
    name: str,
    targets: Sequence[Target],
    concurrency: int,
    day: date,
    ready: Any,
    out: Any,
) -> None:
    """A child process of scenario 2b: one client, timed from a common start; its figures
    (or its error) go to ``out`` as ``(name, dict)``. CPU and peak RSS are this process's
    own, so they belong to this client alone."""
    try:
        _quiet_dlms_cosem()
        import dlms_cosem.client  # noqa: F401  (imports outside the timed run)
        import gurux_dlms  # noqa: F401

        exchanges: list[float] = []
        with suppress(OSError):  # reset VmHWM (Linux >= 4.0)
            Path("/proc/self/clear_refs").write_text("5")
        rss0 = _memory_kib("VmRSS")
        ready.wait(ANNOUNCE_S)
        cpu0 = time.process_time()
        figures = _timed(lambda: _run_client(name, targets, concurrency, day, exchanges))
        cpu = time.process_time() - cpu0
        hwm = _memory_kib("VmHWM")
        sessions = figures["sessions"]
        figures.update(
            meters=len(targets),
            concurrency=concurrency,
            round_trips_per_session=_r(len(exchanges) / sessions, 2) if sessions else None,
            exchange_s_mean=_r(statistics.fmean(exchanges)) if exchanges else None,
            exchange_s_p50=_r(percentile(exchanges, 50)),
            exchange_s_p99=_r(percentile(exchanges, 99)),
            cpu_s=_r(cpu),
            cpu_ms_per_session=_r(1000 * cpu / sessions, 2) if sessions else None,
            peak_rss_growth_mib=_r((hwm - rss0) / 1024, 1)
            if hwm is not None and rss0 is not None
            else None,
        )
        out.put((name, figures))
    except BaseException as exc:  # reported, not raised: the parent waits for every client
        out.put((name, {"error": f"{type(exc).__name__}: {exc}"}))


def model_rtt_s(meter: int) -> float:
    """A GPRS meter's mean round trip in the simulator's model: its fleet median times the
    mean of the per-response lognormal jitter (capped at the model's maximum)."""
    spec = LatencySpec("gprs")
    return min(spec.max_s, spec.meter_median(SEED, meter) * math.exp(spec.response_sigma**2 / 2))


def _peers_latency(sizes: Sizes, workdir: Path, day: date) -> dict[str, Any]:
    """Scenario 2b: the same clients against a fleet with emulated GPRS round trips.

    Every client runs in its own process and all six run at the same time (else the
    sequential ones alone would take minutes); the fleet and the clients are waiting on
    round trips, not on the CPU, which each client's mean exchange time against the model
    RTT of its meters shows.
    """
    n = sizes.peer_latency_sample
    c = min(sizes.peer_latency_concurrency, n)
    k = min(sizes.peer_latency_sequential_sample, n)
    # fork: the children start at once with the clients already imported (the harness has
    # no threads of its own here; os.wait4 already makes it Unix-only)
    ctx = multiprocessing.get_context("fork")
    with fleet(["--tcp-meters", str(n), "--baud", "0", "--latency", "gprs"], workdir,
               "peers-latency") as f:  # fmt: skip
        tcp = f.info["tcp"]
        first = meter_number(tcp["first_meter_id"])
        addresses = LoopbackRange(tcp["first_address"], tcp["meters"])
        targets = [Target(a, int(tcp["port"])) for a in addresses]
        sequential = targets[:k]
        plan: dict[str, tuple[list[Target], int]] = {
            "ours_asyncio": (targets, c),
            "ours_sequential": (sequential, 1),
            "dlms_cosem_sequential": (sequential, 1),
            "dlms_cosem_threads": (targets, c),
            "gurux_sequential": (sequential, 1),
            "gurux_threads": (targets, c),
        }
        # ~12 s a session at the median RTT; a generous bound on the slowest client
        limit = 120.0 + 30.0 * max(k, math.ceil(n / c))
        ready = ctx.Barrier(len(plan) + 1)
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_latency_client, args=(name, ts, cc, day, ready, out),
                        name=f"bench-{name}", daemon=True)
            for name, (ts, cc) in plan.items()
        ]  # fmt: skip
        clients: dict[str, dict[str, Any]] = {}
        try:
            for proc in procs:
                proc.start()
            try:
                ready.wait(ANNOUNCE_S)
            except threading.BrokenBarrierError:
                pass  # a client failed before the start: its error comes through ``out``
            t0 = time.perf_counter()
            deadline = time.monotonic() + limit
            while len(clients) < len(plan):
                try:
                    got, figures = out.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    break
                clients[got] = figures
            wall = time.perf_counter() - t0
        finally:
            for proc in procs:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        sim = f.stop()
    missing = [name for name in plan if name not in clients]
    if missing:
        raise BenchError(f"scenario 2b: {', '.join(missing)} did not finish within {limit:.0f} s")
    failed = {name: v["error"] for name, v in clients.items() if "error" in v}
    if failed:
        raise BenchError(f"scenario 2b: client(s) failed: {failed}")
    clients = {name: clients[name] for name in plan}  # in plan order
    tcp_stats = f.stats.get("tcp", {})
    return {
        "description": f"the same clients and reads against {n} GPRS meters with emulated "
        "round trips (per-meter median lognormal around 1.2 s, per-response jitter); our "
        f"asyncio client and the thread pools read all {n} meters, {c} sessions at once, the "
        f"sequential clients the first {k}. All six clients run at the same time, each in its "
        "own process (its CPU and peak RSS are its own); they wait on round trips, not on the "
        "CPU (compare each exchange_s_mean with the model RTT of its meters). Against a thread "
        "pool of the same concurrency the ratio is expected near 1 under latency (threads wait "
        "as well as coroutines, and sessions/s follows round trips per session); what asyncio "
        "can change there is CPU and memory per session (cpu_ms_per_session, "
        "peak_rss_growth_mib) and scaling to thousands of sessions in flight (scenario 3), not "
        "sessions/s at equal concurrency",
        "latency": "gprs",
        "sample": n,
        "concurrency": c,
        "sequential_sample": k,
        "rtt_model_mean_s": {
            "sample": _r(statistics.fmean(model_rtt_s(first + i) for i in range(n))),
            "sequential_sample": _r(statistics.fmean(model_rtt_s(first + i) for i in range(k))),
        },
        "clients": clients,
        "ratios": _ratios(clients),
        "wall_s": _r(wall, 2),
        "simulator_peak_sessions_in_flight": tcp_stats.get("peak_sessions_in_flight"),
        "simulator_cpu_s": _r(sim.cpu_s, 2),
    }


def scenario_peers(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Our Session against dlms-cosem and Gurux on one sample of one simulator, same run;
    then (2b) the same clients against a fleet with emulated GPRS round trips."""
    n, c = sizes.peer_sample, sizes.peer_concurrency
    day = collect_day()
    _quiet_dlms_cosem()
    with fleet(["--tcp-meters", str(n), "--baud", "0"], workdir, "peers") as f:
        tcp = f.info["tcp"]
        addresses = LoopbackRange(tcp["first_address"], tcp["meters"])
        targets = [Target(a, int(tcp["port"])) for a in addresses]
        # one untimed session each first: imports, first connections
        asyncio.run(_ours(targets[:1], 1, day))
        _dlms_cosem_one(targets[0], day)
        _gurux_one(targets[0], day)
        clients: dict[str, dict[str, Any]] = {
            "ours_asyncio": _timed(lambda: asyncio.run(_ours(targets, c, day))),
            "ours_sequential": _timed(lambda: asyncio.run(_ours(targets, 1, day))),
            "dlms_cosem_sequential": _timed(lambda: [_dlms_cosem_one(t, day) for t in targets]),
            "dlms_cosem_threads": _timed(lambda: _pool(_dlms_cosem_one, targets, day, c)),
            "gurux_sequential": _timed(lambda: [_gurux_one(t, day) for t in targets]),
            "gurux_threads": _timed(lambda: _pool(_gurux_one, targets, day, c)),
        }
        sim = f.stop()
    try:
        latency = _peers_latency(sizes, workdir, day)
    except BenchError as exc:  # the no-latency figures above still stand
        latency = {"error": str(exc)}
    return {
        "description": f"{n} GPRS meters of one simulator, each client reads clock, A+ "
        "(value, scaler_unit) and one day of load profile by range per session; thread pools "
        f"and our asyncio client run {c} sessions at once",
        "sample": n,
        "concurrency": c,
        "clients": clients,
        "ratios": _ratios(clients),
        "simulator_cpu_s": _r(sim.cpu_s, 2),
        "latency": latency,
    }


# -- scenario 3: GPRS latency -----------------------------------------------------------------


def latency_bound_s(attempts: Sequence[AttemptRow], concurrency: int) -> float:
    """Wall time no scheduler can beat: sum over sessions of round trips x the meter's mean
    RTT (:func:`model_rtt_s`), spread over ``concurrency`` sessions at once."""
    total = sum(a.round_trips * model_rtt_s(meter_number(a.meter_id)) for a in attempts)
    return total / concurrency


def scenario_gprs(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Emulated GPRS round trips: sessions in flight, wall time, the latency bound."""
    n, c = sizes.gprs_meters, sizes.gprs_concurrency
    with fleet(["--tcp-meters", str(n), "--baud", "0", "--latency", "gprs"], workdir,
               "gprs") as f:  # fmt: skip
        run = run_collector(
            f, workdir, "gprs", concurrency=c, workers=1,
            timeout=sizes.collect_timeout_s, request_s=sizes.gprs_request_s,
            backoff_s=sizes.backoff_s,
        )  # fmt: skip
        sim = f.stop()
    block = _collector_block(run, n)
    bound = latency_bound_s(run.attempts, c)
    tcp_stats = f.stats.get("tcp", {})
    return {
        "description": f"{n} GPRS meters with emulated round trips (median 1.2 s per meter, "
        f"lognormal over the fleet and per response), collector concurrency {c}",
        "concurrency": c,
        "simulator_peak_sessions_in_flight": tcp_stats.get("peak_sessions_in_flight"),
        "latency_bound_s": _r(bound, 2),
        "bound_over_wall": _r(bound / block["wall_s"], 3) if block["wall_s"] else None,
        "bound_over_99pct": (
            _r(bound / block["s_to_99pct_read"], 3) if block.get("s_to_99pct_read") else None
        ),
        **block,
        **_simulator_block(sim, n, f.stats),
    }


# -- scenario 4: RS-485 buses -----------------------------------------------------------------


def scenario_buses(sizes: Sizes, workdir: Path, baud: int = 9600) -> dict[str, Any]:
    """Buses at 9600 baud: bytes on the wire x 10 bits / baud / elapsed, per bus."""
    b, m = sizes.buses, sizes.meters_per_bus
    with fleet(["--buses", str(b), "--meters-per-bus", str(m), "--baud", str(baud)], workdir,
               "buses") as f:  # fmt: skip
        run = run_collector(
            f, workdir, "buses", concurrency=max(b, 1), workers=1,
            timeout=sizes.collect_timeout_s, backoff_s=sizes.backoff_s,
        )  # fmt: skip
        sim = f.stop()
    block = _collector_block(run, b * m)
    per_bus: dict[str, dict[str, Any]] = {}
    by_link: dict[str, list[AttemptRow]] = {}
    for a in run.attempts:
        by_link.setdefault(a.link_id, []).append(a)
    for link, rows in sorted(by_link.items()):
        first = min(r.started for r in rows)
        last = max(r.finished for r in rows)
        elapsed = (last - first).total_seconds()
        nbytes = sum(r.wire_bytes for r in rows)
        per_bus[link] = {
            "sessions": len(rows),
            "wire_bytes": nbytes,
            "elapsed_s": _r(elapsed, 2),
            "utilisation": _r(nbytes * 10 / baud / elapsed, 4) if elapsed > 0 else None,
        }
    utils = [v["utilisation"] for v in per_bus.values() if v["utilisation"] is not None]
    bus_stats = f.stats.get("buses", {})
    wall = block["wall_s"] or 0.0
    sim_bytes = int(bus_stats.get("bytes_rx", 0)) + int(bus_stats.get("bytes_tx", 0))
    return {
        "description": f"{b} RS-485 buses x {m} meters, HDLC at {baud} baud (8N1: 10 bits a "
        "byte), one session at a time per bus",
        "baud": baud,
        "buses": b,
        "meters_per_bus": m,
        "per_bus": per_bus,
        "utilisation_min": min(utils) if utils else None,
        "utilisation_mean": _r(statistics.fmean(utils), 4) if utils else None,
        "utilisation_whole_run": _r(sim_bytes * 10 / baud / wall / b, 4) if wall and b else None,
        **block,
        **_simulator_block(sim, b * m, f.stats),
    }


# -- the whole run ----------------------------------------------------------------------------


def scenario_security(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """The cost of DLMS security: the same fleet plain, then every meter LLS, then every
    meter HLS-GMAC + suite 0.

    Plain meters are read by the public client without security; LLS ones by the management
    client with each meter's password, from the key store (the simulator's key file
    imported); secured ones by the management client with HLS-GMAC authentication and every
    APDU authenticated and encrypted (AES-GCM-128), invocation counters reserved in the
    database.
    """
    n = sizes.security_meters
    runs: dict[str, dict[str, Any]] = {}
    shares: tuple[tuple[str, list[str]], ...] = (
        ("plain", []),
        ("lls", ["--lls-share", "1"]),
        ("secured", ["--secure-share", "1"]),
    )
    for name, extra in shares:
        keys = workdir / f"security-{name}-keys.csv"
        args = ["--tcp-meters", str(n), "--baud", "0", *extra]
        if extra:
            args += ["--keys", str(keys)]
        with fleet(args, workdir, f"security-{name}") as f:
            run = run_collector(
                f, workdir, f"security-{name}", concurrency=sizes.concurrency,
                workers=sizes.workers, timeout=sizes.collect_timeout_s,
                keys=keys if extra else None, backoff_s=sizes.backoff_s,
            )  # fmt: skip
            sim = f.stop()
        runs[name] = {
            "secured_meters": f.info.get("secured_meters"),
            "lls_meters": f.info.get("lls_meters"),
            **_collector_block(run, n),
            **_simulator_block(sim, n, f.stats),
        }
    plain, sec = runs["plain"], runs["secured"]

    def ratio(key: str, run: dict[str, Any] = sec) -> float | None:
        a, b = run.get(key), plain.get(key)
        return _r(a / b, 3) if a and b else None

    t_plain, t_sec = plain.get("s_to_99pct_read"), sec.get("s_to_99pct_read")
    return {
        # the bulk's rate: a retry tail (a meter without power) would swamp meters/s
        "secured_over_plain_rate_to_99pct": _r(t_plain / t_sec, 3) if t_plain and t_sec else None,
        "description": f"{n} GPRS meters, no latency, no faults: once plain (public client, "
        "no security), once every meter LLS (management client, passwords from the key "
        "store), once every meter HLS-GMAC + suite 0 (management client, AES-GCM-128 "
        "authenticated encryption of every APDU)",
        "meters": n,
        "runs": runs,
        "secured_over_plain_meters_per_s": ratio("meters_per_s"),
        "secured_over_plain_collector_cpu_per_meter": ratio("collector_cpu_ms_per_meter"),
        "secured_over_plain_simulator_cpu_per_meter": ratio("simulator_cpu_ms_per_meter"),
        "lls_over_plain_meters_per_s": ratio("meters_per_s", runs["lls"]),
        "lls_over_plain_collector_cpu_per_meter": ratio("collector_cpu_ms_per_meter", runs["lls"]),
    }


RUNNERS: dict[str, Callable[[Sizes, Path], dict[str, Any]]] = {
    "throughput": scenario_throughput,
    "peers": scenario_peers,
    "gprs": scenario_gprs,
    "buses": scenario_buses,
    "security": scenario_security,
}


#: Markdown sections of scenarios registered from their own modules (:func:`register`).
EXTRA_MARKDOWN: dict[str, Callable[[dict[str, Any]], list[str]]] = {}
#: Their rows of the targets table: (target, asked, measured, met/missed).
TargetRows = list[tuple[str, str, str, str]]
EXTRA_TARGETS: list[Callable[[dict[str, Any]], TargetRows]] = []


def register(
    name: str,
    runner: Callable[[Sizes, Path], dict[str, Any]],
    section: Callable[[dict[str, Any]], list[str]],
    target_rows: Callable[[dict[str, Any]], TargetRows] | None = None,
) -> None:
    """A scenario kept in a module of its own (``bench.service_load``, ``bench.storage_bench``):
    its runner, its markdown section and its targets; the module imports this one, never
    the other way round."""
    global SCENARIOS
    RUNNERS[name] = runner
    EXTRA_MARKDOWN[name] = section
    if target_rows is not None:
        EXTRA_TARGETS.append(target_rows)
    if name not in SCENARIOS:
        SCENARIOS = (*SCENARIOS, name)


def run_bench(
    scenarios: Sequence[str],
    sizes: Sizes,
    workdir: Path,
    *,
    previous: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the scenarios in order; each one's figures (or its error) land in the result.

    ``previous`` (an earlier results.json) keeps the scenarios not run this time, so the
    committed file can be refreshed one scenario at a time.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = dict((previous or {}).get("scenarios", {}))
    for name in scenarios:
        log(f"bench: {name} ...")
        t0 = time.perf_counter()
        try:
            figures = RUNNERS[name](sizes, workdir)
        except BenchError as exc:
            figures = {"error": str(exc)}
        figures["scenario_seconds"] = _r(time.perf_counter() - t0, 1)
        figures["when"] = datetime.now(UTC).isoformat(timespec="seconds")
        results[name] = figures
        log(f"bench: {name} done in {figures['scenario_seconds']} s")
    return {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "sizes": asdict(sizes),
        "scenarios": results,
    }


# -- markdown ---------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pct(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f} %"


def _markdown_peers_latency(lat: dict[str, Any] | None) -> list[str]:
    """Section 2b: the peers under emulated GPRS round trips (nothing for older results)."""
    if not lat:
        return []
    title = "## 2b. Peers with emulated GPRS latency"
    if "error" in lat:
        return [f"{title}: failed", "", f"    {lat['error'][:500]}", ""]
    rtt = lat.get("rtt_model_mean_s", {})
    lines = [
        f"{title}: {lat['sample']} meters, concurrency {lat['concurrency']}, "
        f"sequential clients on {lat['sequential_sample']}",
        "",
        "| client | meters | at once | sessions/s | ok | round trips/session | mean exchange "
        "| CPU ms/session | peak RSS growth | ours (asyncio) is |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in lat["clients"].items():
        ratio = lat["ratios"].get(f"ours_vs_{name}")
        lines.append(
            f"| {name} | {c['meters']} | {c['concurrency']} | {_fmt(c['sessions_per_s'])} | "
            f"{c['ok']}/{c['sessions']} | {_fmt(c['round_trips_per_session'], 1)} | "
            f"{_fmt(c['exchange_s_mean'], 3)} s | {_fmt(c['cpu_ms_per_session'])} | "
            f"{_fmt(c['peak_rss_growth_mib'], 1)} MiB | "
            f"{'-' if ratio is None else f'{ratio:.1f}x'} |"
        )
    lines += [
        "",
        f"Model mean RTT (simulator, `--latency gprs`): {_fmt(rtt.get('sample'), 3)} s over the "
        f"{lat['sample']} meters, {_fmt(rtt.get('sequential_sample'), 3)} s over the "
        f'{lat["sequential_sample"]} read sequentially; "mean exchange" is the measured '
        "request-to-reply time as each client sees it. All six clients ran at the same time, "
        "each in its own process (CPU and peak RSS growth are that process's own). Against a "
        "thread pool of the same concurrency the ratio is expected near 1 under latency: "
        "threads wait as well as coroutines, and sessions/s then follows round trips per "
        "session. What asyncio can change there is CPU and memory per session (the columns "
        "above) and scaling to thousands of sessions in flight (section 3), not sessions/s at "
        "equal concurrency.",
        "",
    ]
    return lines


def _registered_sections(s: dict[str, Any], done: set[str], before: str | None = None) -> list[str]:
    """Sections of registered scenarios not yet written, in ``SCENARIOS`` order; with
    ``before``, only those that come before that scenario."""
    limit = SCENARIOS.index(before) if before in SCENARIOS else len(SCENARIOS)
    lines: list[str] = []
    for name in SCENARIOS[:limit]:
        if name in EXTRA_MARKDOWN and name not in done:
            done.add(name)
            lines += EXTRA_MARKDOWN[name](s)
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The figures as markdown tables (bench/results.md, pasted into the README)."""
    s = result["scenarios"]
    m = result["machine"]
    lines = [
        "# hes benchmark results",
        "",
        f"Machine: {m['cpus']} CPUs, Python {m['python']}, {m['platform']}. "
        "Produced by `make bench` (`hes bench`); figures are measured, not asserted.",
        "",
    ]
    lines += targets_markdown(result)
    t = s.get("throughput")
    if t and "error" not in t:
        lines += [
            f"## 1. Throughput: {t['meters']:,} GPRS meters, 1 % transient faults",
            "",
            "| figure | value |",
            "|---|---|",
            f"| wall time (collector run) | {_fmt(t['wall_s'])} s |",
            f"| meters/s | {_fmt(t['meters_per_s'])} |",
            f"| values stored/s | {_fmt(t['values_per_s'], 0)} |",
            f"| success rate (hes report) | {_pct(t['success_rate'])} |",
            f"| success rate among meters with power | {_pct(t.get('success_rate_powered'))} "
            f"({_fmt(t.get('unpowered_meters'))} in a simulated outage at every attempt) |",
            f"| attempts (retries) | {_fmt(t['attempts'])} ({_fmt(t['retries'])}) |",
            f"| 99 % / 99.9 % / all of the read meters done after | "
            f"{_fmt(t.get('s_to_99pct_read'))} / {_fmt(t.get('s_to_999pct_read'))} / "
            f"{_fmt(t.get('s_to_all_read'))} s (the rest: retrying meters without power) |",
            f"| session time p50 / p99 | {_fmt(t['session_s_p50'], 3)} s / "
            f"{_fmt(t['session_s_p99'], 3)} s |",
            f"| round trips per session (mean) | {_fmt(t['round_trips_per_session_mean'])} |",
            f"| collector CPU per meter | {_fmt(t['collector_cpu_ms_per_meter'])} ms |",
            f"| simulator CPU per meter | {_fmt(t['simulator_cpu_ms_per_meter'])} ms |",
            f"| collector peak RSS | {_fmt(t['collector_peak_rss_mib'], 1)} MiB |",
            f"| simulator peak RSS | {_fmt(t['simulator_peak_rss_mib'], 1)} MiB |",
            f"| concurrency / worker processes | {t['concurrency']} / {t['workers']} |",
            "",
        ]
    p = s.get("peers")
    if p and "error" not in p:
        lines += [
            f"## 2. Peers: {p['sample']} meters, same simulator, same run "
            f"(concurrency {p['concurrency']})",
            "",
            "| client | sessions/s | ok | ours (asyncio) is |",
            "|---|---|---|---|",
        ]
        for name, c in p["clients"].items():
            ratio = p["ratios"].get(f"ours_vs_{name}")
            lines.append(
                f"| {name} | {_fmt(c['sessions_per_s'])} | {c['ok']}/{c['sessions']} | "
                f"{'-' if ratio is None else f'{ratio:.1f}x'} |"
            )
        lines.append("")
        lines += _markdown_peers_latency(p.get("latency"))
    g = s.get("gprs")
    if g and "error" not in g:
        lines += [
            f"## 3. GPRS latency: {g['meters']:,} meters, concurrency {g['concurrency']}",
            "",
            "| figure | value |",
            "|---|---|",
            f"| peak sessions in flight (simulator) | "
            f"{_fmt(g['simulator_peak_sessions_in_flight'])} |",
            f"| wall time | {_fmt(g['wall_s'])} s |",
            f"| latency bound (round trips x RTT / concurrency) | {_fmt(g['latency_bound_s'])} s |",
            f"| bound / wall | {_fmt(g['bound_over_wall'], 3)} |",
            f"| 99 % / 99.9 % / all of the read meters done after | "
            f"{_fmt(g.get('s_to_99pct_read'))} / {_fmt(g.get('s_to_999pct_read'))} / "
            f"{_fmt(g.get('s_to_all_read'))} s |",
            f"| bound / time to 99 % | {_fmt(g.get('bound_over_99pct'), 3)} |",
            f"| success rate | {_pct(g['success_rate'])} |",
            f"| session time p50 / p99 | {_fmt(g['session_s_p50'])} s / "
            f"{_fmt(g['session_s_p99'])} s |",
            f"| collector CPU per meter | {_fmt(g['collector_cpu_ms_per_meter'])} ms |",
            "",
        ]
    b = s.get("buses")
    if b and "error" not in b:
        lines += [
            f"## 4. RS-485 buses at {b['baud']} baud: {b['buses']} x {b['meters_per_bus']} meters",
            "",
            "| bus | sessions | bytes on the wire | elapsed | utilisation |",
            "|---|---|---|---|---|",
        ]
        for link, v in b["per_bus"].items():
            lines.append(
                f"| {link} | {v['sessions']} | {_fmt(v['wire_bytes'])} | "
                f"{_fmt(v['elapsed_s'])} s | {_pct(v['utilisation'], 1)} |"
            )
        lines += [
            "",
            f"Mean utilisation {_pct(b['utilisation_mean'], 1)}; success rate "
            f"{_pct(b['success_rate'])}.",
            "",
        ]
    done: set[str] = set()
    lines += _registered_sections(s, done, before="security")  # scenario 5 keeps its place
    sec = s.get("security")
    if sec and "error" not in sec:
        pl, se = sec["runs"]["plain"], sec["runs"]["secured"]
        ll = sec["runs"].get("lls")
        lines += [
            f"## 6. Cost of security: {sec['meters']:,} meters plain, then HLS-GMAC + suite 0",
            "",
            "| figure | plain | secured | secured / plain |",
            "|---|---|---|---|",
            f"| seconds until 99 % of meters read | {_fmt(pl.get('s_to_99pct_read'))} | "
            f"{_fmt(se.get('s_to_99pct_read'))} | "
            f"rate {_fmt(sec.get('secured_over_plain_rate_to_99pct'), 3)} |",
            f"| meters/s (whole run, retry tail included) | {_fmt(pl['meters_per_s'])} | "
            f"{_fmt(se['meters_per_s'])} | {_fmt(sec['secured_over_plain_meters_per_s'], 3)} |",
            f"| collector CPU per meter | {_fmt(pl['collector_cpu_ms_per_meter'])} ms | "
            f"{_fmt(se['collector_cpu_ms_per_meter'])} ms | "
            f"{_fmt(sec['secured_over_plain_collector_cpu_per_meter'], 3)} |",
            f"| simulator CPU per meter | {_fmt(pl['simulator_cpu_ms_per_meter'])} ms | "
            f"{_fmt(se['simulator_cpu_ms_per_meter'])} ms | "
            f"{_fmt(sec['secured_over_plain_simulator_cpu_per_meter'], 3)} |",
            f"| round trips per session | {_fmt(pl['round_trips_per_session_mean'])} | "
            f"{_fmt(se['round_trips_per_session_mean'])} | |",
            f"| success rate | {_pct(pl['success_rate'])} | {_pct(se['success_rate'])} | |",
            "",
        ]
        if ll is not None:  # results from before the LLS run have none
            lines += [
                "| LLS (passwords from the key store) | LLS | LLS / plain |",
                "|---|---|---|",
                f"| meters/s | {_fmt(ll['meters_per_s'])} | "
                f"{_fmt(sec.get('lls_over_plain_meters_per_s'), 3)} |",
                f"| collector CPU per meter | {_fmt(ll['collector_cpu_ms_per_meter'])} ms | "
                f"{_fmt(sec.get('lls_over_plain_collector_cpu_per_meter'), 3)} |",
                f"| success rate | {_pct(ll['success_rate'])} | |",
                "",
            ]
    lines += _registered_sections(s, done)
    for name, figures in s.items():
        if "error" in figures:
            lines += [f"## {name}: failed", "", f"    {figures['error'][:500]}", ""]
    return "\n".join(lines)


def _ok(value: Any, good: bool) -> str:
    return "-" if value is None else ("met" if good else "missed")


def targets(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, asked, measured, met/missed) for each target with figures (issue 5's here,
    the registered scenarios' own after them)."""
    s = result["scenarios"]
    out: list[tuple[str, str, str, str]] = []
    t = s.get("throughput") or {}
    if "error" not in t and t:
        rate, wall = t.get("success_rate"), t.get("wall_s")
        n = f"{t['meters']:,} meters"
        out.append(("scenario 1 success rate", ">= 99.99 %", f"{_pct(rate)} ({n})",
                    _ok(rate, rate is not None and rate >= 0.9999)))  # fmt: skip
        powered = t.get("success_rate_powered")
        if powered is not None:
            out.append((
                "scenario 1 success rate, meters with power",
                ">= 99.99 %",
                f"{_pct(powered)} ({t.get('unpowered_meters')} meters in a simulated outage "
                "at every attempt)",
                _ok(powered, powered >= 0.9999),
            ))  # fmt: skip
        out.append(("scenario 1 wall time", "<= 600 s", f"{_fmt(wall)} s ({n})",
                    _ok(wall, wall is not None and wall <= 600)))  # fmt: skip
        rss = t.get("simulator_peak_rss_mib")
        out.append(("simulator peak RSS", "<= 1,024 MiB", f"{_fmt(rss, 1)} MiB ({n})",
                    _ok(rss, rss is not None and rss <= 1024)))  # fmt: skip
    p = s.get("peers") or {}
    lat = p.get("latency") or {}
    if "error" not in p and p:
        for block, label in ((lat, "GPRS latency"), (p, "no latency")):
            ratios = block.get("ratios") or {}
            for peer in ("dlms_cosem_sequential", "gurux_sequential", "dlms_cosem_threads",
                         "gurux_threads"):  # fmt: skip
                r = ratios.get(f"ours_vs_{peer}")
                if r is None:
                    continue
                out.append((f"sessions/s vs {peer} ({label})", ">= 20x", f"{r:.2f}x",
                            _ok(r, r >= 20)))  # fmt: skip
    g = s.get("gprs") or {}
    if "error" not in g and g:
        peak = g.get("simulator_peak_sessions_in_flight")
        out.append(("scenario 3 concurrent sessions", ">= 2,000", _fmt(peak),
                    _ok(peak, peak is not None and peak >= 2000)))  # fmt: skip
    b = s.get("buses") or {}
    if "error" not in b and b:
        u = b.get("utilisation_mean")
        out.append(("RS-485 bus utilisation (mean)", ">= 90 %", _pct(u, 1),
                    _ok(u, u is not None and u >= 0.9)))  # fmt: skip
    for rows in EXTRA_TARGETS:
        out += rows(s)
    return out


def targets_markdown(result: dict[str, Any]) -> list[str]:
    rows = targets(result)
    if not rows:
        return []
    lines = ["## Targets", "", "| target | asked | measured | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return [*lines, ""]


#: The README's performance section holds the latest figures between these markers.
README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


def splice_readme(readme: Path, md: str) -> bool:
    """Put ``md`` (headings one level down) between the README's bench markers."""
    if not readme.exists():
        return False
    body = readme.read_text()
    if README_START not in body or README_END not in body:
        return False
    demoted = "\n".join(
        "#" + line if line.startswith("## ") else line
        for line in md.splitlines()
        if not line.startswith("# ")
    ).strip()
    head, rest = body.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{demoted}\n{README_END}{tail}")
    return True


def write_results(result: dict[str, Any], out: Path) -> Path:
    """results.json at ``out`` and results.md next to it; returns the markdown path.

    When ``out`` is the repository's own bench/results.json, the README's performance
    section is brought up to date too.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = out.with_suffix(".md")
    text_ = markdown(result)
    md.write_text(text_ + "\n")
    if out.resolve() == (ROOT / "bench" / "results.json").resolve():
        splice_readme(ROOT / "README.md", text_)
    return md
