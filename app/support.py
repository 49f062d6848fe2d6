"""What the ``hes`` command modules share: the ``--db`` option, error exits, the database,
the collection day."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated

import typer

from collector.plan import Plan
from storage.database import Database, open_database
from storage.errors import StorageError

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="database: SQLite file path or postgresql+psycopg:// URL (default: hes.db here)",
        envvar="HES_DB",
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Say what was wrong on stderr; the Exit to raise (2: bad usage, 1: the data or a service)."""
    typer.echo(f"hes: {message}", err=True)
    return typer.Exit(code)


def open_db(url: str | None) -> Database:
    """Open (and migrate) the database; a clear message and exit 1 when it cannot be."""
    try:
        return open_database(url)
    except StorageError as exc:
        raise fail(str(exc), 1) from None


def parse_day(text: str | None, plan: Plan, what: str) -> date:
    """The day ``what`` names (YYYY-MM-DD); none given: yesterday in the plan's time zone."""
    if text is None:
        return datetime.now(plan.tz).date() - timedelta(days=1)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise fail(f"{what} {text!r} is not a date (YYYY-MM-DD)") from None
