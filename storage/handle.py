"""What storage's helper modules (keystore, operations, report) need of a database.

:class:`DatabaseHandle` is the part of :class:`storage.database.Database` they use, as a
Protocol, so they never import ``storage.database`` (whose Alembic revisions create their
tables and which reads reports through them): the modules of the package form no import
cycle, not even for type checking.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Insert


class DatabaseHandle(Protocol):
    """A hes database: its dialect, write transactions, reads, and the missing-interval count."""

    #: SQLAlchemy dialect name: "sqlite" or "postgresql".
    dialect: str

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages and logs."""
        ...

    def transaction(self) -> AbstractContextManager[Connection]:
        """One write transaction (committed on success, rolled back on any error)."""
        ...

    def execute_read(self, stmt: Any) -> list[Any]:
        """Run a read-only Core statement and return its rows."""
        ...

    def reading(self) -> AbstractContextManager[Connection]:
        """One read connection (and transaction: one snapshot), errors as StorageError."""
        ...

    def missing_counts(
        self,
        start: datetime,
        end: datetime,
        channels: Sequence[str],
        period_s: int = 900,
        meter_ids: Iterable[str] | None = None,
    ) -> dict[str, int]:
        """Missing intervals per meter (summed over ``channels``) in ``[start, end)``."""
        ...


def insert_ignore(dialect: str, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING into ``table`` for the dialect."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()
