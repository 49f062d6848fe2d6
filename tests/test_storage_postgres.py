"""PostgreSQL specifics: URL forms, an unreachable server, a connection killed mid-write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from storage.database import SCHEMA_VERSION, open_database
from storage.errors import StorageError
from storage.records import IntervalRead

T0 = datetime(2024, 3, 10, tzinfo=UTC)
Q = timedelta(minutes=15)


def rows(mid: str, n: int = 96) -> list[IntervalRead]:
    return [IntervalRead(mid, "1.0.1.8.0.255:2", T0 + k * Q, k) for k in range(n)]


def test_plain_postgresql_scheme_uses_psycopg(pg_url: str) -> None:
    url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with open_database(url) as db:
        assert db.engine.dialect.driver == "psycopg"
        assert db.schema_version() == SCHEMA_VERSION


def test_tables_live_in_the_private_schema(pg_url: str, pg_admin: psycopg.Connection[Any]) -> None:
    schema = pg_url.rsplit("%3D", 1)[1]
    with open_database(pg_url) as db:
        db.insert_interval_reads(rows("A"))
    cur = pg_admin.execute(f'SELECT sum(n_values) FROM "{schema}".interval_days')
    assert cur.fetchone() == (96,)
    # the row went into its month's partition, made in the private schema too
    cur = pg_admin.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = %s",
        (schema, f"interval_days_{T0:%Y%m}"),
    )
    assert cur.fetchone() == (1,)


def test_unreachable_server_clear_error() -> None:
    # Port 1 on localhost: nothing listens there, the connection is refused at once.
    url = "postgresql+psycopg://hes:topsecret@127.0.0.1:1/hes"
    with pytest.raises(StorageError) as info:
        open_database(url, connect_timeout_s=2)
    text = str(info.value)
    assert "topsecret" not in text
    assert "postgresql+psycopg://hes:***@127.0.0.1:1/hes" in text
    assert "OperationalError" in text and info.value.transient


def test_unknown_database_clear_error(pg_url: str) -> None:
    url = pg_url.split("?")[0].rsplit("/", 1)[0] + "/no_such_db_hes"
    with pytest.raises(StorageError, match='database "no_such_db_hes" does not exist'):
        open_database(url)


def test_connection_killed_mid_write(pg_url: str, pg_admin: psycopg.Connection[Any]) -> None:
    db = open_database(pg_url)
    assert db.insert_interval_reads(rows("A")) == 96
    armed = {"on": True}

    @event.listens_for(db.engine, "before_cursor_execute")
    def _kill(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        # Inside the write transaction, as it takes the writers' lock: the server kills it.
        if armed["on"] and "pg_advisory_xact_lock" in statement:
            armed["on"] = False
            pid = conn.connection.dbapi_connection.info.backend_pid
            pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    with pytest.raises(StorageError, match="writing interval reads failed on postgresql") as info:
        db.insert_interval_reads(rows("B"))
    assert info.value.transient
    assert not armed["on"]
    # Committed data intact, nothing of the failed batch, and the pool recovers.
    assert db.count_interval_values() == 96
    assert db.insert_interval_reads(rows("B")) == 96
    assert db.count_interval_values() == 192
    db.close()


def test_concurrent_opens_migrate_once(pg_url: str) -> None:
    first = open_database(pg_url)
    second = open_database(pg_url)
    assert first.schema_version() == second.schema_version() == SCHEMA_VERSION
    first.close()
    second.close()


def test_large_batch_counts_new_rows(pg_url: str) -> None:
    with open_database(pg_url) as db:
        batch = [r for i in range(300) for r in rows(f"M{i}")]
        assert db.insert_interval_reads(batch) == len(batch)
        half = batch[: len(batch) // 2] + rows("NEW")
        assert db.insert_interval_reads(half) == 96
