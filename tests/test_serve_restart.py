"""``hes serve`` killed mid-job and stopped by SIGTERM: nothing lost, nothing duplicated.

The real service in a subprocess against the simulator on the real clock. On start the
service enqueues its schedule's latest tick (the daily run: the day before it); the test
kills it (SIGKILL) while that job is half done, starts it again, and the job resumes from
the database and ends with exactly the simulator's ground truth stored. A SIGTERM stops the
service within its drain time with exit code 143 and puts the job back in the queue.
"""

from __future__ import annotations

import signal
import time
from datetime import date
from pathlib import Path

from serve_harness import (
    SEED,
    TIMEOUT,
    SimThread,
    config_file,
    online_run,
    service,
    service_env,
    stored_vs_truth,
    truth_count,
    write_inventory,
)
from test_collector_fleet import plan_text

from simulator.fleet import Fleet, FleetSpec, LatencySpec
from storage import jobs
from storage.database import Database, open_database
from storage.jobs import JobRecord

METERS = 10


def fleet_spec(first_address: str, median_s: float) -> FleetSpec:
    now = time.time()
    return FleetSpec(
        seed=SEED,
        tcp_meters=METERS,
        baudrate=None,
        latency=LatencySpec("gprs", median_s=median_s, meter_sigma=0.1, max_s=4 * median_s),
        first_meter=online_run(METERS, 100, [now, now + 300]),
        tcp_port=0,
        first_address=first_address,
    )


def the_scheduled_job(db: Database) -> JobRecord | None:
    found = [j for j in jobs.list_jobs(db, kind="collect") if j.schedule == "all/profile"]
    assert len(found) <= 1, found
    return found[0] if found else None


def wait_for(what: str, check: object, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def served_fleet(
    fleet: Fleet, tmp_path: Path, drain_s: float
) -> tuple[list[str], Path, dict[str, str]]:
    """The fleet's inventory, a service configuration reading it one meter at a time, and
    the service's environment."""
    ids = write_inventory(fleet, tmp_path / "meters.csv", lls=False)
    conf = config_file(
        tmp_path,
        plan_text(concurrency=1),
        inventory=str(tmp_path / "meters.csv"),
        poll_s=0.1,
        drain_s=drain_s,
    )
    return ids, conf, service_env(ids, tmp_path)


def test_sigkill_mid_job_then_restart_completes_it_exactly(tmp_path: Path) -> None:
    with SimThread(fleet_spec("127.7.20.1", median_s=0.05)) as fleet:
        ids, conf, env = served_fleet(fleet, tmp_path, drain_s=2.0)
        with service(conf, env) as first:
            db = open_database(tmp_path / "hes.db")
            wait_for("a few sessions", lambda: db.count_rows("read_attempts") >= 3)
            first.proc.kill()
            assert first.proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
        job = the_scheduled_job(db)
        assert job is not None and job.state == "running"  # as the kill left it
        day = date.fromisoformat(job.params["day"])
        expected = sum(truth_count(m, day) for m in ids)
        at_kill = db.count_interval_values()
        assert 0 < at_kill < expected

        with service(conf, env) as second:
            wait_for(
                "the resume notice", lambda: any("resuming 1 job(s)" in x for x in second.lines)
            )
            wait_for("the job's end", lambda: (j := the_scheduled_job(db)) is not None and j.final)
            assert second.stop() == 128 + signal.SIGTERM
    done = the_scheduled_job(db)
    assert done is not None and done.state == "done" and done.attempts == 2, done.result
    assert done.result["complete"] + done.result["skipped_complete"] == METERS
    assert done.result["intervals_stored"] == expected - at_kill
    assert db.count_interval_values() == expected
    for meter_id in ids:
        assert stored_vs_truth(db, meter_id, day) == []
    db.close()


def test_sigterm_drains_within_its_bound_and_requeues_the_job(tmp_path: Path) -> None:
    with SimThread(fleet_spec("127.7.21.1", median_s=0.3)) as fleet:
        ids, conf, env = served_fleet(fleet, tmp_path, drain_s=1.0)
        with service(conf, env) as svc:
            db = open_database(tmp_path / "hes.db")
            wait_for("a first session", lambda: db.count_rows("read_attempts") >= 1)
            # drain_s plus a session's own stop grace bound the stop; well inside TIMEOUT
            assert svc.stop(signal.SIGTERM, timeout=20.0) == 128 + signal.SIGTERM
            assert any("stopped (signal 15)" in line for line in svc.lines)
        job = the_scheduled_job(db)
        assert job is not None and job.state == "queued" and job.finished_at is None
        assert db.count_rows("read_attempts") < METERS
        with service(conf, env) as again:
            wait_for("the job's end", lambda: (j := the_scheduled_job(db)) is not None and j.final)
            again.stop()
        job = the_scheduled_job(db)
        assert job is not None and job.state == "done", job.result
        day = date.fromisoformat(job.params["day"])
        for meter_id in ids:
            assert stored_vs_truth(db, meter_id, day) == []
        db.close()
