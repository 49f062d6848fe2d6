"""``hes serve``: the head-end as a service, in one asyncio event loop.

The loop holds the service (:class:`collector.daemon.HeadEnd`: schedules, the job queue, the
push listener), the MQTT outbox and the HTTP server (uvicorn serving :func:`app.api.
create_app`: the REST API, ``/metrics`` and the status page). Everything shares the one
database and the one :class:`~collector.telemetry.Telemetry`.

Signals are this module's, not uvicorn's: SIGTERM or SIGINT stops the service first (no new
job or session; sessions in flight get ``drain_s``; unfinished jobs go back to the queue),
then the HTTP server, then flushes the MQTT outbox for a few seconds (what the broker did
not acknowledge stays spooled for the next start). The exit code is 128 + the signal.

With ``--node NAME`` (or ``[cluster] node``) the process is one node of a cluster
(:mod:`collector.cluster`): the same loop over the shared PostgreSQL, its queue and link
arbiter leased, the ticker run by whichever node leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from app.run import StopSignals
from app.serve_config import ConfigError, ServeConfig, load_config
from app.support import fail, setup_json_log
from collector.cluster import ClusterNode
from collector.daemon import HeadEnd
from collector.inventory import InventoryError, import_inventory
from collector.job_queue import JobQueue
from collector.mqtt import MqttOutbox
from collector.telemetry import Telemetry
from storage.database import Database, open_database
from storage.errors import StorageError
from storage.keystore import load_master_key

#: Seconds the outbox gets at the end to hand spooled messages to the broker.
MQTT_FLUSH_S = 5.0
#: How often the MQTT spool depth gauge is refreshed.
SPOOL_GAUGE_S = 5.0

log = logging.getLogger("hes.serve")


def _http_server(config: Any) -> Any:
    """uvicorn without its own signal handlers: the service stops it, after draining.

    uvicorn and the API (FastAPI) are imported here, not with the module: every ``hes``
    command imports this module to register ``serve``, and only ``serve`` needs them."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)


def _publisher(outbox: MqttOutbox) -> Callable[[str, str, dict[str, Any]], None]:
    def publish(meter_id: str, kind: str, payload: dict[str, Any]) -> None:
        outbox.enqueue_meter(meter_id, kind, payload)  # type: ignore[arg-type]

    return publish


async def _spool_gauge(outbox: MqttOutbox, telemetry: Telemetry) -> None:
    while True:
        with contextlib.suppress(Exception):
            telemetry.mqtt_spool.set(await asyncio.to_thread(outbox.pending))
        await asyncio.sleep(SPOOL_GAUGE_S)


def _say(text: str) -> None:
    print(f"hes serve: {text}", file=sys.stderr, flush=True)


async def serve_async(cfg: ServeConfig, signals: StopSignals) -> None:
    """Run the service until a stop signal; the database is opened (and migrated) here."""
    db = open_database(cfg.db)
    try:
        if cfg.inventory is not None:
            result = await asyncio.to_thread(import_inventory, db, cfg.inventory, cfg.plan.profiles)
            _say(f"imported {result.rows} meters from {cfg.inventory}")
        await _serve(cfg, db, signals)
    finally:
        db.close()


async def _serve(cfg: ServeConfig, db: Database, signals: StopSignals) -> None:
    import uvicorn

    from app.api import ServiceContext, create_app
    from app.api.routes import ROUTERS

    telemetry = Telemetry()
    node = None
    queue = JobQueue(db)
    if cfg.node is not None:
        node = ClusterNode(
            db,
            cfg.plan,
            cfg.node,
            host=socket.gethostname(),
            pid=os.getpid(),
            lease_s=cfg.lease_s,
            gprs_batch=cfg.gprs_batch,
            http=f"{cfg.http_host}:{cfg.http_port}",
        )
        queue = node.queue
    outbox = None
    if cfg.mqtt_url is not None:
        client = f"hes-serve-{os.getpid()}" if node is None else f"hes-{node.name}-{os.getpid()}"
        outbox = MqttOutbox(
            cfg.mqtt_spool, cfg.mqtt_url, client_id=client, topic_prefix=cfg.mqtt_prefix
        )
    headend = HeadEnd(
        db,
        cfg.plan,
        queue=queue,
        telemetry=telemetry,
        publish=None if outbox is None else _publisher(outbox),
        push_host=cfg.push_host or "127.0.0.1",
        push_port=cfg.push_port,
        master_key=functools.partial(load_master_key, cfg.master_key_file),
        poll_s=cfg.poll_s,
        drain_s=cfg.drain_s,
        catch_up=cfg.catch_up,
        max_jobs=cfg.max_jobs,
        clock_threshold_s=cfg.clock_threshold_s,
        retention_days=cfg.retention_days,
        links=None if node is None else node.links,
        cluster=node,
    )
    ctx = ServiceContext(
        db=db,
        plan=cfg.plan,
        queue=queue,
        telemetry=telemetry,
        public_status=cfg.public_status,
        live=headend.live,
    )
    server = _http_server(
        uvicorn.Config(
            create_app(ctx, ROUTERS),
            host=cfg.http_host,
            port=cfg.http_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )
    side: list[asyncio.Task[Any]] = []
    if outbox is not None:
        side += [
            asyncio.create_task(outbox.run(), name="hes-mqtt"),
            asyncio.create_task(_spool_gauge(outbox, telemetry), name="hes-spool-gauge"),
        ]

    def stop() -> None:
        headend.stop()

    service = asyncio.create_task(headend.run(), name="hes-service")
    http = asyncio.create_task(server.serve(), name="hes-http")
    try:
        with signals.on_loop(stop):
            ready = asyncio.ensure_future(headend.wait_ready())
            await asyncio.wait([ready, service], return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():  # the service ended before it was ready: say why
                ready.cancel()
                await service
                return
            while not server.started:
                if http.done():
                    await http  # raises what stopped it (a port in use: SystemExit)
                    raise OSError(f"cannot listen on {cfg.http_host}:{cfg.http_port}")
                await asyncio.sleep(0.02)
            port = server.servers[0].sockets[0].getsockname()[1]
            if node is not None:
                node.http = f"{cfg.http_host}:{port}"  # the port bound, at the next heartbeat
                _say(f"node {node.name} of the cluster in {db.safe_url}")
            _say(f"listening on http://{cfg.http_host}:{port}")
            if headend.push is not None:
                _say(f"push alarms on {headend.push.host}:{headend.push.port}")
            if headend.recovered:
                _say(f"resuming {len(headend.recovered)} job(s) interrupted by the last stop")
            await service
    finally:
        if not service.done():
            headend.stop()
            await asyncio.gather(service, return_exceptions=True)
        server.should_exit = True
        await asyncio.gather(http, return_exceptions=True)
        if outbox is not None:
            await outbox.close(timeout=MQTT_FLUSH_S)
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        ctx.executor.shutdown(wait=False)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="hes.toml: its \\[service] table and the plan (see ops/hes.toml); default: built-in",
        envvar="HES_CONFIG",
    ),
]


def serve_command(
    config: ConfigOption = None,
    db: Annotated[
        str | None, typer.Option("--db", help="database (overrides service.db)", envvar="HES_DB")
    ] = None,
    http: Annotated[
        str | None, typer.Option("--http", help="HOST:PORT to listen on (overrides service.http)")
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(
            "--node",
            help="run as this node of a cluster (PostgreSQL --db; overrides cluster.node)",
            envvar="HES_NODE",
        ),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            help="cluster work queue: postgresql:// (the database's job table; cluster.broker)",
        ),
    ] = None,
) -> None:
    """Run the head-end as a service: schedules, jobs, REST API, metrics and status page."""
    try:
        cfg = load_config(config, {"db": db, "http": http}, {"node": node, "broker": broker})
    except ConfigError as exc:
        raise fail(str(exc)) from None
    setup_json_log(cfg.log_file)
    signals = StopSignals()
    try:
        asyncio.run(serve_async(cfg, signals))
    except StorageError as exc:
        raise fail(str(exc), 1) from None
    except InventoryError as exc:
        raise fail(str(exc), 1) from None
    except (OSError, SystemExit) as exc:
        if isinstance(exc, SystemExit) and signals.signum is not None:
            raise
        raise fail(f"cannot serve on {cfg.http_host}:{cfg.http_port}: {exc}", 1) from None
    code = signals.exit_code()
    _say("stopped" + (f" (signal {signals.signum})" if signals.signum else ""))
    if code is not None:
        raise typer.Exit(code)
