"""``hes keys``: import per-meter DLMS keys into the encrypted key store.

The output names meters and counts only; no key or key hex is ever printed, even on error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.support import DbOption, fail, open_db
from storage.errors import StorageError
from storage.keystore import KeyStore, KeyStoreError, load_master_key

keys_app = typer.Typer(help="Per-meter security keys (stored encrypted).", no_args_is_help=True)


@keys_app.command("import")
def keys_import_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="key CSV: meter_id, encryption_key, authentication_key[, system_title] (hex)"
        ),
    ],
    db: DbOption = None,
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
        raise fail(str(exc), 2) from None
    database = open_db(db)
    try:
        result = KeyStore(database, master).import_file(file)
    except (KeyStoreError, StorageError) as exc:
        raise fail(str(exc), 1) from None
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
