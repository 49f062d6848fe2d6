"""PostgreSQL: a jobs table claimed with ``FOR UPDATE SKIP LOCKED`` and a lease column.

Plain psycopg (the driver the project already uses; procrastinate was not used: its stalled
jobs come back only when a worker calls its retry of stalled jobs, and the point here is the
bare mechanism). A claim is one autocommit statement: the oldest rows whose lease is free or
expired get ``lease_until = now + lease`` and this consumer as owner, so a killed node's jobs
are claimed again once their lease runs out. The ack deletes the row if this consumer still
owns it (a node whose lease was taken over acks nothing). A long job extends its lease. An
empty queue is polled every ``POLL_S``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from bench.brokers.common import PG_DSN, Broker, BrokerUnavailable, Delivery, job_of

#: How often an idle consumer asks again (also the resolution of lease expiry).
POLL_S = 0.02
#: Rows per producer transaction (COPY), as the other producers' publish window.
INSERT_BATCH = 256


class _PgDelivery(Delivery):
    __slots__ = ("_queue", "_row")

    def __init__(self, queue: PgQueue, row: int, body: bytes, attempts: int) -> None:
        super().__init__(job_of(body), attempts > 1)
        self._queue = queue
        self._row = row

    async def ack(self) -> None:
        await self._queue.execute(
            f"DELETE FROM {self._queue.table} WHERE id = %s AND owner = %s",
            (self._row, self._queue.owner),
        )

    async def extend(self) -> None:
        await self._queue.execute(
            f"UPDATE {self._queue.table} SET lease_until = clock_timestamp()"
            " + make_interval(secs => %s) WHERE id = %s AND owner = %s",
            (self._queue.spec.lease_s, self._row, self._queue.owner),
        )


class PgQueue(Broker):
    """Table ``hesbench_<run>.jobs`` in the test database."""

    name = "postgres"

    @property
    def _schema(self) -> str:
        return f"hesbench_{self.spec.run_id}"

    @property
    def table(self) -> str:
        return f"{self._schema}.jobs"

    async def connect(self) -> None:
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                PG_DSN, autocommit=True, connect_timeout=3
            )
        except Exception as exc:
            raise BrokerUnavailable(f"PostgreSQL not reachable at {PG_DSN!r}: {exc!r}") from exc
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    async def close(self) -> None:
        await self._conn.close()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One autocommit statement; its rows when it returns some."""
        async with self._conn.cursor() as cur:
            await cur.execute(sql.encode(), params)
            return await cur.fetchall() if cur.description else []

    async def server_version(self) -> str:
        rows = await self.execute("SHOW server_version")
        return f"PostgreSQL {rows[0][0]}"

    async def create(self) -> None:
        await self.execute(f"CREATE SCHEMA {self._schema}")
        await self.execute(
            f"CREATE TABLE {self.table} (id bigserial PRIMARY KEY, body bytea NOT NULL,"
            " lease_until timestamptz, owner text, attempts integer NOT NULL DEFAULT 0)"
        )

    async def delete(self) -> None:
        await self.execute(f"DROP SCHEMA IF EXISTS {self._schema} CASCADE")

    async def enqueue(self, bodies: Sequence[bytes]) -> None:
        for first in range(0, len(bodies), INSERT_BATCH):
            async with self._conn.transaction(), self._conn.cursor() as cur:
                async with cur.copy(f"COPY {self.table} (body) FROM STDIN".encode()) as copy:
                    for body in bodies[first : first + INSERT_BATCH]:
                        await copy.write_row((body,))

    async def subscribe(self) -> None:
        """Nothing to set up: a claim is one statement on the table."""

    async def claim(self, n: int, timeout: float) -> list[Delivery]:
        sql = (
            f"UPDATE {self.table} j SET lease_until = clock_timestamp()"
            " + make_interval(secs => %s), owner = %s, attempts = j.attempts + 1"
            f" FROM (SELECT id FROM {self.table} WHERE lease_until IS NULL"
            " OR lease_until < clock_timestamp() ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) c"
            " WHERE j.id = c.id RETURNING j.id, j.body, j.attempts"
        )
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.execute(sql, (self.spec.lease_s, self.owner, n))
            if rows or time.monotonic() >= deadline:
                return [_PgDelivery(self, row, bytes(body), tries) for row, body, tries in rows]
            await asyncio.sleep(POLL_S)
