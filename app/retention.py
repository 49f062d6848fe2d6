"""``hes retention``: remove readings older than the policy keeps (a cron job or the service)."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated

import typer

from app.support import DbOption, fail, open_db
from storage.errors import StorageError
from storage.retention import apply_retention


def retention_command(
    keep_days: Annotated[
        int, typer.Option("--keep-days", min=1, help="days of readings to keep, before today (UTC)")
    ],
    db: DbOption = None,
    today: Annotated[
        str | None, typer.Option(help="count back from this day, YYYY-MM-DD (default: today)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count only, remove nothing")] = False,
) -> None:
    """Remove interval and register reads and read attempts of days before the horizon.

    On PostgreSQL whole months go as partition drops. Events and the command audit are kept.
    Prints what was (or, with --dry-run, would be) removed as JSON.
    """
    day = None
    if today is not None:
        try:
            day = date.fromisoformat(today)
        except ValueError:
            raise fail(f"--today {today!r} is not a date (YYYY-MM-DD)") from None
    database = open_db(db)
    try:
        result = apply_retention(database, keep_days, today=day, dry_run=dry_run)
    except StorageError as exc:
        raise fail(str(exc), 1) from None
    finally:
        database.close()
    typer.echo(json.dumps(result.as_dict()))
