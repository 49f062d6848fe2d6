"""Issue 15's cluster bench: meters/s with 1, 2 and 3 collector nodes on test hosts made of
network namespaces (:mod:`bench.netns`), under GPRS-like round trips, into the real PostgreSQL.

Every run makes its own hosts (``sim`` and ``node1`` … ``nodeN``, each a namespace on the
run's bridge), its own PostgreSQL schema (reached through the forwarder on the bridge) and
its own simulated fleet of GPRS meters (``hes simulate --latency gprs``: each meter has its
own median round trip, lognormal around 1.2 s, as a GPRS modem's), and removes them all.

- **baseline**: ``hes collect`` alone in ``node1`` (the single-node path, one process).
- **cluster N**: N ``hes serve --node nodeK`` processes, one per host, share the fleet
  through the PostgreSQL lease queue (the leader enqueues the day's tick split into link
  jobs; every node claims, reads and stores). Run where ``hes serve`` has ``--node``.

Figures per run: wall seconds from the nodes' start to the last meter stored, meters/s,
and per node CPU seconds and peak RSS (``/proc/<pid>/stat`` and ``VmHWM`` of ``status``,
sampled until the process ends, its worker children included), CPU ms per meter; the
simulator's CPU. Dispatch overhead per job (cluster runs): node CPU per job above the
baseline's per meter, and the queue's claim-to-finish bookkeeping as the jobs table
records it. netem is used on the nodes' veths when the kernel has it (``--netem-ms``);
this machine's kernel has none, so the round trips are the simulator's. Nothing is
asserted; figures go to ``--out``.

    .venv/bin/python -m bench.cluster_bench --meters 2000 --out bench/cluster_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench.netns import (
    ROOT,
    Simulator,
    TestNet,
    env_for,
    netem_missing,
    start_simulator,
    unavailable,
    url_via,
)

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}
SEED = 15015
#: GPRS meters per link job (the cluster's default).
GPRS_BATCH = 50
#: Time requests may take: the simulator's GPRS round trips reach 6 s.
PLAN = """
[collector]
concurrency = {concurrency}

[retry]
max_attempts = 3
backoff_base_s = 0.5
backoff_max_s = 2.0

[timeouts]
request_s = 10.0
session_s = 180.0

[[group]]
name = "all"
back_days = 0
registers = ["1.0.1.8.0.255", "1.0.2.8.0.255"]

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
TICKS = os.sysconf("SC_CLK_TCK")


class BenchFailure(RuntimeError):
    """A run could not be measured."""


@dataclass
class ProcUsage:
    """CPU and memory of one process (and its children), read from /proc while it runs."""

    pid: int
    cpu_s: float = 0.0
    peak_rss_kib: int = 0

    def sample(self) -> bool:
        """Read the figures now; False once the process is gone."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            status = Path(f"/proc/{self.pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return False
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return False
        # utime, stime, cutime, cstime: fields 14-17 of proc(5), 12-15 after the name.
        self.cpu_s = sum(int(x) for x in fields[11:15]) / TICKS
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
        return True


@dataclass
class Sampler:
    """Samples every registered process every ``step`` seconds on a thread of its own."""

    step: float = 0.2
    usages: list[ProcUsage] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def watch(self, pid: int) -> ProcUsage:
        usage = ProcUsage(pid)
        usage.sample()
        self.usages.append(usage)
        return usage

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.step):
            for usage in list(self.usages):
                usage.sample()


@dataclass(frozen=True)
class Settings:
    meters: int
    nodes: tuple[int, ...]
    concurrency: int
    netem_ms: float
    timeout_s: float
    day: date


def _schema() -> tuple[str, str]:
    """A fresh schema and the SQLAlchemy URL whose search_path is it."""
    name = f"hes_cluster_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**PG, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE SCHEMA "{name}"')
    url = f"postgresql+psycopg://{PG['user']}@{PG['host']}:{PG['port']}/{PG['dbname']}"
    return name, f"{url}?options=-csearch_path%3D{name}"


def _drop(schema: str) -> None:
    with psycopg.connect(**PG, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _complete_meters(schema: str, day: date) -> int:
    """Meters with the whole day stored: a day row per channel, no slot missing."""
    epoch_day = (day - date(1970, 1, 1)).days
    with psycopg.connect(**PG) as conn:  # type: ignore[arg-type]
        row = conn.execute(
            f"""SELECT count(*) FROM (SELECT meter_key FROM "{schema}".interval_days
                WHERE day = %s GROUP BY meter_key
                HAVING count(*) = 4 AND sum(missing) = 0) AS whole""",
            (epoch_day,),
        ).fetchone()
    return int(row[0]) if row else 0


def _hes(net: TestNet, host: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    return net[host].popen([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env_for(), **popen)


def _prepare(
    settings: Settings, names: Sequence[str], workdir: Path
) -> tuple[TestNet, Simulator, str, str, Path]:
    """Hosts, schema, fleet and imported inventory of one run (all removed on failure)."""
    net = TestNet(["sim", *names])
    schema = ""
    try:
        net.open()
        schema, url = _schema()
        return (net, *_fleet(settings, names, workdir, net, schema, url))
    except BaseException:
        net.close()
        if schema:
            _drop(schema)
        raise


def _fleet(
    settings: Settings, names: Sequence[str], workdir: Path, net: TestNet, schema: str, url: str
) -> tuple[Simulator, str, str, Path]:
    db_url = url_via(url, net.forward())
    for name in names:
        if settings.netem_ms:
            net.delay(name, settings.netem_ms / 2)
    inventory = workdir / "fleet.csv"
    sim = start_simulator(
        net,
        "sim",
        [
            "--tcp-meters", str(settings.meters), "--seed", str(SEED), "--port", "4059",
            "--latency", "gprs", "--inventory", str(inventory),
        ],
    )  # fmt: skip
    imported = _hes(net, names[0], "meters", "import", str(inventory), "--db", db_url,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    _, err = imported.communicate(timeout=120)
    if imported.returncode != 0:
        raise BenchFailure(f"hes meters import: {err[-2000:]}")
    plan = workdir / "plan.toml"
    plan.write_text(PLAN.format(concurrency=settings.concurrency), encoding="utf-8")
    return sim, schema, db_url, plan


def _sim_cpu(sim: Simulator) -> float:
    usage = ProcUsage(sim.proc.pid)
    usage.sample()
    return usage.cpu_s


def run_baseline(settings: Settings, workdir: Path) -> dict[str, Any]:
    """``hes collect`` in one host: the single-node path."""
    net, sim, schema, db_url, plan = _prepare(settings, ["node1"], workdir)
    try:
        with Sampler() as sampler:
            started = time.perf_counter()
            proc = _hes(
                net, "node1", "collect", "--db", db_url, "--config", str(plan),
                "--day", settings.day.isoformat(), "--seed", "1", "--no-progress",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            usage = sampler.watch(proc.pid)
            out, err = proc.communicate(timeout=settings.timeout_s)
            wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise BenchFailure(f"hes collect exited {proc.returncode}: {err[-2000:]}")
        sim_cpu = _sim_cpu(sim)
        stats = sim.stop()
        complete = _complete_meters(schema, settings.day)
        summary = json.loads(out)
    finally:
        net.close()
        _drop(schema)
    return {
        "mode": "hes collect",
        "nodes": 1,
        "meters": settings.meters,
        "complete": complete,
        "complete_by_summary": summary.get("complete"),
        "wall_s": round(wall, 2),
        "meters_per_s": round(complete / wall, 1),
        "node": [_node_figures("node1", usage, complete)],
        "simulator_cpu_s": round(sim_cpu, 2),
        "simulator_sessions": stats["tcp"]["connections"],
        "simulator_peak_sessions_in_flight": stats["tcp"]["peak_sessions_in_flight"],
    }


def days_back_schedule(now: datetime) -> tuple[str, date]:
    """A ``[group.schedule.profile]`` whose latest tick is yesterday 00:05 UTC (weekly, on
    yesterday's weekday), so a service starting now collects the day before yesterday: a
    day every simulated meter holds whole whatever its clock's lag, at any hour of today."""
    yesterday = now.astimezone(UTC).date() - timedelta(days=1)
    dow = (yesterday.weekday() + 1) % 7  # cron: 0 is Sunday
    text = f'\n[group.schedule.profile]\ncron = "5 0 * * {dow}"\nuntil = "23:59"\n'
    return text, yesterday - timedelta(days=1)


@dataclass
class Node:
    """One ``hes serve --node`` in its test host, its stderr kept."""

    name: str
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "".join(self.lines[-40:])


def node_config(
    workdir: Path,
    name: str,
    db_url: str,
    plan: str,
    *,
    lease_s: float,
    gprs_batch: int,
    max_jobs: int = 4,
    poll_s: float = 1.0,
) -> Path:
    """A node's hes.toml: the shared database, jobs at once, how often a running job writes
    its progress (``poll_s``, the service's default 1 s), the cluster's lease, the plan."""
    path = workdir / f"{name}.toml"
    path.write_text(
        f'[service]\ndb = "{db_url}"\nhttp = "127.0.0.1:0"\npoll_s = {poll_s}\n'
        f"max_jobs = {max_jobs}\n"
        f'mqtt_spool = "{workdir / name}-spool.db"\n'
        f"[cluster]\nlease_s = {lease_s}\ngprs_batch = {gprs_batch}\n" + plan,
        encoding="utf-8",
    )
    return path


def start_node(net: TestNet, name: str, config: Path, timeout: float = 60.0) -> Node:
    """``hes serve --node NAME`` in host ``name``; returns once it listens."""
    proc = net[name].popen(
        [sys.executable, "-m", "cli", "serve", "--config", str(config), "--node", name],
        cwd=ROOT,
        env=env_for(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    node = Node(name, proc)
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise BenchFailure(f"{name} ended: {proc.wait()} {node.log()}")
        node.lines.append(line)
        if "listening on " in line:
            threading.Thread(target=_drain, args=(node,), daemon=True).start()
            return node
    proc.kill()
    raise BenchFailure(f"{name} did not start: {node.log()}")


def _drain(node: Node) -> None:
    assert node.proc.stderr is not None
    for line in node.proc.stderr:
        node.lines.append(line)


def stop_nodes(nodes: Sequence[Node], timeout: float = 60.0) -> None:
    """SIGTERM every node still running, SIGKILL what does not stop in ``timeout``."""
    for node in nodes:
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
    for node in nodes:
        try:
            node.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()


def _jobs(schema: str) -> list[Any]:
    with psycopg.connect(**PG) as conn:  # type: ignore[arg-type]
        return list(
            conn.execute(
                f'SELECT state, owner, started_at, finished_at, attempts FROM "{schema}".jobs '
                "WHERE kind = 'collect'"
            ).fetchall()
        )


def run_cluster(settings: Settings, count: int, workdir: Path) -> dict[str, Any]:
    """N ``hes serve --node`` processes, one per host, sharing the fleet's tick."""
    names = [f"node{k}" for k in range(1, count + 1)]
    net, sim, schema, db_url, _ = _prepare(settings, names, workdir)
    schedule, day = days_back_schedule(datetime.now(UTC))
    plan = PLAN.format(concurrency=settings.concurrency) + schedule
    nodes: list[Node] = []
    try:
        with Sampler() as sampler:
            started = time.perf_counter()
            usages = []
            for name in names:
                # One slot stays free for on-demand work: 4 link jobs of 50 meters at once,
                # the same 200 sessions in flight as the baseline's concurrency.
                config = node_config(
                    workdir,
                    name,
                    db_url,
                    plan,
                    lease_s=30.0,
                    gprs_batch=GPRS_BATCH,
                    max_jobs=settings.concurrency // GPRS_BATCH + 1,
                )
                node = start_node(net, name, config)
                nodes.append(node)
                usages.append(sampler.watch(node.proc.pid))
            deadline = time.monotonic() + settings.timeout_s
            while True:
                jobs = _jobs(schema)
                if jobs and all(j[0] in ("done", "failed", "cancelled") for j in jobs):
                    break
                if time.monotonic() > deadline:
                    raise BenchFailure(f"the tick's jobs did not end: {jobs}")
                for node in nodes:
                    if node.proc.poll() is not None:
                        raise BenchFailure(f"{node.name} ended: {node.log()}")
                time.sleep(0.25)
            wall = time.perf_counter() - started
            for usage in usages:
                usage.sample()
        sim_cpu = _sim_cpu(sim)
        stop_nodes(nodes)
        stats = sim.stop()
        complete = _complete_meters(schema, day)
        probe = net[names[0]].run(
            [sys.executable, "-m", "bench.cluster_dispatch", db_url, "500"],
            cwd=ROOT,
            env=env_for(),
            timeout=300,
        )
        if probe.returncode != 0:
            raise BenchFailure(f"dispatch probe: {probe.stderr[-2000:]}")
        dispatch = json.loads(probe.stdout.splitlines()[-1])
    finally:
        stop_nodes(nodes)
        net.close()
        _drop(schema)
    first = min(j[2] for j in jobs)
    last = max(j[3] for j in jobs)
    per_node = []
    for name, usage in zip(names, usages, strict=True):
        done = [j for j in jobs if j[1] == name]
        figures = _node_figures(name, usage, complete // count)
        figures["jobs"] = len(done)
        per_node.append(figures)
    return {
        "mode": f"hes serve --node x {count}",
        "nodes": count,
        "meters": settings.meters,
        "complete": complete,
        "wall_s": round(wall, 2),
        "meters_per_s": round(complete / wall, 1),
        "jobs_first_claim_to_last_finish_s": round((last - first).total_seconds(), 2),
        "jobs": len(jobs),
        "jobs_redelivered": sum(1 for j in jobs if j[4] > 1),
        "cpu_ms_per_meter_all_nodes": round(
            1000 * sum(u.cpu_s for u in usages) / max(1, complete), 3
        ),
        "node": per_node,
        "simulator_cpu_s": round(sim_cpu, 2),
        "simulator_sessions": stats["tcp"]["connections"],
        "simulator_peak_sessions_in_flight": stats["tcp"]["peak_sessions_in_flight"],
        "dispatch": dispatch,
    }


def _node_figures(name: str, usage: ProcUsage, meters: int) -> dict[str, Any]:
    return {
        "name": name,
        "cpu_s": round(usage.cpu_s, 2),
        "cpu_ms_per_meter": round(1000 * usage.cpu_s / max(1, meters), 3),
        "peak_rss_mib": round(usage.peak_rss_kib / 1024, 1),
    }


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=2000, help="GPRS meters (default 2000)")
    parser.add_argument("--nodes", default="1,2,3", help="cluster sizes to run (default 1,2,3)")
    parser.add_argument("--concurrency", type=int, default=200, help="sessions per node")
    parser.add_argument("--netem-ms", type=float, default=0.0,
                        help="extra round trip on each node's veth (needs netem)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the hes collect run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "cluster_bench.json")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason is not None:
        print(f"cluster bench: cannot make network namespaces: {reason}", file=sys.stderr)
        return 2
    netem = netem_missing()
    if args.netem_ms and netem is not None:
        print(f"cluster bench: --netem-ms needs netem: {netem}", file=sys.stderr)
        return 2
    settings = Settings(
        meters=args.meters,
        nodes=tuple(int(n) for n in args.nodes.split(",") if n),
        concurrency=args.concurrency,
        netem_ms=args.netem_ms,
        timeout_s=args.timeout,
        day=datetime.now(UTC).date() - timedelta(days=2),
    )
    results: dict[str, Any] = {
        "machine": _machine(),
        "settings": {
            "meters": settings.meters,
            "concurrency_per_node": settings.concurrency,
            "latency": "simulator gprs: per-meter median lognormal around 1.2 s, max 6 s",
            "netem_ms": settings.netem_ms,
            "netem": "available" if netem is None else netem,
            "day": settings.day.isoformat(),
        },
        "runs": [],
    }
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hes-cluster-bench-") as tmp:
        if not args.no_baseline:
            work = Path(tmp) / "baseline"
            work.mkdir()
            run = run_baseline(settings, work)
            print(json.dumps(run), flush=True)
            results["runs"].append(run)
        for count in settings.nodes:
            work = Path(tmp) / f"cluster{count}"
            work.mkdir()
            run = run_cluster(settings, count, work)
            print(json.dumps(run), flush=True)
            results["runs"].append(run)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
