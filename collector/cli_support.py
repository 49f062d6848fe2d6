"""What the ``hes`` command modules share: the ``--db`` option, error exits, the database."""

from __future__ import annotations

from typing import Annotated

import typer

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
