"""NATS JetStream: a work-queue stream and one durable pull consumer shared by every node.

Work-queue retention removes a message once it is acked; explicit acks with ``ack_wait`` =
the lease: a message not acked in time (its consumer died, or hung) is delivered again to
whichever node pulls next. A job longer than a third of the lease sends in-progress acks,
which restart the server's ack timer. Each node pulls as many messages as it has free slots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from bench.brokers.common import NATS_URL, Broker, BrokerUnavailable, Delivery, job_of

#: Messages published before waiting for their acks (the producer's window).
PUBLISH_WINDOW = 256


class _NatsDelivery(Delivery):
    __slots__ = ("_msg",)

    def __init__(self, msg: Msg) -> None:
        super().__init__(job_of(msg.data), msg.metadata.num_delivered > 1)
        self._msg = msg

    async def ack(self) -> None:
        await self._msg.ack()

    async def extend(self) -> None:
        await self._msg.in_progress()


class NatsQueue(Broker):
    """Stream ``HESBENCH_<run>`` on subject ``hesbench.<run>.jobs``, consumer ``workers``."""

    name = "nats"

    @property
    def _stream(self) -> str:
        return f"HESBENCH_{self.spec.run_id}"

    @property
    def _subject(self) -> str:
        return f"hesbench.{self.spec.run_id}.jobs"

    async def connect(self) -> None:
        errors: list[Exception] = []

        async def error(exc: Exception) -> None:
            errors.append(exc)

        where = urlsplit(NATS_URL)
        try:
            # nats.connect itself retries a refused server: a plain connect first fails at
            # once, and the wait_for bounds the rest.
            _reader, probe = await asyncio.wait_for(
                asyncio.open_connection(where.hostname, where.port or 4222), timeout=3
            )
            probe.close()
            self._nc: Client = await asyncio.wait_for(
                nats.connect(NATS_URL, connect_timeout=3, allow_reconnect=False, error_cb=error),
                timeout=5,
            )
        except Exception as exc:
            cause = errors[0] if errors else exc
            raise BrokerUnavailable(f"NATS not reachable at {NATS_URL}: {cause!r}") from exc
        self._js: JetStreamContext = self._nc.jetstream()
        self._sub: JetStreamContext.PullSubscription | None = None

    async def close(self) -> None:
        await self._nc.close()

    async def server_version(self) -> str:
        return f"nats-server {self._nc.connected_server_version}"

    async def create(self) -> None:
        await self._js.add_stream(
            StreamConfig(
                name=self._stream,
                subjects=[self._subject],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
            )
        )
        await self._js.add_consumer(
            self._stream,
            ConsumerConfig(
                durable_name="workers",
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.spec.lease_s,
                max_deliver=-1,
                max_ack_pending=-1,
                filter_subject=self._subject,
            ),
        )

    async def delete(self) -> None:
        await self._js.delete_stream(self._stream)

    async def enqueue(self, bodies: Sequence[bytes]) -> None:
        for first in range(0, len(bodies), PUBLISH_WINDOW):
            window = bodies[first : first + PUBLISH_WINDOW]
            await asyncio.gather(*(self._js.publish(self._subject, body) for body in window))

    async def subscribe(self) -> None:
        self._sub = await self._js.pull_subscribe_bind("workers", stream=self._stream)

    async def claim(self, n: int, timeout: float) -> list[Delivery]:
        if self._sub is None:
            raise RuntimeError("NatsQueue.claim before subscribe")
        try:
            msgs = await self._sub.fetch(batch=n, timeout=timeout)
        except TimeoutError:  # nats' own and the plain asyncio one, both raised by fetch
            return []
        return [_NatsDelivery(msg) for msg in msgs]
