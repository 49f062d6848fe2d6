"""``hes keys``: import per-meter DLMS keys and LLS secrets into the encrypted key store, and
move a meter's client invocation counter up after the meter refused it (``hes keys counter``).

The output names meters and counts only; no key or key hex is ever printed, even on error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.support import DbOption, fail, open_db
from protocols.security import DEFAULT_CLIENT_SYSTEM_TITLE
from storage.errors import StorageError
from storage.keystore import DatabaseCounterStore, KeyStore, KeyStoreError, load_master_key

keys_app = typer.Typer(help="Per-meter security keys (stored encrypted).", no_args_is_help=True)


@keys_app.command("import")
def keys_import_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="key CSV: meter_id, encryption_key, authentication_key[, system_title]"
            "[, lls_password] (keys in hex; lls_password: the LLS secret of the "
            "password_ref named meter_id)"
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
    """Import (or rotate) meter keys and LLS secrets; a file with any bad line imports
    nothing."""
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
                "lls_secrets": result.lls_secrets,
                "master_key_id": master.key_id,
            }
        )
    )


@keys_app.command("counter")
def keys_counter_command(
    meter_id: Annotated[str, typer.Argument(help="meter id in the key store")],
    at_least: Annotated[
        int,
        typer.Option(
            "--at-least", help="the counter the meter expects (from invocation_counter_rejected)"
        ),
    ],
    client_system_title: Annotated[
        str,
        typer.Option(help="client system title (16 hex digits) the counter belongs to"),
    ] = DEFAULT_CLIENT_SYSTEM_TITLE.hex(),
    db: DbOption = None,
) -> None:
    """Raise a meter's stored client invocation counter (it never goes down)."""
    try:
        title = bytes.fromhex(client_system_title)
    except ValueError:
        title = b""
    if len(title) != 8:
        raise fail(f"--client-system-title {client_system_title!r}: give 16 hex digits")
    if not 0 <= at_least < 1 << 32:
        raise fail(f"--at-least {at_least}: an invocation counter is 0..4294967295")
    database = open_db(db)
    try:
        value = DatabaseCounterStore(database, meter_id, title).advance_to(at_least)
    except StorageError as exc:
        raise fail(str(exc), 1) from None
    finally:
        database.close()
    typer.echo(
        json.dumps(
            {"meter_id": meter_id, "client_system_title": title.hex(), "next_counter": value}
        )
    )
