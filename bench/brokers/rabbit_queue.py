"""RabbitMQ: one quorum queue, persistent messages with publisher confirms, manual acks.

The broker pushes up to ``prefetch`` unacked messages to each consumer (basic.qos). There is
no lease: a consumer's unacked messages go back to the queue when its channel or connection
closes, which for a killed process is at once (the kernel closes its socket); a node that
hangs with its socket open keeps them until the AMQP heartbeat gives up on it (or the
broker's ``consumer_timeout``). The heartbeat asked for is the run's lease, so a hung node is
given up after a time comparable to the other candidates' (the default would be 60 s).
Messages coming back carry ``redelivered``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from bench.brokers.common import AMQP_URL, Broker, BrokerUnavailable, Delivery, job_of

#: Messages published before waiting for their confirms (the producer's window).
PUBLISH_WINDOW = 256


class _AmqpDelivery(Delivery):
    __slots__ = ("_msg",)

    def __init__(self, msg: AbstractIncomingMessage) -> None:
        super().__init__(job_of(msg.body), bool(msg.redelivered))
        self._msg = msg

    async def ack(self) -> None:
        await self._msg.ack()

    async def extend(self) -> None:
        """Nothing to do: the open connection is what keeps the message."""


class RabbitQueue(Broker):
    """Quorum queue ``hesbench.<run>`` on the default exchange."""

    name = "rabbitmq"

    @property
    def _queue(self) -> str:
        return f"hesbench.{self.spec.run_id}"

    async def connect(self) -> None:
        try:
            # The heartbeat is the lease of the other candidates (60 s by default): how long
            # the broker waits before it gives a silent, hung node's messages to another.
            sep = "&" if "?" in AMQP_URL else "?"
            url = f"{AMQP_URL}{sep}heartbeat={max(1, round(self.spec.lease_s))}"
            self._conn: AbstractConnection = await aio_pika.connect(url, timeout=3)
        except Exception as exc:
            raise BrokerUnavailable(f"RabbitMQ not reachable at {AMQP_URL}: {exc!r}") from exc
        self._channel: AbstractChannel = await self._conn.channel(publisher_confirms=True)
        self._inbox: asyncio.Queue[AbstractIncomingMessage] | None = None

    async def close(self) -> None:
        await self._conn.close()

    async def server_version(self) -> str:
        transport = self._conn.transport
        props = transport.connection.server_properties if transport is not None else {}
        version = props.get("version", b"?")
        return f"RabbitMQ {version.decode() if isinstance(version, bytes) else version}"

    async def create(self) -> None:
        await self._channel.declare_queue(
            self._queue, durable=True, arguments={"x-queue-type": "quorum"}
        )

    async def delete(self) -> None:
        await self._channel.queue_delete(self._queue)

    async def enqueue(self, bodies: Sequence[bytes]) -> None:
        exchange = self._channel.default_exchange
        persistent = aio_pika.DeliveryMode.PERSISTENT
        for first in range(0, len(bodies), PUBLISH_WINDOW):
            window = bodies[first : first + PUBLISH_WINDOW]
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(body, delivery_mode=persistent), routing_key=self._queue
                    )
                    for body in window
                )
            )

    async def subscribe(self) -> None:
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await self._channel.set_qos(prefetch_count=self.spec.prefetch)
        queue = await self._channel.get_queue(self._queue, ensure=True)

        async def arrived(msg: AbstractIncomingMessage) -> None:
            inbox.put_nowait(msg)

        await queue.consume(arrived, no_ack=False)
        self._inbox = inbox

    async def claim(self, n: int, timeout: float) -> list[Delivery]:
        if self._inbox is None:
            raise RuntimeError("RabbitQueue.claim before subscribe")
        got: list[Delivery] = []
        with contextlib.suppress(TimeoutError):
            got.append(_AmqpDelivery(await asyncio.wait_for(self._inbox.get(), timeout)))
        while got and len(got) < n and not self._inbox.empty():
            got.append(_AmqpDelivery(self._inbox.get_nowait()))
        return got
