"""``hes serve`` end to end: the real service in a subprocess, the simulator on the real
clock, every request over real HTTP.

On start the service enqueues two scheduled runs: the daily profile run (the day before
its tick) and the hourly register run (today up to the hour, every meter contacted for its
registers). Then, through the API, an operator reads a bus meter now and a prepayment
system disconnects and reconnects a meter, retrying with the same Idempotency-Key. The
stored intervals are held against the simulator's ground truth, the relay against the
simulated meter's own state, and the commands against the audit trail and the metrics.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from serve_harness import (
    SEED,
    SimThread,
    config_file,
    online_run,
    service,
    service_env,
    stored_vs_truth,
    write_inventory,
)
from test_collector_fleet import CHANNELS, plan_text

from collector.operations import CONNECTED, DISCONNECTED
from simulator import model
from simulator.fleet import FleetSpec, meter_number
from storage import access
from storage.database import open_database

SCHEDULES = """
[group.schedule.profile]
cron = "5 0 * * *"
until = "06:00"

[group.schedule.registers]
every = "1h"
"""


def wait_job(http: httpx.Client, job_id: int, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end: {job}")


def scheduled(http: httpx.Client, schedule: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in http.get("/api/jobs", params={"kind": "collect"}).json()["items"]:
            if job["schedule"] == schedule:
                return wait_job(http, job["id"], timeout)
        time.sleep(0.1)
    raise AssertionError(f"no job of schedule {schedule}")


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_schedules_an_on_demand_read_and_a_relay_pair_over_http(tmp_path: Path) -> None:
    now = time.time()
    spec = FleetSpec(
        seed=SEED,
        tcp_meters=3,
        buses=1,
        meters_per_bus=3,
        baudrate=None,
        tcp_port=0,
        first_address="127.7.22.1",
        first_meter=online_run(6, 200, [now, now + 300]),
    )
    sim = SimThread(spec)
    with sim as fleet:
        ids = write_inventory(fleet, tmp_path / "meters.csv")
        bus_meter = ids[-1]
        db = open_database(tmp_path / "hes.db")
        operator = access.create_token(db, "prepayment", "operator")
        reader = access.create_token(db, "billing", "reader")
        conf = config_file(
            tmp_path,
            plan_text(concurrency=10) + SCHEDULES,
            inventory=str(tmp_path / "meters.csv"),
            poll_s=0.1,
        )
        with service(conf, service_env(ids, tmp_path)) as svc:
            op = httpx.Client(
                base_url=svc.url, headers={"Authorization": f"Bearer {operator}"}, timeout=30
            )
            ro = httpx.Client(
                base_url=svc.url, headers={"Authorization": f"Bearer {reader}"}, timeout=30
            )

            # Two scheduled runs, enqueued by the service itself on start.
            daily = scheduled(ro, "all/profile")
            hourly = scheduled(ro, "all/registers")
            assert daily["state"] == hourly["state"] == "done", (daily, hourly)
            assert daily["result"]["complete"] == 6
            day = date.fromisoformat(daily["params"]["day"])
            for meter_id in ids:
                assert stored_vs_truth(db, meter_id, day) == []
            tick = datetime.fromisoformat(hourly["params"]["until"])
            assert hourly["params"]["refresh"] is True
            for meter_id in ids:
                assert stored_vs_truth(db, meter_id, tick.date(), until=tick) == []

            # The reads as the billing system sees them: the ground truth, scaled, with unit.
            first = datetime.combine(day, datetime.min.time(), UTC)
            got = ro.get(
                f"/api/meters/{ids[0]}/reads",
                params={
                    "channel": CHANNELS[0],
                    "from": first.isoformat(),
                    "to": (first + timedelta(days=1)).isoformat(),
                },
            )
            assert got.status_code == 200, got.text
            (scaler,) = {c.scaler for c in db.meter_channels(ids[0]) if c.channel == CHANNELS[0]}
            truth = model.ground_truth(
                meter_number(ids[0]), SEED, first.timestamp(), first.timestamp() + 86400
            ).load_profile
            assert len(truth) > 0 and got.json()["unit"] == "Wh"
            assert [(i["value"], i["status"]) for i in got.json()["items"]] == [
                (r[2] * 10**scaler if scaler >= 0 else r[2] / 10**-scaler, r[1]) for r in truth
            ]

            # An operator reads the bus meter now.
            made = op.post(f"/api/meters/{bus_meter}/read")
            assert made.status_code == 201, made.text
            read = wait_job(ro, made.json()["id"])
            assert read["state"] == "done" and read["result"]["complete"] == 1, read

            # A reader may not switch a relay; the refusal is audited too.
            refused = ro.post(f"/api/meters/{ids[0]}/disconnect")
            assert refused.status_code == 403 and refused.json()["error"] == "forbidden"

            # Prepayment: the balance ran out; the billing system retries its request.
            key = {"Idempotency-Key": "balance-out-4711"}
            cut = op.post(f"/api/meters/{ids[0]}/disconnect", headers=key)
            again = op.post(f"/api/meters/{ids[0]}/disconnect", headers=key)
            assert (cut.status_code, again.status_code) == (201, 200)
            assert again.json()["id"] == cut.json()["id"]
            cut_job = wait_job(ro, cut.json()["id"])
            assert cut_job["state"] == "done", cut_job
            assert sim.relay(ids[0]) == DISCONNECTED
            back = op.post(
                f"/api/meters/{ids[0]}/reconnect", headers={"Idempotency-Key": "topup-4711"}
            )
            assert wait_job(ro, back.json()["id"])["state"] == "done"
            assert sim.relay(ids[0]) == CONNECTED
            assert all(sim.relay(m) == CONNECTED for m in ids[1:])

            audit = op.get("/api/audit", params={"limit": 100}).json()["items"]
            by_action = [(a["actor"], a["status"]) for a in audit]
            assert ("billing", 403) in by_action
            assert by_action.count(("prepayment", 201)) >= 3  # read, disconnect, reconnect
            assert ("prepayment", 200) in by_action  # the retried disconnect

            scrape = httpx.get(f"{svc.url}/metrics", timeout=30).text
            assert metric(scrape, "hes_jobs_total", kind="disconnect", state="done") == 1
            assert metric(scrape, "hes_jobs_total", kind="reconnect", state="done") == 1
            assert metric(scrape, "hes_sessions_total", outcome="ok", error_class="") >= 6
            assert metric(scrape, "hes_sessions_in_flight") == 0

            assert svc.stop() == 128 + signal.SIGTERM
        db.close()
