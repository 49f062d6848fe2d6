"""Dispatch overhead of the cluster's queue: ``python -m bench.cluster_dispatch URL JOBS``.

Run by :mod:`bench.cluster_bench` inside a node's test host, against the run's own schema
(after its collection, so the job table is as a night leaves it). It enqueues JOBS link jobs
of one tick (``storage.cluster.submit_tick``, as the leader does), then, one job after
another, does what a node does per job: the claim (``claim``), one progress update and
the fenced finish (``finish``). It prints one JSON line: wall ms and CPU ms of this process
per job for each step. The jobs are left done in the table.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime

from storage import cluster
from storage.database import open_database
from storage.jobs import SCHEDULED, JobRequest


def measure(url: str, count: int, node: str = "dispatch-probe") -> dict[str, float]:
    db = open_database(url)
    try:
        tick = datetime.now(UTC).replace(microsecond=0)
        requests = [
            JobRequest(
                "collect",
                {"day": tick.date().isoformat()},
                origin="schedule",
                requested_by="bench",
                priority=SCHEDULED,
                schedule="bench/dispatch",
                tick=tick,
                link=f"probe{i:05d}",
            )
            for i in range(count)
        ]
        t0, c0 = time.perf_counter(), time.process_time()
        cluster.submit_tick(db, requests, tick)
        enqueue = (time.perf_counter() - t0, time.process_time() - c0)
        steps = {"claim": [0.0, 0.0], "progress": [0.0, 0.0], "finish": [0.0, 0.0]}
        for _ in range(count):
            t, c = time.perf_counter(), time.process_time()
            job = cluster.claim(db, node, 30.0)
            steps["claim"][0] += time.perf_counter() - t
            steps["claim"][1] += time.process_time() - c
            if job is None:
                raise RuntimeError("a probe job could not be claimed")
            t, c = time.perf_counter(), time.process_time()
            cluster.progress(db, node, job.id, 1, 1)
            steps["progress"][0] += time.perf_counter() - t
            steps["progress"][1] += time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            cluster.finish(db, node, job.id, "done", result={"complete": 1})
            steps["finish"][0] += time.perf_counter() - t
            steps["finish"][1] += time.process_time() - c
    finally:
        db.close()
    out = {
        "jobs": count,
        "enqueue_wall_ms_per_job": 1000 * enqueue[0] / count,
        "enqueue_cpu_ms_per_job": 1000 * enqueue[1] / count,
    }
    for step, (wall, cpu) in steps.items():
        out[f"{step}_wall_ms"] = 1000 * wall / count
        out[f"{step}_cpu_ms"] = 1000 * cpu / count
    return {k: round(v, 3) for k, v in out.items()}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    print(json.dumps(measure(argv[0], int(argv[1]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
