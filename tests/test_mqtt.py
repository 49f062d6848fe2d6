"""The MQTT outbox against the real Mosquitto on 127.0.0.1: order, durability, a dead broker,
a stalled broker (a delaying TCP proxy) and a SIGKILLed producer.

Every test publishes under a topic prefix with a fresh uuid, so parallel runs never mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from collector.mqtt import MqttOutbox, OutboxError, parse_mqtt_url
from collector.mqtt_payloads import (
    alarm_payload,
    encode_payload,
    events_payload,
    meter_topic,
    profile_payload,
    registers_payload,
)
from storage.records import Event, IntervalRead, RegisterRead

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 20.0


def _prefix() -> str:
    return f"hes-test-{uuid.uuid4().hex[:12]}"


def _closed_port() -> int:
    """A port on 127.0.0.1 that was just bound and closed: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Subscriber:
    """Collects every message under ``<prefix>/#`` with QoS 1."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[aiomqtt.Message] = []
        self._arrived = asyncio.Event()

    async def _collect(self) -> None:
        async for message in self.client.messages:
            self.messages.append(message)
            self._arrived.set()

    async def wait_for(self, count: int) -> list[aiomqtt.Message]:
        async def enough() -> None:
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(enough(), WAIT_S)
        return self.messages


@contextlib.asynccontextmanager
async def subscribed(broker: tuple[str, int], prefix: str) -> AsyncIterator[Subscriber]:
    host, port = broker
    async with aiomqtt.Client(host, port, identifier=f"{prefix}-sub") as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        sub = Subscriber(client)
        task = asyncio.create_task(sub._collect())
        try:
            yield sub
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


async def until(cond: Callable[[], bool], what: str) -> None:
    """Poll a condition (bounded): the outbox works in the background."""

    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), WAIT_S)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def _outbox(spool: Path, url: str, prefix: str, **kw: Any) -> MqttOutbox:
    kw.setdefault("backoff_min_s", 0.05)
    kw.setdefault("backoff_max_s", 0.2)
    kw.setdefault("connect_timeout_s", 5.0)
    return MqttOutbox(
        spool, url, client_id=f"{prefix}-{uuid.uuid4().hex[:6]}", topic_prefix=prefix, **kw
    )


def _payload(i: int) -> dict[str, Any]:
    ts = datetime(2026, 11, 22, tzinfo=UTC) + timedelta(minutes=15 * i)
    return {"seq": i, "ts": ts, "value": i * 0.5, "meter": f"M{i % 3}"}


# -- URL and payload contracts (no broker) ---------------------------------------------------


def test_url_forms() -> None:
    u = parse_mqtt_url("mqtt://alice:s%40cret@broker.example:8883")
    assert (u.host, u.port, u.username, u.password) == ("broker.example", 8883, "alice", "s@cret")
    assert "s@cret" not in str(u) and "s@cret" not in repr(u)
    assert parse_mqtt_url("mqtt://127.0.0.1").port == 1883
    assert parse_mqtt_url("mqtt://bob@h:1/").username == "bob"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://h:1883", "scheme"),
        ("mqtt://:1883", "no host"),
        ("mqtt://h:99999", "port"),
        ("mqtt://h:0", "port"),
        ("mqtt://h:abc", "port"),
        ("mqtt://h/topic", "path"),
        ("broker:1883", "scheme"),
        ("", "empty"),
    ],
)
def test_bad_url_is_named(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        parse_mqtt_url(url)
    assert "bad MQTT URL" in str(info.value)


def test_bad_url_hides_password(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        MqttOutbox(tmp_path / "s.db", "mqtt://u:topsecret@h:notaport")
    assert "topsecret" not in str(info.value) and "u:***@h:notaport" in str(info.value)
    outbox = MqttOutbox(tmp_path / "s.db", "mqtt://u:topsecret@h:1")
    assert "topsecret" not in repr(outbox) and "u:***@h:1" in repr(outbox)


def test_payload_encoding() -> None:
    cet = timezone(timedelta(hours=1))
    data = encode_payload(
        {
            "a": datetime(2026, 11, 22, 1, 15, tzinfo=cet),
            "naive": datetime(2026, 11, 22, 0, 0),
            "raw": b"\x01\xab",
            "nested": [{"x": (1, 2)}],
            "text": "Zähler",
        }
    )
    assert (
        data
        == (
            '{"a":"2026-11-22T00:15:00Z","naive":"2026-11-22T00:00:00Z","raw":"01ab",'
            '"nested":[{"x":[1,2]}],"text":"Zähler"}'
        ).encode()
    )
    with pytest.raises(ValueError, match=r"payload\.v\[1\]"):
        encode_payload({"v": [1.0, math.nan]})
    with pytest.raises(TypeError, match=r"payload\.obj: object"):
        encode_payload({"obj": object()})
    with pytest.raises(TypeError, match="must be a dict"):
        encode_payload([1, 2])  # type: ignore[arg-type]


def test_payload_schemas() -> None:
    ts = datetime(2026, 11, 22, 0, 15, tzinfo=UTC)
    p = json.loads(
        encode_payload(
            profile_payload(
                "M1",
                [
                    IntervalRead("M1", "1.0.1.8.0.255:2", ts + timedelta(minutes=15), 1235, -3, 0),
                    IntervalRead("M1", "1.0.1.8.0.255:2", ts, 1234, -3, 8),
                ],
                run_id="r1",
                complete=True,
            )
        )
    )
    assert p["schema"] == 1 and p["kind"] == "profile" and p["meter_id"] == "M1"
    assert p["run_id"] == "r1" and p["complete"] is True
    assert p["intervals"][0] == {
        "channel": "1.0.1.8.0.255:2",
        "ts": "2026-11-22T00:15:00Z",
        "raw": 1234,
        "scaler": -3,
        "value": 1.234,
        "status": 8,
    }
    assert p["intervals"][1]["ts"] == "2026-11-22T00:30:00Z"
    r = json.loads(
        encode_payload(registers_payload("M1", [RegisterRead("M1", "1.0.1.8.0.255", ts, 7, 2, 30)]))
    )
    assert r["registers"] == [
        {
            "obis": "1.0.1.8.0.255",
            "ts": "2026-11-22T00:15:00Z",
            "raw": 7,
            "scaler": 2,
            "value": 700,
            "unit": 30,
            "capture_time": None,
        }
    ]
    e = json.loads(
        encode_payload(events_payload("M1", [Event("M1", "0.0.99.98.0.255", ts, 1, "power down")]))
    )
    assert e["events"] == [
        {
            "log_obis": "0.0.99.98.0.255",
            "ts": "2026-11-22T00:15:00Z",
            "code": 1,
            "name": "power down",
        }
    ]
    a = json.loads(encode_payload(alarm_payload("M1", ts, 40, "cover opened")))
    assert (a["kind"], a["ts"], a["code"], a["name"]) == (
        "alarm",
        "2026-11-22T00:15:00Z",
        40,
        "cover opened",
    )
    assert meter_topic("M1", "events") == "M1/events"
    for bad in ("a/b", "a+", "#", ""):
        with pytest.raises(ValueError, match="meter id"):
            meter_topic(bad, "profile")
    with pytest.raises(ValueError, match="kind"):
        meter_topic("M1", "profiles")


def test_bad_payload_spools_nothing(tmp_path: Path) -> None:
    outbox = MqttOutbox(tmp_path / "s.db", "mqtt://127.0.0.1:1")
    with pytest.raises(ValueError, match="nan"):
        outbox.enqueue_many([("M1/profile", {"ok": 1}), ("M2/profile", {"bad": math.nan})])
    with pytest.raises(ValueError, match="topic"):
        outbox.enqueue("M1/#", {"ok": 1})
    assert outbox.pending() == 0
    outbox.enqueue("M1/profile", {"ok": 1})
    assert outbox.pending() == 1


async def test_enqueue_after_close_is_refused(tmp_path: Path) -> None:
    outbox = MqttOutbox(tmp_path / "s.db", f"mqtt://127.0.0.1:{_closed_port()}")
    await outbox.close(timeout=0)
    with pytest.raises(OutboxError, match="closed"):
        outbox.enqueue("M1/profile", {"x": 1})


# -- against the broker ---------------------------------------------------------------------


async def test_delivers_in_order_exact_payloads(
    tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    prefix = _prefix()
    host, port = mqtt_broker
    n = 300
    async with subscribed(mqtt_broker, prefix) as sub:
        outbox = _outbox(tmp_path / "spool.db", f"mqtt://{host}:{port}", prefix, batch_size=50)
        runner = asyncio.create_task(outbox.run())
        sent = []
        for i in range(n):
            kind = ("profile", "registers", "events", "alarm")[i % 4]
            outbox.enqueue_meter(f"M{i % 3}", kind, _payload(i))  # type: ignore[arg-type]
            sent.append((f"{prefix}/M{i % 3}/{kind}", encode_payload(_payload(i))))
        got = await sub.wait_for(n)
        await until(lambda: outbox.pending() == 0, "the spool to drain")
        await outbox.close(timeout=10)
        await asyncio.wait_for(runner, WAIT_S)
    assert [(m.topic.value, m.payload) for m in got] == sent
    assert all(m.qos == 1 for m in got)
    assert json.loads(got[1].payload)["ts"] == "2026-11-22T00:15:00Z"
    assert outbox.stats.published == n and outbox.stats.failed_attempts == 0


async def test_broker_down_keeps_everything_then_delivers(
    tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    prefix = _prefix()
    spool = tmp_path / "spool.db"
    dead = _outbox(spool, f"mqtt://127.0.0.1:{_closed_port()}", prefix)
    runner = asyncio.create_task(dead.run())
    n = 200
    for i in range(n // 2):
        dead.enqueue(f"M{i % 3}/profile", _payload(i))
    await until(lambda: dead.stats.failed_attempts >= 2, "two failed connection attempts")
    for i in range(n // 2, n):
        dead.enqueue(f"M{i % 3}/profile", _payload(i))
    assert dead.pending() == n
    assert not runner.done()  # broker errors never escape run()
    assert dead.stats.published == 0 and dead.stats.last_error
    await dead.close(timeout=0.5)
    await asyncio.wait_for(runner, WAIT_S)

    host, port = mqtt_broker
    async with subscribed(mqtt_broker, prefix) as sub:
        live = _outbox(spool, f"mqtt://{host}:{port}", prefix)
        assert live.pending() == n
        await live.close(timeout=WAIT_S)  # close() without run(): flush within the timeout
        got = await sub.wait_for(n)
    assert [json.loads(m.payload)["seq"] for m in got] == list(range(n))
    assert live.stats.published == n


async def test_close_on_dead_broker_is_bounded_and_keeps_messages(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    outbox = _outbox(spool, f"mqtt://127.0.0.1:{_closed_port()}", _prefix())
    outbox.enqueue("M1/alarm", {"code": 1})
    await asyncio.wait_for(outbox.close(timeout=0.3), WAIT_S)
    again = MqttOutbox(spool, "mqtt://127.0.0.1:1")
    assert again.pending() == 1


class DelayProxy:
    """A TCP proxy to the broker that delays every client→broker chunk and can freeze."""

    def __init__(self, target: tuple[str, int], delay_s: float) -> None:
        self.target = target
        self.delay_s = delay_s
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slow: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if slow:
                    await asyncio.sleep(self.delay_s)
                    await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            writer.transport.abort()
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for coro in (
            self._pipe(reader, up_writer, slow=True),
            self._pipe(up_reader, writer, slow=False),
        ):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drop(self) -> None:
        """Cut every open connection (bytes held back are lost), keep accepting new ones."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop()


async def test_slow_and_stalled_broker_never_blocks_enqueue(
    tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    prefix = _prefix()
    proxy = DelayProxy(mqtt_broker, delay_s=0.02)
    await proxy.start()
    try:
        async with subscribed(mqtt_broker, prefix) as sub:
            outbox = _outbox(tmp_path / "spool.db", f"mqtt://127.0.0.1:{proxy.port}", prefix)
            runner = asyncio.create_task(outbox.run())
            outbox.enqueue("M0/profile", _payload(0))
            await sub.wait_for(1)  # through the slow proxy
            await until(lambda: outbox.pending() == 0, "the first PUBACK")
            proxy.flowing.clear()  # the broker now accepts nothing from us
            n = 150
            for i in range(1, n):
                outbox.enqueue(f"M{i % 3}/profile", _payload(i))
            # Nothing can be acknowledged while stalled: every enqueue returned regardless.
            assert outbox.pending() == n - 1
            assert not runner.done()
            proxy.flowing.set()
            got = await sub.wait_for(n)
            await until(lambda: outbox.pending() == 0, "the spool to drain")
            await outbox.close(timeout=10)
            await asyncio.wait_for(runner, WAIT_S)
        assert [json.loads(m.payload)["seq"] for m in got] == list(range(n))
    finally:
        await proxy.close()


_CHILD = """
import asyncio, sys
from collector.mqtt import MqttOutbox

async def main() -> None:
    outbox = MqttOutbox(sys.argv[1], sys.argv[2], client_id=sys.argv[3], topic_prefix=sys.argv[3],
                        backoff_min_s=0.05, backoff_max_s=0.2)
    runner = asyncio.create_task(outbox.run())
    for i in range(int(sys.argv[4])):
        outbox.enqueue(f"M{i % 3}/profile", {"seq": i})
        print(i, flush=True)
        await asyncio.sleep(0.001)
    print("done", flush=True)
    await runner

asyncio.run(main())
"""


def _enqueue_then_kill(spool: Path, prefix: str, n: int, kill_after: int) -> int:
    """Run the child until it reported ``kill_after`` returned enqueues, SIGKILL it; returns
    the highest sequence number it reported (a watchdog bounds the whole thing)."""
    dead_url = f"mqtt://127.0.0.1:{_closed_port()}"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(spool), dead_url, prefix, str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    assert child.stdout is not None
    watchdog = threading.Timer(WAIT_S, child.kill)
    watchdog.start()
    reported = -1
    try:
        for line in child.stdout:
            if line.strip() == "done":
                break
            reported = int(line)
            if reported >= kill_after:
                child.send_signal(signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        child.kill()
        child.wait(timeout=WAIT_S)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL, "the child was not killed by SIGKILL"
    return reported


async def test_spool_survives_sigkill(tmp_path: Path, mqtt_broker: tuple[str, int]) -> None:
    prefix = _prefix()
    spool = tmp_path / "spool.db"
    n = 5000
    reported = await asyncio.to_thread(_enqueue_then_kill, spool, prefix, n, 300)
    assert reported >= 300

    host, port = mqtt_broker
    async with subscribed(mqtt_broker, prefix) as sub:
        outbox = _outbox(spool, f"mqtt://{host}:{port}", prefix)
        spooled = outbox.pending()
        # Every enqueue that returned before the kill is in the spool (maybe a few more).
        assert reported < spooled <= n
        await outbox.close(timeout=WAIT_S)
        got = await sub.wait_for(spooled)
    assert [json.loads(m.payload)["seq"] for m in got] == list(range(spooled))


async def test_reconnects_after_connection_drop(
    tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    prefix = _prefix()
    proxy = DelayProxy(mqtt_broker, delay_s=0.0)
    await proxy.start()
    try:
        async with subscribed(mqtt_broker, prefix) as sub:
            outbox = _outbox(tmp_path / "spool.db", f"mqtt://127.0.0.1:{proxy.port}", prefix)
            runner = asyncio.create_task(outbox.run())
            outbox.enqueue("M0/events", _payload(0))
            await sub.wait_for(1)
            await until(lambda: outbox.pending() == 0, "the first PUBACK")
            proxy.flowing.clear()
            n = 40
            for i in range(1, n):
                outbox.enqueue(f"M{i % 3}/events", _payload(i))
            await proxy.drop()  # the broker "goes away" with 39 publishes unacknowledged
            await until(lambda: outbox.stats.failed_attempts >= 1, "the drop to be noticed")
            assert outbox.pending() == n - 1
            proxy.flowing.set()
            got = await sub.wait_for(n)
            await until(lambda: outbox.pending() == 0, "the spool to drain")
            assert outbox.stats.connects >= 2
            await outbox.close(timeout=10)
            await asyncio.wait_for(runner, WAIT_S)
        assert [json.loads(m.payload)["seq"] for m in got] == list(range(n))
    finally:
        await proxy.close()


async def test_one_publisher_per_spool(tmp_path: Path, mqtt_broker: tuple[str, int]) -> None:
    """Two outboxes (as two processes would) share a spool: both enqueue, both run, yet each
    message goes out once, because only the holder of the spool lock publishes."""
    prefix = _prefix()
    host, port = mqtt_broker
    spool = tmp_path / "spool.db"
    async with subscribed(mqtt_broker, prefix) as sub:
        first = _outbox(spool, f"mqtt://{host}:{port}", prefix)
        second = _outbox(spool, f"mqtt://{host}:{port}", prefix)
        runners = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
        n = 200
        for i in range(n):
            (first if i % 2 else second).enqueue(f"M{i % 3}/registers", _payload(i))
        got = await sub.wait_for(n)
        await until(lambda: first.pending() == 0, "the spool to drain")
        await first.close(timeout=10)
        await second.close(timeout=10)
        await asyncio.wait_for(asyncio.gather(*runners), WAIT_S)
        await asyncio.sleep(0.2)  # let any duplicate arrive before counting
    assert sorted(json.loads(m.payload)["seq"] for m in got) == list(range(n))
    assert first.stats.published + second.stats.published == n
