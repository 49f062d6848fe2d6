"""``hes firmware upload``: send a firmware image to one meter or a group, and activate it;
``hes firmware status``: what the meters' image transfer objects say (after a break, say).

Prints one JSON object: per meter the blocks of the image, how many were sent in each session
and how many the meter already held (a resume), whether the image verified and activated, and
the firmware identifier before and after; then the totals. Every meter's upload is audited
(``command_audit``, command ``firmware``, requested by ``--by``). Exit 0 when every
meter runs the new firmware, 1 when any failed, 2 for bad arguments (no image, an empty
identifier, unknown meters: nothing is sent to any meter then), with the error as JSON on
stdout and as text on stderr.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from app.support import DbOption, fail
from collector.firmware import MAX_IMAGE_BYTES, SecurityFor, read_many, upload_many
from collector.image_transfer import FirmwareImage
from collector.operations import SelectionError, select_meters
from collector.service import env_secret
from contracts.meters import SECURE_PROFILE
from protocols.security import SecurityContext
from protocols.xdlms.gbt import MAX_GBT_WINDOW
from storage.database import Database, open_database
from storage.errors import StorageError
from storage.keystore import KeyStore, KeyStoreError, load_master_key, security_context
from storage.records import MeterRecord

firmware_app = typer.Typer(help="Firmware upgrade (image transfer).", no_args_is_help=True)


def _bad(message: str) -> typer.Exit:
    typer.echo(json.dumps({"error": message}))
    return fail(message)


def _read_image(path: Path, identifier: str) -> FirmwareImage:
    if not identifier.strip():
        raise _bad("--identifier must not be empty")
    try:
        name = identifier.encode("ascii")
    except UnicodeEncodeError:
        raise _bad(f"--identifier {identifier!r} must be ASCII") from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _bad(f"cannot read image {path}: {exc.strerror or exc}") from None
    if not data:
        raise _bad(f"image {path} is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise _bad(f"image {path} has {len(data)} bytes, more than {MAX_IMAGE_BYTES}")
    return FirmwareImage(name, data)


MeterOption = Annotated[
    list[str] | None, typer.Option("--meter", help="an inventory meter id (repeatable)")
]
FileOption = Annotated[
    Path | None, typer.Option("--file", help="file of meter ids, one a line (# comments)")
]
AreaOption = Annotated[
    str | None, typer.Option("--area", "--group", help="every inventory meter of this area")
]
AllOption = Annotated[bool, typer.Option("--all", help="every meter of the inventory")]
ConcurrencyOption = Annotated[int, typer.Option(min=1, help="meters in flight")]
TimeoutOption = Annotated[float, typer.Option(help="seconds to wait for each response")]


def choose_meters(
    database: Database, meter: list[str] | None, file: Path | None, area: str | None, every: bool
) -> tuple[list[MeterRecord], SecurityFor | None]:
    """The meters asked for, and the security contexts of the secured ones (bad: exit 2)."""
    ids = list(meter or [])
    if every:
        ids += [m.meter_id for m in database.meters()]
        if not ids:
            raise _bad("--all: the inventory has no meters")
    try:
        chosen = select_meters(database, ids, file, area)
    except SelectionError as exc:
        raise _bad(str(exc)) from None
    if not any(m.security_profile == SECURE_PROFILE for m in chosen):
        return chosen, None
    try:
        keystore = KeyStore(database, load_master_key())
    except KeyStoreError as exc:
        raise _bad(f"secured meters need the key store: {exc}") from None

    def security_for(meter: MeterRecord) -> SecurityContext | None:
        if meter.security_profile != SECURE_PROFILE:
            return None
        return security_context(keystore, meter.meter_id)

    return chosen, security_for


def _open(db: str | None) -> Database:
    try:
        return open_database(db)
    except StorageError as exc:
        raise _bad(str(exc)) from None


@firmware_app.command("upload")
def upload_command(
    image: Annotated[Path, typer.Option("--image", help="the firmware image file")],
    identifier: Annotated[
        str, typer.Option("--identifier", help="the image identifier (the new firmware version)")
    ],
    meter: MeterOption = None,
    file: FileOption = None,
    area: AreaOption = None,
    every: AllOption = False,
    db: DbOption = None,
    by: Annotated[
        str | None, typer.Option("--by", help="who asks (audit); default: the login name")
    ] = None,
    sessions: Annotated[
        int, typer.Option(min=1, help="sessions per meter: a lost link resumes in the next")
    ] = 3,
    max_pdu: Annotated[
        int, typer.Option("--max-pdu", min=64, max=0xFFFF, help="max PDU size the client proposes")
    ] = 0xFFFF,
    gbt_window: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_GBT_WINDOW,
            help="propose general-block-transfer, receiving this many GBT blocks at once: a "
            "meter that grants it may take image blocks bigger than its PDU (0: no GBT)",
        ),
    ] = 0,
    concurrency: ConcurrencyOption = 10,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Transfer an image (only the blocks the meter lacks), verify, activate, confirm."""
    firmware = _read_image(image, identifier)
    database = _open(db)
    try:
        chosen, security_for = choose_meters(database, meter, file, area, every)
        reports = asyncio.run(
            upload_many(
                chosen,
                firmware,
                secrets=env_secret,
                db=database,
                requested_by=by,
                concurrency=concurrency,
                sessions=sessions,
                request_timeout=timeout,
                max_pdu_size=max_pdu,
                gbt_window=gbt_window,
                security_for=security_for,
            )
        )
    finally:
        database.close()
    failed = [r for r in reports if not r.ok]
    typer.echo(
        json.dumps(
            {
                "command": "firmware upload",
                "identifier": identifier,
                "image_bytes": len(firmware.data),
                "meters": len(reports),
                "ok": len(reports) - len(failed),
                "failed": len(failed),
                "results": [r.as_dict() for r in reports],
            }
        )
    )
    if failed:
        raise typer.Exit(1)


@firmware_app.command("status")
def status_command(
    meter: MeterOption = None,
    file: FileOption = None,
    area: AreaOption = None,
    every: AllOption = False,
    db: DbOption = None,
    concurrency: ConcurrencyOption = 10,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Read each meter's active firmware and image transfer state (blocks held, status)."""
    database = _open(db)
    try:
        chosen, security_for = choose_meters(database, meter, file, area, every)
        results = asyncio.run(
            read_many(
                chosen,
                secrets=env_secret,
                security_for=security_for,
                concurrency=concurrency,
                request_timeout=timeout,
            )
        )
    finally:
        database.close()
    failed = [r for r in results if r["outcome"] != "ok"]
    typer.echo(
        json.dumps(
            {
                "command": "firmware status",
                "meters": len(results),
                "ok": len(results) - len(failed),
                "failed": len(failed),
                "results": results,
            }
        )
    )
    if failed:
        raise typer.Exit(1)
