"""``hes token``: API tokens of the service (create, list, revoke).

The secret is printed once, at creation, and stored only as its SHA-256 digest
(:mod:`storage.access`); a lost token is revoked and made again. The database is the
service's: ``--config`` (its ``service.db``) or ``--db``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.serve import ConfigOption
from app.serve_config import ConfigError, load_config
from app.support import DbOption, fail, open_db
from storage import access
from storage.access import TokenError
from storage.database import Database
from storage.errors import StorageError

tokens_app = typer.Typer(help="API tokens of hes serve.", no_args_is_help=True)


def _database(config: Path | None, db: str | None) -> Database:
    if db is None and config is not None:
        try:
            db = load_config(config).db
        except ConfigError as exc:
            raise fail(str(exc)) from None
    return open_db(db)


@tokens_app.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="who uses it: shown in the audit trail")],
    role: Annotated[
        str, typer.Option(help="reader (reads, reports) or operator (also jobs and commands)")
    ] = "reader",
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Make a token; prints its secret once (Authorization: Bearer <secret>)."""
    database = _database(config, db)
    try:
        secret = access.create_token(database, name, role)
    except TokenError as exc:
        raise fail(str(exc)) from None
    except StorageError as exc:
        raise fail(str(exc), 1) from None
    finally:
        database.close()
    typer.echo(json.dumps({"name": name, "role": role, "token": secret}))


@tokens_app.command("list")
def list_command(config: ConfigOption = None, db: DbOption = None) -> None:
    """Every token: name, role, when made, when revoked (never a secret)."""
    database = _database(config, db)
    try:
        rows = access.tokens(database)
    except StorageError as exc:
        raise fail(str(exc), 1) from None
    finally:
        database.close()
    for t in rows:
        typer.echo(
            json.dumps(
                {
                    "name": t.name,
                    "role": t.role,
                    "created_at": t.created_at.isoformat(),
                    "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
                }
            )
        )


@tokens_app.command("revoke")
def revoke_command(
    name: Annotated[str, typer.Argument(help="the token's name")],
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Revoke a token at once (kept for the audit trail; its name is free again)."""
    database = _database(config, db)
    try:
        access.revoke_token(database, name)
    except TokenError as exc:
        raise fail(str(exc), 1) from None
    except StorageError as exc:
        raise fail(str(exc), 1) from None
    finally:
        database.close()
    typer.echo(json.dumps({"revoked": name}))
