"""``hes disconnect``, ``hes reconnect`` and ``hes listen``.

Disconnect/reconnect print one JSON object: a result per meter (states read back, or the
error class) and the totals; exit 0 when every meter confirmed, 1 when any failed, 2 for bad
arguments (unknown meter ids, an empty group: nothing is sent to any meter then).
``hes listen`` runs the push listener until SIGINT/SIGTERM (app.run) or ``--duration``, then
prints its counters.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from app.run import StopSignals, until_stopped
from app.support import DbOption, fail, open_db
from collector.credentials import contexts_from, with_stored_secrets
from collector.mqtt import MqttOutbox, OutboxError, parse_mqtt_url
from collector.operations import SelectionError, run_command, select_meters
from collector.push import PushListener
from collector.service import env_secret
from contracts.meters import SECURE_PROFILE
from storage.database import Database, open_database
from storage.errors import StorageError
from storage.keystore import KeyStore, KeyStoreError, load_master_key

MeterArgs = Annotated[
    list[str] | None, typer.Argument(help="meter ids of the inventory", show_default=False)
]
FileOption = Annotated[
    Path | None, typer.Option("--file", help="file of meter ids, one a line (# comments)")
]
GroupOption = Annotated[
    str | None, typer.Option("--group", help="every inventory meter of this area")
]
ByOption = Annotated[
    str | None, typer.Option("--by", help="who asks (audit); default: the login name")
]
ConcurrencyOption = Annotated[int, typer.Option(min=1, help="sessions in flight")]
TimeoutOption = Annotated[float, typer.Option(help="seconds to wait for each response")]
MQTT_FLUSH_S = 5.0
DEFAULT_SPOOL = "hes-mqtt-spool.db"


def _operate(
    command: str,
    meters: list[str] | None,
    file: Path | None,
    group: str | None,
    db: str | None,
    by: str | None,
    concurrency: int,
    timeout: float,
) -> None:
    database = open_db(db)
    try:
        try:
            chosen = select_meters(database, meters or [], file, group)
        except SelectionError as exc:
            raise fail(str(exc)) from None

        def store() -> KeyStore:
            return KeyStore(database, load_master_key())

        secrets = with_stored_secrets(env_secret, chosen, store, every_ref=True)
        keystore = None
        if any(m.security_profile == SECURE_PROFILE for m in chosen):
            try:
                keystore = store()
            except KeyStoreError as exc:
                raise fail(str(exc)) from None
        results = asyncio.run(
            run_command(
                database,
                chosen,
                command,
                requested_by=by,
                secrets=secrets,
                concurrency=concurrency,
                request_timeout=timeout,
                security_for=contexts_from(keystore),
            )
        )
    except StorageError as exc:
        raise fail(str(exc), 1) from None
    finally:
        database.close()
    failed = [r for r in results if not r.ok]
    typer.echo(
        json.dumps(
            {
                "command": command,
                "meters": len(results),
                "ok": len(results) - len(failed),
                "failed": len(failed),
                "results": [r.as_dict() for r in results],
            }
        )
    )
    if failed:
        raise typer.Exit(1)


def disconnect_command(
    meters: MeterArgs = None,
    file: FileOption = None,
    group: GroupOption = None,
    db: DbOption = None,
    by: ByOption = None,
    concurrency: ConcurrencyOption = 20,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Open the supply relay of meters (remote_disconnect), confirmed by reading it back."""
    _operate("disconnect", meters, file, group, db, by, concurrency, timeout)


def reconnect_command(
    meters: MeterArgs = None,
    file: FileOption = None,
    group: GroupOption = None,
    db: DbOption = None,
    by: ByOption = None,
    concurrency: ConcurrencyOption = 20,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Close the supply relay of meters (remote_reconnect), confirmed by reading it back."""
    _operate("reconnect", meters, file, group, db, by, concurrency, timeout)


def _alarm_publisher(outbox: MqttOutbox) -> Callable[[str, str, dict[str, Any]], None]:
    def publish(meter_id: str, _kind: str, payload: dict[str, Any]) -> None:
        outbox.enqueue_meter(meter_id, "alarm", payload)

    return publish


async def listen_async(
    db: str | None,
    host: str,
    port: int,
    mqtt_url: str | None,
    mqtt_spool: str,
    duration: float | None,
) -> dict[str, Any]:
    """Run the listener until a signal or the duration; return its counters."""
    stop = asyncio.Event()
    database: Database | None = None
    outbox: MqttOutbox | None = None
    publisher: asyncio.Task[None] | None = None
    listener: PushListener | None = None
    try:
        with StopSignals().on_loop(stop.set):
            database = open_database(db)
            if mqtt_url is not None:
                client_id = f"hes-listen-{uuid.uuid4().hex[:8]}"
                outbox = MqttOutbox(mqtt_spool, mqtt_url, client_id=client_id)
                publisher = asyncio.create_task(outbox.run())
            listener = PushListener(
                database,
                host=host,
                port=port,
                publish=None if outbox is None else _alarm_publisher(outbox),
            )
            await listener.start()
            typer.echo(json.dumps({"listening": f"{host}:{listener.port}"}))
            sys.stdout.flush()
            await until_stopped(stop, duration)
    finally:
        if listener is not None:
            await listener.close()
        if database is not None:
            database.close()
        if outbox is not None:
            await outbox.close(timeout=MQTT_FLUSH_S)
        if publisher is not None:
            await asyncio.gather(publisher, return_exceptions=True)
    return {"stopped": True, "stats": listener.stats.as_dict() if listener else {}}


def listen_command(
    db: DbOption = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free)")] = 4060,
    mqtt_url: Annotated[
        str | None,
        typer.Option(
            "--mqtt-url",
            help="publish alarms to mqtt://[user[:pass]@]host[:port] as hes/<meter>/alarm",
        ),
    ] = None,
    mqtt_spool: Annotated[
        str, typer.Option("--mqtt-spool", help="spool file of messages not yet acknowledged")
    ] = DEFAULT_SPOOL,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds (default: on a signal)")
    ] = None,
) -> None:
    """Accept push alarms (DataNotification over the TCP wrapper); store and publish them."""
    if mqtt_url is not None:
        try:
            parse_mqtt_url(mqtt_url)
        except ValueError as exc:
            raise fail(f"--mqtt-url: {exc}") from None
    if duration is not None and duration < 0:
        raise fail(f"--duration {duration} must not be negative")
    try:
        result = asyncio.run(listen_async(db, host, port, mqtt_url, mqtt_spool, duration))
    except (StorageError, OutboxError, OSError) as exc:
        raise fail(str(exc), 1) from None
    typer.echo(json.dumps(result))
