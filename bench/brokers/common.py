"""What every candidate broker offers the benchmark, and the journal its consumers keep.

A ``Broker`` is one queue of one run (a stream, a queue or a table whose name carries the run
id): the producer side creates it, enqueues the link jobs and deletes it; a consumer claims up
to n jobs at a time, works on each and acks it. Every consumer process writes what it claims
and finishes to a journal file, one ``write`` per line, so the lines survive a SIGKILL and the
benchmark can tell afterwards which jobs were held by the killed node, which came back, and
whether any was lost or done twice.
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

#: Where the services are; the defaults are this machine's (PREAMBLE: all on loopback).
NATS_URL = os.environ.get("HES_BENCH_NATS", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("HES_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
PG_DSN = os.environ.get("HES_BENCH_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")


class BrokerUnavailable(RuntimeError):
    """The broker's service could not be reached (named, with the address tried)."""


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One measured run: which broker, the run's unique name and the consumer's settings."""

    broker: str
    run_id: str
    #: Ack wait (NATS), lease (PostgreSQL): how long a claimed job stays with its consumer
    #: without a sign of life. RabbitMQ has none: the consumer's connection is the lease.
    lease_s: float
    #: Jobs a consumer holds unacked at once (NATS max_ack_pending per pull, AMQP prefetch,
    #: the PostgreSQL claim size), each worked on concurrently, as a node runs many links.
    prefetch: int
    #: The simulated piece of work of each job (an asyncio sleep: it costs no CPU).
    work_ms: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))


class Delivery(ABC):
    """One claimed job: its id, whether the broker says it was delivered before, its ack."""

    __slots__ = ("job", "redelivered")

    def __init__(self, job: int, redelivered: bool) -> None:
        self.job = job
        self.redelivered = redelivered

    @abstractmethod
    async def ack(self) -> None:
        """The job is done: the broker forgets it."""

    @abstractmethod
    async def extend(self) -> None:
        """Still working: keep the lease (for a job longer than a third of it)."""


class Broker(ABC):
    """One run's queue on one broker, from the producer's side and the consumer's."""

    name: str

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection; BrokerUnavailable when the service does not answer."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connection (the queue stays)."""

    @abstractmethod
    async def create(self) -> None:
        """Make the run's queue (and its consumer group), before any consumer starts."""

    @abstractmethod
    async def delete(self) -> None:
        """Remove the run's queue and everything in it."""

    @abstractmethod
    async def enqueue(self, bodies: Sequence[bytes]) -> None:
        """Put the jobs on the queue; returns when the broker has them durably."""

    @abstractmethod
    async def server_version(self) -> str:
        """The broker server's version, for the figures."""

    @abstractmethod
    async def subscribe(self) -> None:
        """Consumer side: whatever must exist before the first claim."""

    @abstractmethod
    async def claim(self, n: int, timeout: float) -> list[Delivery]:
        """Up to n jobs for this consumer, waiting at most ``timeout`` s for the first."""


def job_of(body: bytes) -> int:
    """The job id of a payload (parsing it is part of the consumer's per-job cost)."""
    return int(json.loads(body)["job"])


class Journal:
    """A consumer's append-only record: ready, claims, completions, its CPU at the end.

    Lines: ``R t`` ready, ``C job t redelivered`` claimed, ``D job t`` done (written before
    the ack, so a kill between the two shows as work done twice, never as a job lost),
    ``U cpu_s`` CPU seconds from ready to stop. ``t`` is ``time.monotonic()``, one clock for
    every process of the machine on Linux.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _line(self, text: str) -> None:
        os.write(self._fd, text.encode() + b"\n")

    def ready(self) -> None:
        self._line(f"R {time.monotonic():.6f}")

    def claimed(self, job: int, redelivered: bool) -> None:
        self._line(f"C {job} {time.monotonic():.6f} {int(redelivered)}")

    def done(self, job: int) -> None:
        self._line(f"D {job} {time.monotonic():.6f}")

    def usage(self, cpu_s: float) -> None:
        self._line(f"U {cpu_s:.6f}")

    def close(self) -> None:
        os.close(self._fd)


@dataclass(slots=True)
class JournalRead:
    """What one consumer's journal says."""

    ready_at: float | None = None
    #: (job, t, redelivered) in order of claim.
    claims: list[tuple[int, float, bool]] | None = None
    #: (job, t) in order of completion.
    done: list[tuple[int, float]] | None = None
    cpu_s: float | None = None


def read_journal(path: Path) -> JournalRead:
    """Parse a journal; a last line cut by a kill is ignored."""
    out = JournalRead(claims=[], done=[])
    assert out.claims is not None and out.done is not None
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        kind = parts[0]
        if kind == "R" and len(parts) == 2:
            out.ready_at = float(parts[1])
        elif kind == "C" and len(parts) == 4:
            out.claims.append((int(parts[1]), float(parts[2]), parts[3] == "1"))
        elif kind == "D" and len(parts) == 3:
            out.done.append((int(parts[1]), float(parts[2])))
        elif kind == "U" and len(parts) == 2:
            out.cpu_s = float(parts[1])
    return out
