"""One consumer node of the broker benchmark, as its own process (so it can be SIGKILLed).

Claims jobs as slots free up (a claim waits until a quarter of ``prefetch`` is free, so claims
come in batches), works on each concurrently, journals the claim and the completion, acks.
Stops on SIGTERM: claims no more, finishes what it holds, writes its CPU seconds since ready.

    python -m bench.brokers.worker --spec '{"broker": "nats", ...}' --journal FILE
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

from bench.brokers.common import Broker, BrokerUnavailable, Delivery, Journal, RunSpec
from bench.brokers.nats_queue import NatsQueue
from bench.brokers.pg_queue import PgQueue
from bench.brokers.rabbit_queue import RabbitQueue

#: The candidates by name, in the order they are measured.
BROKERS: dict[str, type[Broker]] = {
    "nats": NatsQueue,
    "rabbitmq": RabbitQueue,
    "postgres": PgQueue,
}
#: Longest wait of one claim on an empty queue (bounds how late a stop is seen).
CLAIM_WAIT_S = 0.5
#: How long a stopping consumer waits for its last acks, and for its connection to close.
STOP_GRACE_S = 5.0


async def _work(delivery: Delivery, spec: RunSpec, journal: Journal) -> None:
    remaining = spec.work_ms / 1000
    beat = spec.lease_s / 3
    while remaining > beat:
        await asyncio.sleep(beat)
        remaining -= beat
        await delivery.extend()
    await asyncio.sleep(remaining)
    journal.done(delivery.job)
    await delivery.ack()


async def consume(broker: Broker, journal: Journal, stop: asyncio.Event) -> None:
    """Claim and work until ``stop``; then finish the jobs in hand. Raises a job's error."""
    spec = broker.spec
    in_flight: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []
    low = max(1, spec.prefetch // 4)

    def finished(task: asyncio.Task[None]) -> None:
        in_flight.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            failures.append(error)
            stop.set()

    while not stop.is_set():
        free = spec.prefetch - len(in_flight)
        if free < low:
            await asyncio.wait(set(in_flight), return_when=asyncio.FIRST_COMPLETED)
            continue
        for delivery in await broker.claim(free, CLAIM_WAIT_S):
            journal.claimed(delivery.job, delivery.redelivered)
            task = asyncio.create_task(_work(delivery, spec, journal))
            in_flight.add(task)
            task.add_done_callback(finished)
    if in_flight:
        # Bounded: an ack on a connection the broker has closed (a node that hung too long)
        # may never complete.
        await asyncio.wait(set(in_flight), timeout=spec.work_ms / 1000 + STOP_GRACE_S)
    if failures:
        raise failures[0]
    if in_flight:
        raise TimeoutError(f"{len(in_flight)} jobs still unacked {STOP_GRACE_S} s after the stop")


async def run(spec: RunSpec, journal_path: Path) -> None:
    broker = BROKERS[spec.broker](spec)
    await broker.connect()
    journal = Journal(journal_path)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await broker.subscribe()
        cpu0 = time.process_time()
        journal.ready()
        await consume(broker, journal, stop)
        journal.usage(time.process_time() - cpu0)
    finally:
        journal.close()
        await asyncio.wait_for(broker.close(), STOP_GRACE_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the RunSpec as JSON")
    parser.add_argument("--journal", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        asyncio.run(run(RunSpec.from_json(args.spec), args.journal))
    except BrokerUnavailable as exc:
        print(f"broker worker: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
