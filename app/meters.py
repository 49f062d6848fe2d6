"""``hes meters import``: the meter inventory from a CSV file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.support import DbOption, fail, open_db
from collector.inventory import InventoryError, import_inventory
from collector.meter_profiles import ProfileLibrary
from storage.errors import StorageError

meters_app = typer.Typer(help="Meter inventory.", no_args_is_help=True)


@meters_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="inventory CSV (header line required)")],
    db: DbOption = None,
    profile_dir: Annotated[
        list[Path] | None,
        typer.Option(
            help="directory of meter profiles (NAME.toml) the profile column names, before "
            "the shipped ones (repeat)"
        ),
    ] = None,
) -> None:
    """Import (insert or update) meters from a CSV; a file with any bad row imports nothing."""
    for directory in profile_dir or []:
        if not directory.is_dir():
            raise fail(f"--profile-dir {directory}: not a directory", 2)
    database = open_db(db)
    try:
        result = import_inventory(database, file, ProfileLibrary(profile_dir or []))
    except InventoryError as exc:
        raise fail(str(exc), 1) from None
    except StorageError as exc:
        raise fail(str(exc), 1) from None
    finally:
        database.close()
    typer.echo(
        json.dumps(
            {
                "file": result.path,
                "rows": result.rows,
                "inserted": result.inserted,
                "updated": result.updated,
                "seconds": round(result.seconds, 3),
            }
        )
    )
