"""bench/broker_bench.py at a tiny size against the real NATS, RabbitMQ and PostgreSQL.

One run of the bench (200 jobs, 2 consumers, one of them SIGKILLed in the node-dies run and
frozen then resumed in the node-hangs run) is shared by the tests: every job is done, none
lost, a job done twice was redelivered, the lost node's jobs came back to the other one, the
figures are there and positive, and every stream, queue and schema of the run is gone
afterwards. No timing is asserted. With
HES_REQUIRE_SERVICES=1 an unreachable service fails these tests (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aio_pika
import nats
import psycopg
import pytest
from nats.js.errors import NotFoundError

from bench.broker_bench import Settings, run_bench
from bench.brokers.common import AMQP_URL, NATS_URL
from bench.brokers.worker import BROKERS

ROOT = Path(__file__).resolve().parent.parent
JOBS = 200
SETTINGS = Settings(
    jobs=JOBS,
    consumers=(2,),
    kill_consumers=2,
    brokers=tuple(BROKERS),
    lease_s=1.0,
    prefetch=8,
    work_ms=2.0,
    run_timeout_s=60.0,
)


@pytest.fixture(scope="module")
def result(
    _pg_available: None,
    nats_server: tuple[str, int],
    amqp_broker: tuple[str, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    return asyncio.run(run_bench(SETTINGS, tmp_path_factory.mktemp("broker-bench")))


def test_every_broker_ran_a_flow_and_a_kill(result: dict[str, Any]) -> None:
    assert [run["broker"] for run in result["flow"]] == list(BROKERS)
    assert [run["broker"] for run in result["node_dies"]] == list(BROKERS)
    assert [run["broker"] for run in result["node_hangs"]] == list(BROKERS)
    assert set(result["servers"]) == set(BROKERS)


@pytest.mark.parametrize("broker", list(BROKERS))
def test_flow_completes_every_job(result: dict[str, Any], broker: str) -> None:
    (run,) = [run for run in result["flow"] if run["broker"] == broker]
    assert run["complete"] and run["completed"] == JOBS and run["lost"] == 0
    assert run["unknown_jobs"] == 0 and run["done_twice_never_redelivered"] == 0
    assert sum(run["per_consumer_done"]) >= JOBS
    assert run["enqueue_jobs_per_s"] > 0 and run["end_to_end_jobs_per_s"] > 0
    assert run["producer_cpu_us_per_job"] > 0 and run["consumer_cpu_us_per_job"] > 0


#: Jobs longer than the lease: the lease must be kept, by NATS in-progress acks and by
#: PostgreSQL lease updates (RabbitMQ has no lease: the connection keeps the job).
LONG_JOBS = Settings(
    jobs=16,
    consumers=(1,),
    kill_consumers=0,
    brokers=("nats", "postgres"),
    lease_s=3.0,
    prefetch=16,
    work_ms=4500.0,
    run_timeout_s=60.0,
    hang=False,
)


def test_a_job_longer_than_the_lease_keeps_it(
    _pg_available: None, nats_server: tuple[str, int], tmp_path: Path
) -> None:
    result = asyncio.run(run_bench(LONG_JOBS, tmp_path))
    assert [run["broker"] for run in result["flow"]] == ["nats", "postgres"]
    for run in result["flow"]:
        assert run["complete"] and run["completed"] == LONG_JOBS.jobs, run
        assert run["redelivered_flagged"] == 0 and run["duplicates"] == 0, run


@pytest.mark.parametrize("broker", list(BROKERS))
def test_a_killed_node_loses_no_job(result: dict[str, Any], broker: str) -> None:
    (run,) = [run for run in result["node_dies"] if run["broker"] == broker]
    assert run["complete"] and run["completed"] == JOBS and run["lost"] == 0
    assert run["unknown_jobs"] == 0
    # Done twice only after a redelivery: the killed node finished it, its ack did not land.
    assert run["done_twice_never_redelivered"] == 0
    assert run["duplicates"] <= run["redelivered_flagged"]
    # The killed node held jobs, and each went to the survivor, which did it.
    assert run["held_at_kill"] > 0
    assert run["held_claimed_again"] == run["held_at_kill"]
    assert run["held_done_by_survivor"] == run["held_at_kill"]
    assert run["redelivered_flagged"] >= run["held_at_kill"]
    assert 0 <= run["redelivery_first_s"] <= run["redelivery_last_s"]


@pytest.mark.parametrize("broker", list(BROKERS))
def test_a_hung_node_loses_no_job_and_its_late_work_is_a_redelivered_duplicate(
    result: dict[str, Any], broker: str
) -> None:
    (run,) = [run for run in result["node_hangs"] if run["broker"] == broker]
    assert run["complete"] and run["completed"] == JOBS and run["lost"] == 0
    assert run["held_at_kill"] > 0
    assert run["held_done_by_survivor"] == run["held_at_kill"]
    # Resumed after the others did its jobs, it did some again: always redelivered ones.
    assert run["done_twice_never_redelivered"] == 0
    assert run["duplicates"] <= run["redelivered_flagged"]
    assert run["done_by_it_after_resuming"] <= run["duplicates"]


async def _leftovers(result: dict[str, Any]) -> list[str]:
    runs = result["flow"] + result["node_dies"] + result["node_hangs"]
    found = []
    with psycopg.connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True
    ) as conn:
        for run in runs:
            schema = f"hesbench_{run['run_id']}"
            row = conn.execute(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s",
                (schema,),
            ).fetchone()
            if row is not None and row[0]:
                found.append(schema)
    nc = await nats.connect(NATS_URL, allow_reconnect=False)
    try:
        js = nc.jetstream()
        for run in runs:
            try:
                await js.stream_info(f"HESBENCH_{run['run_id']}")
                found.append(f"stream HESBENCH_{run['run_id']}")
            except NotFoundError:
                pass
    finally:
        await nc.close()
    amqp = await aio_pika.connect(AMQP_URL)
    try:
        for run in runs:
            channel = await amqp.channel()
            try:
                await channel.declare_queue(f"hesbench.{run['run_id']}", passive=True)
                found.append(f"queue hesbench.{run['run_id']}")
            except aio_pika.exceptions.ChannelClosed:
                pass
    finally:
        await amqp.close()
    return found


def test_every_run_deletes_its_queue(result: dict[str, Any]) -> None:
    assert asyncio.run(_leftovers(result)) == []


@pytest.mark.parametrize(
    ("broker", "variable", "address", "named"),
    [
        (
            "nats",
            "HES_BENCH_NATS",
            "nats://127.0.0.1:9",
            "NATS not reachable at nats://127.0.0.1:9",
        ),
        ("rabbitmq", "HES_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:9/", "RabbitMQ not reachable"),
        ("postgres", "HES_BENCH_PG", "host=127.0.0.1 port=9", "PostgreSQL not reachable"),
    ],
)
def test_an_unreachable_broker_is_named(
    broker: str, variable: str, address: str, named: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.broker_bench", "--jobs", "10", "--brokers", broker],
        cwd=ROOT, env={**os.environ, variable: address}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert named in proc.stderr and address in proc.stderr
