"""``hes serve`` jobs on a secured fleet whose credentials come only from the key store.

The simulator's own inventory (HLS-GMAC and LLS meters) and key file (``Fleet.write_keys``:
keys and LLS passwords) are imported; the service runs with the master key and no
``HES_PASSWORD_*``. Over the API an operator disconnects and reconnects every meter (the
relay checked in the simulated meter itself), then runs a clock-sync job and an events job
over the fleet: every meter gets a management session, LLS ones with the password from the
key store, HLS ones ciphered with the key store's keys and counters.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from serve_harness import ROOT, SEED, SimThread, config_file, online_run, service
from test_collector_fleet import plan_text
from test_serve_e2e import wait_job

from collector.operations import CONNECTED, DISCONNECTED
from simulator.fleet import FleetSpec
from storage import access
from storage.database import open_database
from storage.queries import events_of

MASTER_HEX = "3c" * 32


def test_service_jobs_on_lls_and_hls_meters_with_credentials_from_the_key_store(
    tmp_path: Path,
) -> None:
    now = time.time()
    spec = FleetSpec(
        seed=SEED,
        tcp_meters=8,
        tcp_port=0,
        first_address="127.7.41.1",
        first_meter=online_run(8, 900, [now, now + 300]),
        secure_share=0.5,
        lls_share=0.5,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HES_")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp_path), HES_MASTER_KEY=MASTER_HEX)
    sim = SimThread(spec)
    with sim as fleet:
        assert (len(fleet.secured), len(fleet.lls)) == (4, 4)
        inventory, keys = tmp_path / "meters.csv", tmp_path / "keys.csv"
        fleet.write_inventory(inventory)
        assert fleet.write_keys(keys) == 8
        db_path = tmp_path / "hes.db"
        imported = subprocess.run(
            [sys.executable, "-m", "cli", "keys", "import", str(keys), "--db", str(db_path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert imported.returncode == 0, imported.stderr
        db = open_database(db_path)
        operator = access.create_token(db, "ops", "operator")
        conf = config_file(tmp_path, plan_text(concurrency=8), inventory=str(inventory), poll_s=0.1)
        ids = [r["meter_id"] for r in fleet.inventory_rows()]
        with service(conf, env) as svc:
            op = httpx.Client(
                base_url=svc.url, headers={"Authorization": f"Bearer {operator}"}, timeout=30
            )
            for command, state in (("disconnect", DISCONNECTED), ("reconnect", CONNECTED)):
                made = [op.post(f"/api/meters/{m}/{command}") for m in ids]
                assert all(r.status_code == 201 for r in made), [r.text for r in made]
                for response in made:
                    job = wait_job(op, response.json()["id"])
                    assert job["state"] == "done", job
                assert [sim.relay(m) for m in ids] == [state] * 8

            synced = op.post("/api/jobs", json={"kind": "clock_sync", "meters": ids})
            job = wait_job(op, synced.json()["id"])
            assert job["state"] == "done", job
            result = job["result"]
            assert (result["failed_count"], result["skipped_public"]) == (0, 0), result
            assert result["clock_checked"] == 8, result

            read = op.post("/api/jobs", json={"kind": "events", "meters": ids})
            job = wait_job(op, read.json()["id"])
            assert job["state"] == "done" and job["result"]["failed_count"] == 0, job
            assert all(events_of(db, m, None, None) for m in ids)
            svc.stop()
        db.close()
