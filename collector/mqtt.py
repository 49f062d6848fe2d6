"""Durable MQTT outbox: collection never waits for the broker and no message is lost.

The collector calls :meth:`MqttOutbox.enqueue` (synchronous, a single SQLite insert) and goes on
reading meters; :meth:`MqttOutbox.run` publishes the spooled messages in enqueue order with QoS 1
and deletes each one only after the broker acknowledged it (PUBACK). A broker that is down, slow
or refusing us only makes the spool grow; the publisher reconnects with capped exponential backoff
and jitter, and what is left at shutdown stays in the spool for the next process.

The spool is a SQLite file of its own (not the main database), so a deployment on PostgreSQL
still has a local, durable queue that works when the network does not.

Guarantees (see docs/mqtt.md):

* once ``enqueue`` has returned, the message is committed to the spool's write-ahead log and
  survives a crash or SIGKILL of the process; with ``fsync=True`` it also survives a power loss
  or OS crash (each enqueue then waits for an fsync);
* delivery is at least once: a message whose PUBACK was lost (connection dropped, process killed
  between the ack and the delete) is published again, so subscribers must tolerate duplicates;
* order: messages are published in enqueue order over one connection; only a re-sent message
  (previous bullet) can arrive after later ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from collector.mqtt_payloads import Kind, encode_payload, meter_topic

log = logging.getLogger("hes.mqtt")


_SPOOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at REAL NOT NULL
)
"""


class OutboxError(Exception):
    """The spool itself failed (unwritable file, closed outbox): not a broker problem."""


@dataclass(frozen=True, slots=True)
class MqttUrl:
    """A parsed ``mqtt://[user[:password]@]host[:port]``; ``str()`` masks the password."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    def __str__(self) -> str:
        auth = ""
        if self.username is not None:
            auth = self.username + (":***" if self.password is not None else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{auth}{host}:{self.port}"


def _mask(url: str) -> str:
    """The URL as given, with any password replaced, for error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "***@" + url.rpartition("@")[2]
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{hostpart}"


def parse_mqtt_url(url: str) -> MqttUrl:
    """Parse a broker URL; a bad one raises ValueError naming it (password masked)."""
    shown = _mask(url)

    def bad(reason: str) -> ValueError:
        return ValueError(
            f"bad MQTT URL {shown!r}: {reason} (expected mqtt://[user[:password]@]host[:port])"
        )

    if not isinstance(url, str) or not url.strip():
        raise bad("empty")
    parts = urlsplit(url.strip())
    if parts.scheme.lower() != "mqtt":
        raise bad(f"scheme must be 'mqtt', got {parts.scheme or 'none'!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad("no path, query or fragment allowed")
    try:
        port = parts.port
    except ValueError:
        raise bad("port must be a number 1..65535") from None
    if port == 0:
        raise bad("port must be a number 1..65535")
    host = parts.hostname
    if not host:
        raise bad("no host")
    username = unquote(parts.username) if parts.username is not None else None
    if username == "":
        raise bad("empty user name")
    password = unquote(parts.password) if parts.password is not None else None
    return MqttUrl(host=host, port=port or 1883, username=username, password=password)


# -- payloads ---------------------------------------------------------------------------------


# -- the outbox -------------------------------------------------------------------------------


@dataclass(slots=True)
class OutboxStats:
    """Counters since this outbox was opened (the spool itself is counted by ``pending()``)."""

    enqueued: int = 0
    published: int = 0  # acknowledged by the broker and removed from the spool
    failed_attempts: int = 0  # connections or publishes that failed (each followed by a retry)
    connects: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class MqttOutbox:
    """A SQLite spool of outgoing MQTT messages and the asyncio loop that publishes it.

    One ``run()`` per spool publishes at a time (an advisory lock on ``<spool>.lock``); other
    processes may enqueue into the same spool, and their ``run()`` waits for the lock, so a
    second publisher takes over when the first one exits or dies.
    """

    def __init__(
        self,
        spool_path: str | os.PathLike[str],
        mqtt_url: str,
        *,
        client_id: str = "hes-collector",
        qos: int = 1,
        topic_prefix: str = "hes",
        fsync: bool = False,
        batch_size: int = 100,
        publish_timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        keepalive_s: int = 30,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.url = parse_mqtt_url(mqtt_url)
        if qos not in (0, 1, 2):
            raise ValueError(f"MQTT qos must be 0, 1 or 2, got {qos!r}")
        prefix = topic_prefix.strip("/")
        if any(c in prefix for c in "+#\0"):
            raise ValueError(f"MQTT topic prefix {topic_prefix!r} must not contain +, # or NUL")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.client_id = client_id
        self.qos = qos
        self.topic_prefix = prefix
        self.batch_size = batch_size
        self.publish_timeout_s = publish_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.spool_path = Path(spool_path)
        self.stats = OutboxStats()
        self._lock = threading.Lock()
        self._conn = self._open_spool(self.spool_path, fsync)
        self._closed = False
        self._closing = False
        self._abandoned = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()

    def __repr__(self) -> str:
        spool, url = str(self.spool_path), str(self.url)
        return f"MqttOutbox({spool!r}, {url!r}, client_id={self.client_id!r})"

    # -- spool ----------------------------------------------------------------------------

    @staticmethod
    def _open_spool(path: Path, fsync: bool) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            conn.execute(_SPOOL_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open MQTT spool {str(path)!r}: {exc}") from exc
        return conn

    def _spool(self, fn: Callable[[sqlite3.Connection], Any], action: str) -> Any:
        with self._lock:
            if self._closed:
                raise OutboxError(f"MQTT outbox on {str(self.spool_path)!r} is closed")
            try:
                return fn(self._conn)
            except sqlite3.Error as exc:
                raise OutboxError(f"MQTT spool {str(self.spool_path)!r}: {action}: {exc}") from exc

    def full_topic(self, topic: str) -> str:
        """Broker topic of a prefix-relative topic: ``M1/profile`` → ``hes/M1/profile``."""
        if not topic or any(c in topic for c in "+#\0"):
            raise ValueError(f"MQTT topic {topic!r} must be non-empty without +, # or NUL")
        topic = topic.strip("/")
        return f"{self.topic_prefix}/{topic}" if self.topic_prefix else topic

    def enqueue(self, topic: str, payload: Mapping[str, Any]) -> None:
        """Spool one message for ``<prefix>/<topic>``; durable once this returns, never waits
        for the broker. A payload that is not JSON-able raises TypeError/ValueError naming the
        field, a spool failure raises :class:`OutboxError`."""
        self.enqueue_many([(topic, payload)])

    def enqueue_many(self, messages: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Spool several messages in one transaction (all or none)."""
        now = time.time()
        rows = [(self.full_topic(t), encode_payload(p), now) for t, p in messages]
        if not rows:
            return

        def insert(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT INTO outbox (topic, payload, enqueued_at) VALUES (?, ?, ?)", rows
                )

        self._spool(insert, "enqueue")
        self.stats.enqueued += len(rows)
        self._notify()

    def enqueue_meter(self, meter_id: str, kind: Kind, payload: Mapping[str, Any]) -> None:
        """Spool a payload for ``<prefix>/<meter>/<kind>``."""
        self.enqueue(meter_topic(meter_id, kind), payload)

    def meter_publisher(self, kind: Kind = "profile") -> Callable[[str, dict[str, Any]], None]:
        """A ``publish(meter_id, payload)`` callable for the collector service."""

        def publish(meter_id: str, payload: dict[str, Any]) -> None:
            self.enqueue_meter(meter_id, kind, payload)

        return publish

    def pending(self) -> int:
        """Messages in the spool (from every process enqueuing into it), not yet acknowledged."""
        row = self._spool(lambda c: c.execute("SELECT count(*) FROM outbox").fetchone(), "count")
        return int(row[0])

    def _fetch(self, after: int, limit: int) -> list[tuple[int, str, bytes]]:
        return list(
            self._spool(
                lambda c: c.execute(
                    "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                    (after, limit),
                ).fetchall(),
                "read",
            )
        )

    def _delete(self, ids: list[int]) -> None:
        if not ids:
            return

        def delete(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

        self._spool(delete, "delete acknowledged")
        self.stats.published += len(ids)

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # -- publisher ------------------------------------------------------------------------

    async def run(self) -> None:
        """Publish the spool until :meth:`close` (or cancellation); never raises on broker
        errors: they are logged, counted in ``stats`` and retried with backoff."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("MqttOutbox.run() is already running")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        if self._closing:
            self._stop.set()
        self._task = asyncio.current_task()
        try:
            lock_fd = await self._acquire_publisher_lock()
            if lock_fd is None:
                return
            try:
                await self._publish_loop()
            finally:
                os.close(lock_fd)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._abandoned and task is not None and task.uncancel() == 0:
                return  # close() ran out of time: a normal end, the rest stays spooled
            raise

    async def _acquire_publisher_lock(self) -> int | None:
        assert self._stop is not None
        path = f"{self.spool_path}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if not told:
                    log.info("mqtt_spool_busy", extra={"fields": {"spool": str(self.spool_path)}})
                    told = True
            if self._stop.is_set():
                os.close(fd)
                return None
            try:
                await asyncio.wait_for(self._stop.wait(), 1.0)
            except TimeoutError:
                pass
            except BaseException:
                os.close(fd)
                raise

    async def _publish_loop(self) -> None:
        assert self._stop is not None and self._wake is not None
        failures = 0
        while True:
            if self._stop.is_set() and self.pending() == 0:
                return
            if not self._stop.is_set() and self.pending() == 0:
                self._wake.clear()
                if self.pending() == 0:
                    await _first(self._wake.wait(), self._stop.wait())
                continue
            try:
                await self._session()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or spool trouble: log, back off, try again
                failures += 1
                self.stats.failed_attempts += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "mqtt_publish_failed",
                    extra={
                        "fields": {
                            "broker": str(self.url),
                            "error": self.stats.last_error,
                            "failures": failures,
                        }
                    },
                )
                delay = min(self.backoff_max_s, self.backoff_min_s * 2 ** min(failures - 1, 16))
                delay *= 0.5 + self._rng.random() / 2
                if self._stop.is_set():
                    # Closing: keep retrying until close()'s timeout cancels us.
                    await asyncio.sleep(delay)
                else:
                    # close() cuts the wait short for one last prompt attempt.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), delay)

    async def _session(self) -> None:
        """One connection: keep up to ``batch_size`` publishes in flight (a sliding window, so
        acknowledgements never wait on an idle line), delete each one once acknowledged, and
        return when closing with nothing left; raise on any broker failure."""
        assert self._stop is not None and self._wake is not None
        client = aiomqtt.Client(
            self.url.host,
            self.url.port,
            username=self.url.username,
            password=self.url.password,
            identifier=self.client_id,
            timeout=self.connect_timeout_s,
            keepalive=self.keepalive_s,
            logger=logging.getLogger("hes.mqtt.client"),
            max_inflight_messages=self.batch_size,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        # A full window is in flight by design: not worth aiomqtt's "pending calls" warning.
        client.pending_calls_threshold = self.batch_size + 10
        async with client:
            self.stats.connects += 1
            log.info(
                "mqtt_connected",
                extra={"fields": {"broker": str(self.url), "pending": self.pending()}},
            )
            watcher = asyncio.ensure_future(_until_disconnected(client))
            inflight: dict[int, asyncio.Future[None]] = {}
            progress = asyncio.Event()
            last_id = 0
            try:
                while True:
                    self._wake.clear()
                    progress.clear()
                    room = self.batch_size - len(inflight)
                    rows = self._fetch(last_id, room) if room > 0 else []
                    for row_id, topic, payload in rows:
                        # Tasks start in creation order, so paho sends them in spool order.
                        fut: asyncio.Future[None] = asyncio.ensure_future(
                            client.publish(
                                topic, payload, qos=self.qos, timeout=self.publish_timeout_s
                            )
                        )
                        fut.add_done_callback(lambda _f: progress.set())
                        inflight[row_id] = fut
                        last_id = row_id
                    if not inflight:
                        if self._stop.is_set():
                            return
                        await _first(self._wake.wait(), self._stop.wait(), watcher)
                    elif len(rows) == room:
                        await _first(progress.wait(), watcher)
                    else:
                        await _first(progress.wait(), self._wake.wait(), watcher)
                    self._settle(inflight)
                    if watcher.done():
                        watcher.result()
            finally:
                for pending_fut in inflight.values():
                    pending_fut.cancel()
                await asyncio.gather(*inflight.values(), return_exceptions=True)
                with contextlib.suppress(OutboxError):
                    self._settle(inflight, strict=False)
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher

    def _settle(self, inflight: dict[int, asyncio.Future[None]], *, strict: bool = True) -> None:
        """Delete what the broker acknowledged; raise the first publish failure (``strict``)."""
        done = [(i, f) for i, f in inflight.items() if f.done()]
        for i, _ in done:
            del inflight[i]
        self._delete([i for i, f in done if not f.cancelled() and f.exception() is None])
        for _, f in done if strict else ():
            error = None if f.cancelled() else f.exception()
            if error is not None:
                raise error

    async def close(self, timeout: float = 10.0) -> None:
        """Flush what can be published within ``timeout`` s, then stop; the rest stays spooled.

        Also works when ``run()`` was never started: it then runs a flush of its own.
        """
        if self._closed:
            return
        self._closing = True
        task: asyncio.Future[None] | None = self._task
        own = False
        if (task is None or task.done()) and self.pending() > 0 and timeout > 0:
            task, own = asyncio.ensure_future(self.run()), True
            await asyncio.sleep(0)
        if self._stop is not None:
            self._stop.set()
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                self._abandoned = True
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if own and task is not None and not task.cancelled() and task.exception() is not None:
            log.error("mqtt_outbox_failed", extra={"fields": {"error": repr(task.exception())}})
        left = self.pending()
        if left:
            log.warning(
                "mqtt_outbox_closed_with_pending",
                extra={"fields": {"pending": left, "spool": str(self.spool_path)}},
            )
        with self._lock:
            self._closed = True
            self._conn.close()


async def _until_disconnected(client: aiomqtt.Client) -> None:
    """Returns (raising MqttError) when the connection drops: the client's message iterator
    ends with an error on disconnection, and this outbox subscribes to nothing."""
    async for _ in client.messages:
        pass


async def _first(*aws: Any) -> None:
    """Wait until the first of several awaitables/futures finishes; cancel the coroutines."""
    futs = [a if isinstance(a, asyncio.Future) else asyncio.ensure_future(a) for a in aws]
    owned = [f for f, a in zip(futs, aws, strict=True) if f is not a]
    try:
        await asyncio.wait(futs, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in owned:
            f.cancel()
