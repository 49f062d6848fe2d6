"""``hes keys``: import per-meter DLMS keys into the encrypted key store.

The output names meters and counts only; no key or key hex is ever printed, even on error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from storage.database import open_database
from storage.errors import StorageError
from storage.keystore import KeyStore, KeyStoreError, load_master_key

keys_app = typer.Typer(help="Per-meter security keys (stored encrypted).", no_args_is_help=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"hes: {message}", err=True)
    return typer.Exit(code)


@keys_app.command("import")
def keys_import_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="key CSV: meter_id, encryption_key, authentication_key[, system_title] (hex)"
        ),
    ],
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="database: SQLite file path or postgresql+psycopg:// URL (default: hes.db here)",
            envvar="HES_DB",
        ),
    ] = None,
    master_key_file: Annotated[
        Path | None,
        typer.Option(
            "--master-key-file",
            help="file holding the 32-byte master key "
            "(default: $HES_MASTER_KEY, else $HES_MASTER_KEY_FILE)",
        ),
    ] = None,
) -> None:
    """Import (or rotate) meter keys; a file with any bad line imports nothing."""
    try:
        master = load_master_key(master_key_file)
    except KeyStoreError as exc:
        raise _fail(str(exc), 2) from None
    try:
        database = open_database(db)
    except StorageError as exc:
        raise _fail(str(exc)) from None
    try:
        result = KeyStore(database, master).import_file(file)
    except (KeyStoreError, StorageError) as exc:
        raise _fail(str(exc)) from None
    finally:
        database.close()
    typer.echo(
        json.dumps(
            {
                "file": result.path,
                "rows": result.rows,
                "inserted": result.inserted,
                "rotated": result.rotated,
                "master_key_id": master.key_id,
            }
        )
    )
