"""Issue 15's broker comparison: NATS JetStream, RabbitMQ and a PostgreSQL table, one workload.

For each candidate: a producer (this process) enqueues N link jobs (JSON: the link, the meter
ids of the batch, the day; GPRS meters 50 to a job, an RS-485 bus one job per bus) while K
consumer processes (``bench/brokers/worker.py``) claim them, "work" a fixed few ms on each
and ack; K = 1 and 3. Figures: enqueue jobs/s, end-to-end jobs/s (first enqueue to last
completion), CPU µs per job in the producer and in the consumers (``time.process_time`` of
each process). Then the dead node: the same flow with K consumers, one SIGKILLed while it
holds unacked jobs (after 30 % of the jobs are done); seconds until another consumer claims
them, jobs lost (none may be) and done twice; and the hung node: the same, one consumer
frozen (SIGSTOP: its sockets stay open) and resumed once the others are done. Every
stream/queue/schema carries a fresh run id and is deleted afterwards. Nothing is asserted;
figures go to ``--out``.

    .venv/bin/python -m bench.broker_bench --jobs 3000 --out bench/broker_bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.brokers.common import Broker, BrokerUnavailable, RunSpec, read_journal
from bench.brokers.tally import tally
from bench.brokers.worker import BROKERS

ROOT = Path(__file__).resolve().parents[1]
#: Meters in one GPRS job (each meter is its own link; a node opens them concurrently).
GPRS_BATCH = 50
#: Meters on one RS-485 bus (one job per bus: the bus sees one session at a time).
BUS_METERS = 16
#: Every BUS_EVERY-th job is a bus, the rest GPRS batches.
BUS_EVERY = 4
#: The kill comes once this share of the jobs is done (and the victim holds some).
KILL_AT = 0.3
#: How long a frozen consumer runs again before the end of a hang run.
RESUMED_S = 1.0


class BenchFailure(RuntimeError):
    """A run could not be measured (a consumer failed to start, a deadline passed)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """What every run of one bench invocation shares."""

    jobs: int
    consumers: tuple[int, ...]
    kill_consumers: int
    brokers: tuple[str, ...]
    lease_s: float
    prefetch: int
    work_ms: float
    #: Longest a run may take from its first enqueue to its last completion.
    run_timeout_s: float
    #: Flow runs per (broker, K); the one of median end-to-end rate is reported.
    repeat: int = 1
    #: Also the node-hangs run (frozen, then resumed) beside the node-dies one.
    hang: bool = True


def workload(jobs: int, day: date) -> list[bytes]:
    """N job payloads: GPRS batches of 50 meters, and every 4th job one bus of 16."""
    bodies = []
    meter = 0
    for job in range(jobs):
        if job % BUS_EVERY == BUS_EVERY - 1:
            kind, link, count = "bus", f"bus-{job:07d}", BUS_METERS
        else:
            kind, link, count = "gprs", f"gprs-batch-{job:07d}", GPRS_BATCH
        meters = [f"M{n:08d}" for n in range(meter, meter + count)]
        meter += count
        payload = {"job": job, "kind": kind, "link": link, "meters": meters, "day": str(day)}
        bodies.append(json.dumps(payload, separators=(",", ":")).encode())
    return bodies


class _Tail:
    """The claims and completions of one journal, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.claimed: set[int] = set()
        self.finished: set[int] = set()

    def read(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            parts = line.split()
            if len(parts) >= 3 and parts[0] == b"C":
                self.claimed.add(int(parts[1]))
            elif len(parts) == 3 and parts[0] == b"D":
                self.finished.add(int(parts[1]))


class _Consumers:
    """K worker processes of one run, their journals, and their end."""

    def __init__(self, spec: RunSpec, count: int, workdir: Path) -> None:
        self.journals = [workdir / f"{spec.broker}-{spec.run_id}-{n}.journal" for n in range(count)]
        self.logs = [path.with_suffix(".log") for path in self.journals]
        self.procs: list[subprocess.Popen[bytes]] = []
        self._tails = [_Tail(path) for path in self.journals]
        for journal, log in zip(self.journals, self.logs, strict=True):
            with open(log, "wb") as err:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.brokers.worker", "--spec", spec.to_json(),
                         "--journal", str(journal)],
                        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                    )
                )  # fmt: skip

    def failure(self, n: int) -> BenchFailure:
        """The error of consumer n, which has exited: its code and the end of its log."""
        return BenchFailure(
            f"consumer {n} exited with {self.procs[n].returncode}: "
            f"{self.logs[n].read_text(errors='replace').strip()[-600:]}"
        )

    async def ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(read_journal(path).ready_at is not None for path in self.journals):
            for n, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    raise self.failure(n)
            if time.monotonic() > deadline:
                raise BenchFailure(f"consumers not ready within {timeout} s")
            await asyncio.sleep(0.02)

    def done_count(self) -> tuple[int, list[int]]:
        """Distinct jobs done over all journals, and each journal's held (claimed - done).

        Reads only what was appended since the last call, so polling stays cheap (the
        consumers share the CPU with this process)."""
        held = []
        for tail in self._tails:
            tail.read()
            held.append(len(tail.claimed - tail.finished))
        return len(set().union(*(tail.finished for tail in self._tails))), held

    async def freeze(self, n: int) -> None:
        """SIGSTOP consumer n and wait until the kernel has it stopped (signals are async)."""
        self.procs[n].send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self.procs[n].pid}/stat")
        for _ in range(1000):
            # The state is the field after the parenthesised command name.
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "T":
                return
            await asyncio.sleep(0.001)
        raise BenchFailure(f"consumer {n} did not stop on SIGSTOP")

    def kill(self, n: int) -> float:
        self.procs[n].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        self.procs[n].wait()
        return killed_at

    async def stop(self, timeout: float = 15.0, may_fail: set[int] | None = None) -> None:
        """SIGTERM (each writes its CPU figure), then SIGKILL whatever is still there.

        BenchFailure if one exits with an error, unless its index is in ``may_fail``. Waits
        without blocking the loop: the bench's own broker connection keeps its heartbeat."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(proc.poll() is None for proc in self.procs):
            if time.monotonic() > deadline:
                for proc in self.procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                raise BenchFailure(f"consumers did not stop on SIGTERM within {timeout} s")
            await asyncio.sleep(0.02)
        for n, proc in enumerate(self.procs):
            if proc.returncode not in (0, -signal.SIGKILL) and n not in (may_fail or set()):
                raise self.failure(n)


async def _open(spec: RunSpec) -> Broker:
    broker = BROKERS[spec.broker](spec)
    await broker.connect()
    return broker


async def _drop(broker: Broker) -> None:
    """Delete the run's queue; over a new connection if the first has died meanwhile (a
    broker that gave up on the bench's connection must not keep the run's queue)."""
    try:
        await broker.delete()
    except Exception:
        again = await _open(broker.spec)
        try:
            await again.delete()
        finally:
            await again.close()
    finally:
        with contextlib.suppress(Exception):
            await broker.close()


def _spec(name: str, settings: Settings) -> RunSpec:
    return RunSpec(
        broker=name,
        run_id=uuid.uuid4().hex[:12],
        lease_s=settings.lease_s,
        prefetch=settings.prefetch,
        work_ms=settings.work_ms,
    )


async def _wait_done(consumers: _Consumers, jobs: int, deadline: float) -> bool:
    while consumers.done_count()[0] < jobs:
        for n, proc in enumerate(consumers.procs):
            if proc.poll() is not None and proc.returncode != -signal.SIGKILL:
                raise consumers.failure(n)
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def measure_flow(name: str, count: int, settings: Settings, workdir: Path) -> dict[str, Any]:
    """K consumers ready and waiting, then N jobs enqueued: dispatch rates and CPU per job."""
    spec = _spec(name, settings)
    bodies = workload(settings.jobs, date(2026, 12, 3))
    broker = await _open(spec)
    consumers: _Consumers | None = None
    try:
        await broker.create()
        consumers = _Consumers(spec, count, workdir)
        await consumers.ready(timeout=60)
        cpu0, t0 = time.process_time(), time.monotonic()
        await broker.enqueue(bodies)
        enqueue_s = time.monotonic() - t0
        producer_cpu_s = time.process_time() - cpu0
        complete = await _wait_done(consumers, settings.jobs, t0 + settings.run_timeout_s)
        await consumers.stop()
        figures = tally([read_journal(p) for p in consumers.journals], settings.jobs, None, None)
    finally:
        if consumers is not None:
            for proc in consumers.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        await _drop(broker)
    last = figures.pop("last_done_t")
    end_to_end_s = (last - t0) if last is not None else None
    jobs = settings.jobs
    cpu = figures.pop("consumer_cpu_s")
    return {
        "broker": name,
        "run_id": spec.run_id,
        "consumers": count,
        "jobs": jobs,
        "complete": complete,
        "enqueue_s": round(enqueue_s, 3),
        "enqueue_jobs_per_s": round(jobs / enqueue_s),
        "end_to_end_s": None if end_to_end_s is None else round(end_to_end_s, 3),
        "end_to_end_jobs_per_s": round(jobs / end_to_end_s) if end_to_end_s else None,
        "producer_cpu_us_per_job": round(producer_cpu_s / jobs * 1e6, 1),
        "consumer_cpu_us_per_job": None if cpu is None else round(cpu / jobs * 1e6, 1),
        **figures,
    }


async def measure_loss(name: str, hang: bool, settings: Settings, workdir: Path) -> dict[str, Any]:
    """K consumers at work on the jobs as they come; consumer 0 lost holding unacked ones.

    ``hang`` False: SIGKILLed (its sockets close). True: frozen (SIGSTOP, its sockets stay
    open) until the others have done every job, then resumed, so it finishes, late, the jobs
    it held: the work a second node did too."""
    spec = _spec(name, settings)
    count = settings.kill_consumers
    broker = await _open(spec)
    consumers: _Consumers | None = None
    resumed_at = None
    try:
        await broker.create()
        consumers = _Consumers(spec, count, workdir)
        await consumers.ready(timeout=60)
        producing = asyncio.create_task(broker.enqueue(workload(settings.jobs, date(2026, 12, 3))))
        deadline = time.monotonic() + settings.run_timeout_s
        while True:
            done, _held = consumers.done_count()
            if done >= settings.jobs * KILL_AT:
                # Frozen, its journal cannot change between the look and the kill.
                await consumers.freeze(0)
                lost_at = time.monotonic()
                done, held = consumers.done_count()
                if held[0] > 0:
                    break
                consumers.procs[0].send_signal(signal.SIGCONT)
            if done >= settings.jobs or time.monotonic() > deadline:
                raise BenchFailure(f"{name}: no moment to stop a consumer holding jobs")
            await asyncio.sleep(0.002)
        if not hang:
            lost_at = consumers.kill(0)
        await producing
        complete = await _wait_done(consumers, settings.jobs, lost_at + settings.run_timeout_s)
        if hang:
            resumed_at = time.monotonic()
            consumers.procs[0].send_signal(signal.SIGCONT)
            await asyncio.sleep(RESUMED_S + settings.work_ms / 1000)
        # A resumed RabbitMQ consumer finds its connection closed by the broker: its acks
        # fail and it exits with that error, which is the expected end here.
        await consumers.stop(may_fail={0} if hang else set())
        journals = [read_journal(p) for p in consumers.journals]
        figures = tally(journals, settings.jobs, 0, lost_at)
    finally:
        if consumers is not None:
            for proc in consumers.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                    proc.wait()
        await _drop(broker)
    figures.pop("last_done_t")
    figures.pop("consumer_cpu_s")
    out = {
        "broker": name,
        "run_id": spec.run_id,
        "consumers": count,
        "jobs": settings.jobs,
        "how": "SIGSTOP, resumed after the others finished" if hang else "SIGKILL",
        "complete": complete,
        "lost_after_done": done,
        **figures,
    }
    if resumed_at is not None:
        out["done_by_it_after_resuming"] = sum(
            1 for _job, t in journals[0].done or () if t >= resumed_at
        )
    return out


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("nats-py", "aio-pika", "psycopg"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


#: The figures of a flow run kept for each repetition beside the median one.
_REPEATED = (
    "enqueue_jobs_per_s",
    "end_to_end_jobs_per_s",
    "producer_cpu_us_per_job",
    "consumer_cpu_us_per_job",
)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median end-to-end rate, with every repetition's rates beside it."""
    ranked = sorted(runs, key=lambda run: run["end_to_end_jobs_per_s"] or 0)
    median = dict(ranked[len(ranked) // 2])
    median["repeats"] = [{key: run[key] for key in _REPEATED} for run in runs]
    median["lost"] = max(run["lost"] for run in runs)
    median["duplicates"] = max(run["duplicates"] for run in runs)
    return median


async def run_bench(settings: Settings, workdir: Path) -> dict[str, Any]:
    """Every run of ``settings``; raises BrokerUnavailable naming a broker that is not up."""
    servers = {}
    for name in settings.brokers:
        broker = await _open(_spec(name, settings))
        servers[name] = await broker.server_version()
        await broker.close()
    load_before = os.getloadavg()
    # Repetitions outermost, so a burst of load elsewhere on the machine hits every broker.
    tries: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(settings.repeat):
        for name in settings.brokers:
            for count in settings.consumers:
                run = await measure_flow(name, count, settings, workdir)
                tries.setdefault((name, count), []).append(run)
                print(f"broker bench: {json.dumps(run)}", file=sys.stderr)
    flows = [_median_run(runs) for runs in tries.values()]
    kills = []
    hangs = []
    for name in settings.brokers if settings.kill_consumers else ():
        kills.append(await measure_loss(name, False, settings, workdir))
        print(f"broker bench: {json.dumps(kills[-1])}", file=sys.stderr)
        if settings.hang:
            hangs.append(await measure_loss(name, True, settings, workdir))
            print(f"broker bench: {json.dumps(hangs[-1])}", file=sys.stderr)
    return {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "servers": servers,
        "clients": _versions(),
        "settings": asdict(settings),
        "workload": {
            "gprs_meters_per_job": GPRS_BATCH,
            "bus_meters_per_job": BUS_METERS,
            "bus_every": BUS_EVERY,
        },
        "flow": flows,
        "node_dies": kills,
        "node_hangs": hangs,
    }


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"counts must be >= 1: {text!r}")
    return values


def _brokers(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(","))
    unknown = [name for name in names if name not in BROKERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown broker {unknown}; known: {list(BROKERS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per run (default 3000)")
    parser.add_argument("--consumers", type=_counts, default=(1, 3), help="K values: 1,3")
    parser.add_argument("--kill-consumers", type=int, default=3,
                        help="K of the node-dies run (0: no such run; default 3)")  # fmt: skip
    parser.add_argument("--brokers", type=_brokers, default=tuple(BROKERS))
    parser.add_argument("--lease-s", type=float, default=3.0, help="ack wait / lease (3 s)")
    parser.add_argument("--prefetch", type=int, default=32, help="jobs in hand per consumer")
    parser.add_argument("--work-ms", type=float, default=5.0, help="simulated work per job")
    parser.add_argument("--run-timeout", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=1, help="flow runs per broker and K")
    parser.add_argument("--no-hang", action="store_true", help="skip the node-hangs runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "broker_bench.json")
    parser.add_argument("--workdir", type=Path, help="keep the journals and consumer logs here")
    args = parser.parse_args(argv)
    if args.jobs < 10 or args.prefetch < 1 or args.lease_s <= 0 or args.work_ms < 0:
        parser.error("need --jobs >= 10, --prefetch >= 1, --lease-s > 0, --work-ms >= 0")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.kill_consumers == 1:
        parser.error("--kill-consumers needs 2 or more (someone must take over), or 0")
    settings = Settings(
        jobs=args.jobs,
        consumers=args.consumers,
        kill_consumers=args.kill_consumers,
        brokers=args.brokers,
        lease_s=args.lease_s,
        prefetch=args.prefetch,
        work_ms=args.work_ms,
        run_timeout_s=args.run_timeout,
        repeat=args.repeat,
        hang=not args.no_hang,
    )
    started = time.monotonic()
    try:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            result = asyncio.run(run_bench(settings, args.workdir))
        else:
            with tempfile.TemporaryDirectory(prefix="hes-broker-bench-") as workdir:
                result = asyncio.run(run_bench(settings, Path(workdir)))
    except (BrokerUnavailable, BenchFailure) as exc:
        print(f"broker bench: {exc}", file=sys.stderr)
        return 2
    given = sys.argv[1:] if argv is None else argv
    result["command"] = " ".join(["python -m bench.broker_bench", *given])
    result["wall_s"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"broker bench: {result['wall_s']} s, figures in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
