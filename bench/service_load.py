"""Scenario 7 of ``hes bench``: the service collecting the day while its API answers.

The same fleet as scenario 1 (N GPRS meters, no emulated latency, 1 % transient faults)
is collected twice in one run, each time into a fresh database:

1. ``hes collect`` alone, one process (the baseline: ``hes serve`` is one process too);
2. ``hes serve``: its daily schedule's tick enqueues the day's collection on start, and
   while that job runs, API clients (the billing system, the MDM) ask
   ``GET /api/meters/{id}/reads`` for random meters of the fleet, closed loop, each
   pausing between requests. The same requests are then timed with the service idle, so
   the latency under load is reported against a baseline of the same run.

Figures: collection wall time of each and their ratio, service CPU per meter and peak RSS,
request latency p50/p95/p99 under load and idle (and their ratio), requests per second,
answers by status. Nothing is asserted; the figures go to results.json.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench import harness
from bench.harness import (
    A_PLUS,
    BenchError,
    Child,
    Fleet,
    Sizes,
    _fmt,
    _pct,
    _r,
    _rate,
    fleet,
    percentile,
    run_cli,
    run_collector,
)

#: API clients asking at once, and each one's pause between requests.
CLIENTS = 4
PAUSE_S = 0.05
#: Requests timed against the idle service after the collection.
IDLE_REQUESTS = 400
SERVE_START_S = 120.0
#: The scheduled job appears within this long of the service's start.
JOB_APPEAR_S = 60.0


class Api:
    """One persistent HTTP/1.1 connection to the service (the standard library's client:
    the harness needs no HTTP package of its own)."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Authorization": f"Bearer {token}"}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, bytes]:
        target = path + ("?" + urlencode(params) if params else "")
        try:
            self.conn.request("GET", target, headers=self.headers)
            r = self.conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # reconnects on the next request
            raise

    def json(self, path: str, params: dict[str, str] | None = None) -> Any:
        status, body = self.get(path, params)
        if status != 200:
            raise BenchError(f"GET {path}: {status} {body[:300]!r}")
        return json.loads(body)

    def close(self) -> None:
        self.conn.close()


class Load:
    """Closed-loop API clients on threads, each with its own connection."""

    def __init__(self, url: str, token: str, meter_ids: Sequence[str], day: date) -> None:
        self.url = url
        self.token = token
        self.meter_ids = list(meter_ids)
        start = datetime.combine(day, datetime.min.time(), UTC)
        self.params = {
            "channel": A_PLUS,
            "from": start.isoformat(),
            "to": (start + timedelta(days=1)).isoformat(),
        }
        self.latencies: list[float] = []
        self.ok_latencies: list[float] = []
        self.status: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _client(self, seed: int, count: int | None) -> None:
        rng = random.Random(seed)
        done = 0
        api = Api(self.url, self.token)
        try:
            while not self._stop.is_set() and (count is None or done < count):
                meter = rng.choice(self.meter_ids)
                t0 = time.perf_counter()
                try:
                    code, _ = api.get(f"/api/meters/{meter}/reads", self.params)
                    status = str(code)
                except (OSError, http.client.HTTPException) as exc:
                    status = type(exc).__name__
                elapsed = time.perf_counter() - t0
                with self._lock:
                    self.latencies.append(elapsed)
                    self.status[status] += 1
                    if status == "200":
                        self.ok_latencies.append(elapsed)
                done += 1
                if count is None:
                    self._stop.wait(PAUSE_S)
        finally:
            api.close()

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._client, args=(k, None), daemon=True)
            for k in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        return threads

    def stop(self, threads: list[threading.Thread]) -> None:
        self._stop.set()
        for t in threads:
            t.join(timeout=60)

    def run_count(self, total: int) -> None:
        """``total`` requests spread over the clients, back to back (the idle baseline)."""
        threads = [
            threading.Thread(target=self._client, args=(100 + k, total // CLIENTS), daemon=True)
            for k in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)

    def figures(self, seconds: float) -> dict[str, Any]:
        return {
            "requests": len(self.latencies),
            "requests_per_s": _rate(len(self.latencies), seconds),
            "status": dict(self.status),
            "latency_ms_p50": _ms(percentile(self.latencies, 50)),
            "latency_ms_p95": _ms(percentile(self.latencies, 95)),
            "latency_ms_p99": _ms(percentile(self.latencies, 99)),
            "latency_ms_p99_200": _ms(percentile(self.ok_latencies, 99)),
            "latency_ms_max": _ms(max(self.latencies) if self.latencies else None),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 2)


def _listening(child: Child, timeout: float) -> str:
    """The URL ``hes serve`` announces on stderr (its log file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in child.stderr_tail(20_000).splitlines():
            if "listening on " in line:
                return line.rsplit("listening on ", 1)[1].strip()
        if child.proc.poll() is not None:
            raise BenchError(f"hes serve exited {child.proc.returncode}: {child.stderr_tail()}")
        time.sleep(0.1)
    child.kill()
    raise BenchError(f"hes serve did not start: {child.stderr_tail()}")


def _job(api: Api, timeout: float) -> dict[str, Any]:
    """The collect job the service's schedule enqueued."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = api.json("/api/jobs", {"kind": "collect"}).get("items", [])
        if items:
            job: dict[str, Any] = items[-1]
            return job
        time.sleep(0.2)
    raise BenchError("the service enqueued no collection job")


def _served(f: Fleet, workdir: Path, sizes: Sizes) -> dict[str, Any]:
    db = workdir / "service.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    run_cli(["meters", "import", str(f.inventory), "--db", str(db)],
            workdir / "service-import.log", 600)  # fmt: skip
    made, _ = run_cli(["token", "create", "bench", "--role", "reader", "--db", str(db)],
                      workdir / "service-token.log", 120)  # fmt: skip
    token = json.loads(made)["token"]
    conf = workdir / "service.toml"
    conf.write_text(
        f'[service]\ndb = "{db}"\nhttp = "127.0.0.1:0"\n' + sizes.plan(sizes.concurrency)
    )
    meter_ids = [line.split(",", 1)[0] for line in f.inventory.read_text().splitlines()[1:] if line]
    child = Child(["serve", "--config", str(conf)], workdir / "service-serve.log")
    try:
        url = _listening(child, SERVE_START_S)
        api = Api(url, token)
        try:
            job = _job(api, JOB_APPEAR_S)
            load = Load(url, token, meter_ids, date.fromisoformat(job["params"]["day"]))
            threads = load.start()
            t0 = time.perf_counter()
            deadline = time.monotonic() + sizes.collect_timeout_s
            while job["state"] not in ("done", "failed", "cancelled"):
                if time.monotonic() > deadline:
                    break
                time.sleep(1.0)
                job = api.json(f"/api/jobs/{job['id']}")
            load_s = time.perf_counter() - t0
            load.stop(threads)
            idle = Load(url, token, meter_ids, date.fromisoformat(job["params"]["day"]))
            t1 = time.perf_counter()
            idle.run_count(IDLE_REQUESTS)
            idle_s = time.perf_counter() - t1
        finally:
            api.close()
        child.proc.send_signal(15)
        usage = child.wait(120)
    finally:
        child.kill()
    result = job.get("result") or {}
    started = datetime.fromisoformat(job["started_at"]) if job.get("started_at") else None
    finished = datetime.fromisoformat(job["finished_at"]) if job.get("finished_at") else None
    wall = (finished - started).total_seconds() if started and finished else None
    under = load.figures(load_s)
    quiet = idle.figures(idle_s)
    return {
        "job_state": job["state"],
        "day": job["params"]["day"],
        "wall_s": _r(wall, 2),
        "success_rate": result.get("success_rate"),
        "complete": result.get("complete"),
        "attempts": result.get("attempts"),
        "service_cpu_s": _r(usage.cpu_s, 2),
        "service_cpu_ms_per_meter": _r(1000 * usage.cpu_s / max(1, len(meter_ids)), 3),
        "service_peak_rss_mib": _r(usage.peak_rss_mib, 1),
        "service_exit_code": usage.exit_code,
        "api_under_load": under,
        "api_idle": quiet,
        "p99_load_over_idle": _ratio(under["latency_ms_p99"], quiet["latency_ms_p99"]),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def scenario_service(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Scenario 1's fleet, collected by ``hes collect`` alone and by ``hes serve`` under API
    load, in the same run."""
    n = sizes.meters
    with fleet(["--tcp-meters", str(n), "--baud", "0", "--faults", "0.01"], workdir,
               "service") as f:  # fmt: skip
        alone = run_collector(
            f, workdir, "service-alone", concurrency=sizes.concurrency, workers=1,
            timeout=sizes.collect_timeout_s, request_s=sizes.request_s,
            backoff_s=sizes.backoff_s,
        )  # fmt: skip
        served = _served(f, workdir, sizes)
        sim = f.stop()
    alone_wall = float(alone.summary.get("seconds") or alone.usage.wall_s)
    return {
        "description": f"{n} GPRS meters as scenario 1: hes collect alone (1 process), then "
        f"hes serve's scheduled run while {CLIENTS} API clients ask GET /api/meters/{{id}}/reads "
        f"(closed loop, {PAUSE_S * 1000:g} ms pause), then the same requests idle",
        "meters": n,
        "concurrency": sizes.concurrency,
        "collect_alone": {
            "wall_s": _r(alone_wall, 2),
            "success_rate": alone.report.get("success_rate"),
            "collector_cpu_s": _r(alone.usage.cpu_s, 2),
            "collector_cpu_ms_per_meter": _r(1000 * alone.usage.cpu_s / n, 3),
            "collector_peak_rss_mib": _r(alone.usage.peak_rss_mib, 1),
        },
        "serve": served,
        "serve_over_alone_wall": _ratio(served["wall_s"], alone_wall),
        "simulator_cpu_s": _r(sim.cpu_s, 2),
    }


def _answers(status: dict[str, int]) -> str:
    """``17,794 x 200, 12,714 x 400``: a 400 is a meter whose reads are not stored yet."""
    return ", ".join(f"{n:,} x {code}" for code, n in sorted(status.items()))


def service_markdown(s: dict[str, Any]) -> list[str]:
    """The scenario's table for results.md and the README."""
    v = s.get("service")
    if not v or "error" in v:
        return []
    a, sv = v["collect_alone"], v["serve"]
    load, idle = sv["api_under_load"], sv["api_idle"]
    return [
        f"## 7. The service: {v['meters']:,} meters collected while the API answers",
        "",
        "| figure | hes collect alone | hes serve + API load | ratio |",
        "|---|---|---|---|",
        f"| collection wall time | {_fmt(a['wall_s'])} s | {_fmt(sv['wall_s'])} s | "
        f"{_fmt(v['serve_over_alone_wall'])} |",
        f"| success rate | {_pct(a['success_rate'])} | {_pct(sv['success_rate'])} | |",
        f"| CPU per meter | {_fmt(a['collector_cpu_ms_per_meter'], 3)} ms | "
        f"{_fmt(sv['service_cpu_ms_per_meter'], 3)} ms (API included) | |",
        f"| peak RSS | {_fmt(a['collector_peak_rss_mib'], 1)} MiB | "
        f"{_fmt(sv['service_peak_rss_mib'], 1)} MiB | |",
        "",
        "| GET /api/meters/{id}/reads | during the collection | service idle | ratio |",
        "|---|---|---|---|",
        f"| requests | {load['requests']:,} ({_fmt(load['requests_per_s'])}/s) | "
        f"{idle['requests']:,} ({_fmt(idle['requests_per_s'])}/s) | |",
        *(
            f"| {q} latency | {_fmt(load[f'latency_ms_{q}'])} ms | "
            f"{_fmt(idle[f'latency_ms_{q}'])} ms | "
            + (f"{_fmt(sv['p99_load_over_idle'])} |" if q == "p99" else "|")
            for q in ("p50", "p95", "p99")
        ),
        f"| answers | {_answers(load['status'])} | {_answers(idle['status'])} | |",
        "",
    ]


harness.register("service", scenario_service, service_markdown)
