"""Connecting to the hes database: which URL means what, and the engine each backend gets.

Why apart from :mod:`storage.database`: how a SQLite file is opened (WAL, busy timeout, the
write lock taken up front) and how PostgreSQL is reached are settled once here; the database
API above them does not change with them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from storage.errors import StorageError

DEFAULT_SQLITE_FILE = "hes.db"


def safe_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def resolve_url(url: str | os.PathLike[str] | None) -> URL:
    """Turn ``None``, a file path or a URL into a SQLAlchemy URL hes supports."""
    if url is None:
        return make_url("sqlite+pysqlite:///" + str(Path.cwd() / DEFAULT_SQLITE_FILE))
    raw = os.fspath(url)
    if "://" not in raw:
        if not raw.strip():
            raise StorageError("empty database path")
        return make_url("sqlite+pysqlite:///" + str(Path(raw).expanduser().absolute()))
    try:
        parsed = make_url(raw)
    except (sa_exc.ArgumentError, ValueError) as exc:
        shown = raw.split("@", 1)[-1] if "@" in raw else raw
        raise StorageError(f"invalid database URL ...{shown}: {exc}") from exc
    backend = parsed.get_backend_name()
    driver = parsed.get_driver_name()
    if backend in ("postgresql", "postgres"):
        if driver not in ("psycopg", "postgresql", "postgres"):
            raise StorageError(
                f"unsupported PostgreSQL driver {driver!r} in {safe_url(parsed)}: "
                "use postgresql+psycopg://user@host:port/dbname"
            )
        parsed = parsed.set(drivername="postgresql+psycopg")
        if not parsed.database:
            raise StorageError(f"no database name in {safe_url(parsed)}")
        return parsed
    if backend == "sqlite":
        if driver not in ("pysqlite", "sqlite"):
            raise StorageError(f"unsupported SQLite driver {driver!r} in {safe_url(parsed)}")
        return parsed.set(drivername="sqlite+pysqlite")
    raise StorageError(
        f"unsupported database URL {safe_url(parsed)}: use a SQLite file path or "
        "postgresql+psycopg://user@host:port/dbname"
    )


def sqlite_engine(url: URL, busy_timeout_s: float) -> Engine:
    path = url.database
    memory = not path or path == ":memory:"
    if not memory and path is not None:
        parent = Path(path).parent
        if not parent.is_dir():
            raise StorageError(f"cannot create database {safe_url(url)}: no directory {parent}")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": busy_timeout_s}}
    if memory:
        kwargs["poolclass"] = StaticPool
        kwargs["connect_args"]["check_same_thread"] = False
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            # 16 MiB of page cache per connection (each storage thread holds one; 64 MiB
            # measured no faster with multi-row inserts) and checkpoints every ~40 MB of WAL.
            cur.execute("PRAGMA cache_size=-16384")
            if not memory:
                cur.execute("PRAGMA wal_autocheckpoint=10000")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front: a deferred transaction that upgrades
        # later can fail with SQLITE_BUSY without waiting for the busy timeout.
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))

    return engine


def postgres_engine(url: URL, connect_timeout_s: float) -> Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = max(1, int(connect_timeout_s))
    if "application_name" not in url.query:
        connect_args["application_name"] = "hes"
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
