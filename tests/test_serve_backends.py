"""``hes serve`` on its production backends: PostgreSQL by URL, MQTT by URL, push alarms.

The real service in a subprocess stores the scheduled night's collection in the real
PostgreSQL and publishes every meter's read to the real Mosquitto; an alarm pushed by a
meter is stored once, published once and counted in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

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
from test_collector_fleet import plan_text
from test_mqtt import subscribed

from simulator.fleet import FleetSpec, meter_number
from simulator.push import Alarm, AlarmPusher
from storage import jobs, queries
from storage.database import open_database


async def test_postgresql_mqtt_and_push_alarms(
    tmp_path: Path, pg_url: str, mqtt_broker: tuple[str, int]
) -> None:
    now = time.time()
    spec = FleetSpec(
        seed=SEED,
        tcp_meters=3,
        baudrate=None,
        tcp_port=0,
        first_address="127.7.23.1",
        first_meter=online_run(3, 300, [now, now + 300]),
    )
    prefix = f"hes-serve-{uuid.uuid4().hex[:10]}"
    host, port = mqtt_broker
    with SimThread(spec) as fleet:
        ids = write_inventory(fleet, tmp_path / "meters.csv", lls=False)
        conf = config_file(
            tmp_path,
            plan_text(concurrency=5),
            db=pg_url,
            mqtt_url=f"mqtt://{host}:{port}",
            mqtt_prefix=prefix,
            mqtt_spool=str(tmp_path / "spool.db"),
            push_listen="127.0.0.1:0",
            inventory=str(tmp_path / "meters.csv"),
            poll_s=0.1,
        )
        async with subscribed(mqtt_broker, prefix) as sub:
            with service(conf, service_env(ids, tmp_path)) as svc:
                db = open_database(pg_url)

                def night_done() -> bool:
                    found = jobs.list_jobs(db, kind="collect")
                    return bool(found) and found[0].final

                deadline = time.monotonic() + 60
                while not await asyncio.to_thread(night_done):
                    assert time.monotonic() < deadline, jobs.list_jobs(db)
                    await asyncio.sleep(0.1)
                (night,) = jobs.list_jobs(db, kind="collect")
                assert night.state == "done" and night.result["complete"] == 3, night.result
                day = date.fromisoformat(night.params["day"])
                for meter_id in ids:
                    assert stored_vs_truth(db, meter_id, day) == []

                # A meter pushes an alarm to the service's listener, twice (a retry).
                line = next(x for x in svc.lines if "push alarms on " in x)
                push_host, push_port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
                pusher = AlarmPusher([], SEED, push_host, int(push_port))
                alarm = Alarm(int(now), meter_number(ids[1]), 42)
                assert await pusher.push(alarm) and await pusher.push(alarm)

                alarm_topic = f"{prefix}/{ids[1]}/alarm"
                deadline = time.monotonic() + 30
                while not any(str(m.topic) == alarm_topic for m in sub.messages):
                    assert time.monotonic() < deadline, [str(m.topic) for m in sub.messages]
                    await asyncio.sleep(0.05)
                messages = list(sub.messages)
                deadline = time.monotonic() + 30
                while True:
                    scrape = httpx.get(f"{svc.url}/metrics", timeout=30).text
                    families = {f.name: f for f in text_string_to_metric_families(scrape)}
                    alarms = families["hes_push_alarms"].samples[0].value
                    if alarms >= 1 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
                assert alarms == 1
                stored = queries.alarms(db, None, None)
                assert [(a.meter_id, a.code) for a in stored] == [(ids[1], 42)]  # stored once
                svc.stop()
            db.close()
    by_topic: dict[str, list[dict[str, object]]] = {}
    for m in messages:
        by_topic.setdefault(str(m.topic), []).append(json.loads(bytes(m.payload)))
    for meter_id in ids:
        (profile,) = by_topic[f"{prefix}/{meter_id}/profile"]
        assert profile["complete"] is True and profile["kind"] == "profile"
    (pushed,) = by_topic[alarm_topic]
    assert pushed["code"] == 42
    assert pushed["ts"] == datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
