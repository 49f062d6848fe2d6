"""What the ``hes`` command modules share: the ``--db`` option, error exits, the database,
the collection day, the JSON-lines log."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

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


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, event, and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "pid": record.process,
            "event": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_json_log(log_file: str | None) -> None:
    """The ``hes`` loggers write JSON lines to ``log_file`` (None: no log file)."""
    logger = logging.getLogger("hes")
    if log_file is None or any(isinstance(h, logging.FileHandler) for h in logger.handlers):
        return
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(JsonLines())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
