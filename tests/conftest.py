"""Shared fixtures: a private PostgreSQL schema per test, the local MQTT broker, the
NATS and RabbitMQ servers of the broker benchmark, and test hosts made of network
namespaces (``bench.netns``).

All skip (with the reason) when the service is not reachable, so the suite runs
anywhere; on the project machine both services are up and the tests really run.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
from http_service import ApiService, open_api_service

from bench.netns import TestNet, unavailable

PG_HOST = os.environ.get("HES_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("HES_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("HES_TEST_PG_USER", "postgres")
PG_DB = os.environ.get("HES_TEST_PG_DB", "test")
PG_BASE = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_DB}"
MQTT_HOST = os.environ.get("HES_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("HES_TEST_MQTT_PORT", "1883"))
NATS_PORT = int(os.environ.get("HES_TEST_NATS_PORT", "4222"))
AMQP_PORT = int(os.environ.get("HES_TEST_AMQP_PORT", "5672"))
#: Set by .ci/run: a service test that cannot reach its service fails instead of skipping.
REQUIRE_SERVICES = os.environ.get("HES_REQUIRE_SERVICES") == "1"


def _service_missing(reason: str) -> NoReturn:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (HES_REQUIRE_SERVICES=1: this test must not skip)")
    pytest.skip(reason)


def _pg_connect() -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_DB, connect_timeout=3, autocommit=True
    )


@pytest.fixture(scope="session")
def _pg_available() -> None:
    try:
        conn = _pg_connect()
    except Exception as exc:
        _service_missing(f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT}: {exc}")
    conn.close()


@pytest.fixture
def pg_url(_pg_available: None) -> Iterator[str]:
    """URL of an empty schema of its own (search_path), dropped after the test.

    Schema names carry the pid and a random part, so parallel runs never clash.
    """
    schema = f"hes_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    conn = _pg_connect()
    try:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


@pytest.fixture
def pg_admin(_pg_available: None) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit psycopg connection for out-of-band actions (terminating backends)."""
    conn = _pg_connect()
    try:
        yield conn
    finally:
        conn.close()


def _listening(what: str, host: str, port: int) -> tuple[str, int]:
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        _service_missing(f"{what} not reachable at {host}:{port}: {exc}")
    return host, port


@pytest.fixture(scope="session")
def mqtt_broker() -> tuple[str, int]:
    """(host, port) of the MQTT broker; skips when nothing listens there."""
    return _listening("MQTT broker", MQTT_HOST, MQTT_PORT)


@pytest.fixture(scope="session")
def nats_server() -> tuple[str, int]:
    """(host, port) of the NATS server (JetStream on); skips when nothing listens there."""
    return _listening("NATS", "127.0.0.1", NATS_PORT)


@pytest.fixture(scope="session")
def amqp_broker() -> tuple[str, int]:
    """(host, port) of RabbitMQ; skips when nothing listens there."""
    return _listening("RabbitMQ", "127.0.0.1", AMQP_PORT)


@pytest.fixture(scope="session")
def _netns_available() -> None:
    reason = unavailable()
    if reason is not None:
        _service_missing(f"cannot make network namespaces: {reason}")


@pytest.fixture
def test_hosts(_netns_available: None) -> Iterator[Callable[[Sequence[str]], TestNet]]:
    """Make test hosts: ``net = test_hosts(["sim", "node1"])`` gives a ``TestNet``; every
    namespace, veth, bridge and process in them is removed after the test, pass or fail."""
    made: list[TestNet] = []

    def make(names: Sequence[str]) -> TestNet:
        net = TestNet(names)
        made.append(net)
        net.open()
        return net

    try:
        yield make
    finally:
        for net in made:
            net.close()


@pytest.fixture
def api_service(tmp_path: Path) -> Iterator[ApiService]:
    """The API over real HTTP (uvicorn on loopback) with a reader and an operator token."""
    with open_api_service(tmp_path) as service:
        yield service
