"""``hes collect``: read every meter of the inventory for a day.

``hes collect`` runs :class:`collector.service.Collector` in one process, or with
``--workers N`` in N processes, each with its own event loop and database connection, the
links sharded by a stable hash of ``link_id`` so no link is ever served by two processes.
SIGINT/SIGTERM stop it cleanly (``app.run``): no new session starts, in-flight ones get a few
seconds, what was read is already stored, and the exit code is 128 + the signal (130 for
Ctrl-C).

At the end it prints the JSON summary to stdout (bounded: counts, and at most ``--worst``
incomplete meters with ``incomplete_more`` counting the rest) and always one summary line to
stderr. With ``--fail-under PCT`` a finished run whose success rate is below PCT (or has no
rate: no meter expected) exits with :data:`EXIT_FAIL_UNDER` (3), so a cron job fails loudly.
A run that must wait for its window to open says so on stderr first.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.run import StopSignals
from app.support import DbOption, fail, parse_day, setup_json_log
from collector.jobs import cap_incomplete
from collector.meter_tasks import MeterTasks
from collector.mqtt import MqttOutbox, OutboxError, parse_mqtt_url
from collector.plan import Plan, PlanError, load_plan
from collector.push import PushListener
from collector.service import GC_THRESHOLDS, Collector, RunStats, RunSummary
from contracts.meters import parse_host_port
from storage.database import open_database
from storage.errors import StorageError
from storage.keystore import KeyStoreError, load_master_key
from storage.records import MeterRecord

STOP_GRACE_S = 5.0
#: Where MQTT messages wait for the broker (a SQLite file of its own, see collector.mqtt).
DEFAULT_SPOOL = "hes-mqtt-spool.db"
MQTT_FLUSH_S = 5.0
PROGRESS_INTERVAL_S = 0.25
#: Exit code of a finished run below ``--fail-under``.
EXIT_FAIL_UNDER = 3
#: Incomplete meters listed in the summary by default (``--worst``).
DEFAULT_WORST = 20


# -- collect ----------------------------------------------------------------------------------


@dataclass(slots=True)
class CollectOptions:
    """Everything a collecting process needs; plain data so it crosses process boundaries."""

    db: str | None
    config: str | None
    day: date
    run_id: str
    concurrency: int | None
    once: bool
    seed: int | None
    log_file: str | None
    mqtt_url: str | None = None
    mqtt_spool: str = DEFAULT_SPOOL
    shard: int = 0
    shards: int = 1
    #: Clock sync threshold (None: off) and event-log reads, on LLS meters (MeterTasks).
    clock_threshold_s: float | None = None
    events: bool = False
    #: HOST:PORT of the push-alarm listener run alongside (shard 0 only).
    listen: str | None = None
    #: Master key file of the key store (None: $HES_MASTER_KEY, else $HES_MASTER_KEY_FILE).
    master_key_file: str | None = None
    #: Incomplete meters kept in the summary (the others are counted).
    worst: int = DEFAULT_WORST


def shard_of(link_id: str, shards: int) -> int:
    """Stable shard of a link (crc32: the same in every process and every run)."""
    return zlib.crc32(link_id.encode()) % shards


def _in_shard(meters: list[MeterRecord], opts: CollectOptions) -> list[MeterRecord]:
    if opts.shards == 1:
        return meters
    return [m for m in meters if shard_of(m.link_id, opts.shards) == opts.shard]


def _tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


async def collect_async(
    opts: CollectOptions,
    plan: Plan,
    on_progress: Callable[[RunStats], None] | None = None,
    on_ready: Callable[[], None] | None = None,
    signals: StopSignals | None = None,
) -> tuple[RunSummary, int | None]:
    """Run one collector (one shard) until done or signalled; returns (summary, signal).

    ``signals`` may already hold signals that arrived before the event loop could handle them
    (a worker process starting up); ``on_ready`` is called once signals are handled here.
    """
    signals = signals if signals is not None else StopSignals()
    _tune_gc()
    outbox: MqttOutbox | None = None
    if opts.mqtt_url is not None:
        outbox = MqttOutbox(
            opts.mqtt_spool, opts.mqtt_url, client_id=f"hes-collect-{opts.run_id}-{opts.shard}"
        )
    database = open_database(opts.db)
    publisher: asyncio.Task[None] | None = None
    listener: PushListener | None = None
    try:
        if outbox is not None:
            publisher = asyncio.create_task(outbox.run())
        publish = None if outbox is None else _publisher(outbox)
        if opts.listen is not None and opts.shard == 0:
            host, port = parse_host_port(opts.listen)
            listener = PushListener(database, host=host, port=port, publish=publish)
            await listener.start()
        tasks = None
        if opts.clock_threshold_s is not None or opts.events:
            tasks = MeterTasks(database, opts.clock_threshold_s, opts.events, publish=publish)
        collector = Collector(
            database,
            plan,
            opts.day,
            run_id=opts.run_id,
            concurrency=opts.concurrency,
            once=opts.once,
            seed=None if opts.seed is None else opts.seed * 1000 + opts.shard,
            stop_grace_s=STOP_GRACE_S,
            publish=publish,
            after_read=tasks,
            master_key=functools.partial(load_master_key, opts.master_key_file),
            on_wait=_say_waiting if opts.shard == 0 else None,
        )

        async def report() -> None:
            while True:
                if on_progress is not None:
                    on_progress(collector.stats)
                await asyncio.sleep(PROGRESS_INTERVAL_S)

        with signals.on_loop(collector.stop):
            if on_ready is not None:
                on_ready()
            meters = _in_shard(await asyncio.to_thread(database.meters), opts)
            reporter = asyncio.create_task(report())
            try:
                summary = await collector.run(meters)
            finally:
                reporter.cancel()
        if on_progress is not None:
            on_progress(collector.stats)
    finally:
        if listener is not None:
            await listener.close()
        database.close()
        if outbox is not None:
            # Whatever the broker has not acknowledged by then stays spooled for the next run.
            await outbox.close(timeout=MQTT_FLUSH_S)
        if publisher is not None:
            await asyncio.gather(publisher, return_exceptions=True)
    return summary, signals.signum


def _say_waiting(seconds: float, until: datetime) -> None:
    """On stderr: the run waits for its window (one line, from one process)."""
    hours, rest = divmod(round(seconds), 3600)
    print(
        f"hes collect: waiting {hours}h{rest // 60:02d}m{rest % 60:02d}s for the collection "
        f"window, until {until:%Y-%m-%d %H:%M:%S %Z}",
        file=sys.stderr,
        flush=True,
    )


def summary_line(result: dict[str, Any]) -> str:
    """The one stderr line of a run, its figures those of the JSON summary."""
    finished = result["done"] + result["skipped_complete"]
    ok = result["complete"] + result["skipped_complete"]
    rate = result["success_rate"]
    pct = "no meter expected" if rate is None else f"{100 * rate:.3f} %"
    line = (
        f"hes collect: {result['day']} {ok}/{finished} meters complete ({pct}), "
        f"{result['retries']} retries, {result['failed']} failed, {result['seconds']:.1f} s"
    )
    if result["interrupted"]:
        line += ", interrupted"
    return line


def below(rate: float | None, fail_under: float) -> bool:
    """``--fail-under``: no rate (no meter expected) counts as below."""
    return rate is None or 100 * rate < fail_under


def _publisher(outbox: MqttOutbox) -> Callable[[str, str, dict[str, Any]], None]:
    def publish(meter_id: str, kind: str, payload: dict[str, Any]) -> None:
        outbox.enqueue_meter(meter_id, kind, payload)  # type: ignore[arg-type]

    return publish


def _shard_main(opts: CollectOptions, out: Any) -> None:
    """Entry point of a worker process: collect one shard, report progress on ``out``."""
    # Signals before the event loop is up are recorded and stop the run as soon as it starts.
    signals = StopSignals()
    with signals.trapped():
        _shard_run(opts, out, signals)


def _shard_run(opts: CollectOptions, out: Any, signals: StopSignals) -> None:
    setup_json_log(opts.log_file)
    last = 0.0

    def progress(stats: RunStats) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_INTERVAL_S:
            last = now
            out.put(("progress", opts.shard, stats.as_dict()))

    try:
        plan = load_plan(opts.config)
        summary, signum = asyncio.run(
            collect_async(opts, plan, progress, lambda: out.put(("ready", opts.shard)), signals)
        )
    except (StorageError, PlanError, OutboxError, OSError, KeyStoreError) as exc:
        out.put(("error", opts.shard, str(exc)))
        return
    out.put(("done", opts.shard, summary.as_dict(opts.worst), signum))


class _Display:
    """Rich progress on a terminal; silent otherwise (the summary goes to stdout at the end)."""

    def __init__(self, enabled: bool) -> None:
        self.progress: Progress | None = None
        if enabled:
            self.progress = Progress(
                TextColumn("[bold]collect"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("ok {task.fields[rate]}"),
                TextColumn("in flight {task.fields[in_flight]}"),
                TextColumn("retries {task.fields[retries]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self.task = self.progress.add_task(
                "collect", total=None, rate="-", in_flight=0, retries=0
            )
            self.progress.start()

    def update(self, parts: list[dict[str, Any]]) -> None:
        if self.progress is None:
            return
        total = sum(p["total"] - p["not_planned"] for p in parts)
        finished = sum(p["done"] + p["skipped_complete"] for p in parts)
        ok = sum(p["complete"] + p["skipped_complete"] for p in parts)
        self.progress.update(
            self.task,
            total=total,
            completed=finished,
            rate=f"{100 * ok / finished:.2f}%" if finished else "-",
            in_flight=sum(p["in_flight"] for p in parts),
            retries=sum(p["retries"] for p in parts),
        )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _merge_summaries(parts: list[dict[str, Any]], worst: int = DEFAULT_WORST) -> dict[str, Any]:
    """One summary of the shards' (each already capped at ``worst`` incomplete meters)."""
    if len(parts) == 1:
        return parts[0]
    out: dict[str, Any] = {"run_id": parts[0]["run_id"], "day": parts[0]["day"]}
    for key in (
        "total",
        "skipped_complete",
        "not_planned",
        "done",
        "complete",
        "failed",
        "attempts",
        "retries",
        "intervals_stored",
        "peak_in_flight",
    ):
        out[key] = sum(p[key] for p in parts)
    for key in ("errors", "final_errors"):
        merged: Counter[str] = Counter()
        for p in parts:
            merged.update(p[key])
        out[key] = dict(merged)
    finished = out["done"] + out["skipped_complete"]
    ok = out["complete"] + out["skipped_complete"]
    out["success_rate"] = ok / finished if finished else None
    incomplete = dict(kv for p in parts for kv in p["incomplete"].items())
    out["incomplete"], more = cap_incomplete(incomplete, worst)
    out["incomplete_more"] = more + sum(p["incomplete_more"] for p in parts)
    out["interrupted"] = any(p["interrupted"] for p in parts)
    out["seconds"] = max(p["seconds"] for p in parts)
    out["workers"] = len(parts)
    return out


def _run_sharded(
    opts: CollectOptions, workers: int, display: _Display
) -> tuple[list[dict[str, Any]], int | None]:
    """Run ``workers`` processes; forward SIGINT/SIGTERM to them; gather their summaries."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = []
    for shard in range(workers):
        shard_opts = replace(opts, shard=shard, shards=workers)
        proc = ctx.Process(target=_shard_main, args=(shard_opts, out), name=f"hes-collect-{shard}")
        proc.start()
        procs.append(proc)
    ready: set[int] = set()

    def send(shard: int, signum: int) -> None:
        proc = procs[shard]
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signum)

    def forward(signum: int) -> None:
        # Workers still starting get the signal once they can handle it ("ready").
        for shard in ready:
            send(shard, signum)

    stop_signals = StopSignals()
    received = stop_signals.received
    progress: dict[int, dict[str, Any]] = {}
    finals: dict[int, dict[str, Any]] = {}
    errors: list[str] = []
    signals: list[int] = []
    with stop_signals.trapped(forward):
        while len(finals) + len(errors) < workers:
            try:
                msg = out.get(timeout=PROGRESS_INTERVAL_S)
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs) and out.empty():
                    break
                continue
            kind, shard = msg[0], msg[1]
            if kind == "ready":
                ready.add(shard)
                if received:
                    send(shard, received[0])
            elif kind == "progress":
                progress[shard] = msg[2]
                display.update(list(progress.values()))
            elif kind == "done":
                finals[shard] = msg[2]
                progress[shard] = msg[2]
                if msg[3] is not None:
                    signals.append(msg[3])
                display.update(list(progress.values()))
            else:
                errors.append(f"worker {shard}: {msg[2]}")
        for proc in procs:
            proc.join()
    if errors:
        raise fail("; ".join(errors), 1)
    lost = [p.name for p in procs if p.exitcode not in (0, None)]
    if len(finals) < workers:
        raise fail(f"worker process(es) ended without a summary: {', '.join(lost)}", 1)
    signum = (received or signals)[0] if (received or signals) else None
    return [finals[k] for k in sorted(finals)], signum


def collect_command(
    db: DbOption = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="reading plan (TOML); default: built-in plan")
    ] = None,
    day: Annotated[
        str | None, typer.Option(help="day to collect, YYYY-MM-DD (default: yesterday)")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="sessions in flight (default: the plan's)")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="processes, links sharded between them")
    ] = 1,
    until_complete: Annotated[
        bool,
        typer.Option(
            "--until-complete/--once",
            help="retry transient failures until the window deadline, or one session per meter",
        ),
    ] = True,
    seed: Annotated[
        int | None, typer.Option(help="seed of the retry jitter (repeatable runs)")
    ] = None,
    log_file: Annotated[
        str | None, typer.Option("--log-file", help="write structured logs (JSON lines) here")
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="live progress on a terminal")
    ] = True,
    mqtt_url: Annotated[
        str | None,
        typer.Option(
            "--mqtt-url",
            help="publish each completed read to mqtt://[user[:pass]@]host[:port] as "
            "hes/<meter>/profile and hes/<meter>/registers (QoS 1, durably spooled)",
        ),
    ] = None,
    mqtt_spool: Annotated[
        str, typer.Option("--mqtt-spool", help="spool file of messages not yet acknowledged")
    ] = DEFAULT_SPOOL,
    clock_sync: Annotated[
        float | None,
        typer.Option(
            "--clock-sync",
            min=0,
            help="set LLS meters' clocks drifting more than "
            "this many seconds (default: no clock sync)",
        ),
    ] = None,
    events: Annotated[
        bool,
        typer.Option(
            "--events/--no-events", help="read new event-log entries of LLS meters, with outages"
        ),
    ] = False,
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="accept push alarms on HOST:PORT while collecting"),
    ] = None,
    master_key_file: Annotated[
        Path | None,
        typer.Option(
            "--master-key-file",
            help="file holding the key store's master key, "
            "for hls-gmac-suite0 meters (default: $HES_MASTER_KEY, else "
            "$HES_MASTER_KEY_FILE)",
        ),
    ] = None,
    fail_under: Annotated[
        float | None,
        typer.Option(
            "--fail-under",
            min=0,
            max=100,
            metavar="PCT",
            help=f"exit {EXIT_FAIL_UNDER} when a finished run's success rate is below PCT % "
            "(or there is none: no meter expected)",
        ),
    ] = None,
    worst: Annotated[
        int,
        typer.Option(
            "--worst",
            min=0,
            help="incomplete meters listed in the summary (the others are counted)",
        ),
    ] = DEFAULT_WORST,
) -> None:
    """Read every meter of the inventory for a day (and gaps of the days before), then print
    a JSON summary to stdout and one summary line to stderr. Exit 0 when the run finished,
    3 when it finished below --fail-under, 128+signal when stopped by a signal."""
    try:
        plan = load_plan(config)
    except PlanError as exc:
        raise fail(str(exc)) from None
    the_day = parse_day(day, plan, "--day")
    if listen is not None:
        try:
            parse_host_port(listen)
        except ValueError as exc:
            raise fail(f"--listen: {exc}") from None
    if mqtt_url is not None:
        try:
            parse_mqtt_url(mqtt_url)
        except ValueError as exc:
            raise fail(f"--mqtt-url: {exc}") from None
    opts = CollectOptions(
        db=db,
        config=str(config) if config is not None else None,
        day=the_day,
        run_id=f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}",
        concurrency=concurrency,
        once=not until_complete,
        seed=seed,
        log_file=log_file,
        mqtt_url=mqtt_url,
        mqtt_spool=mqtt_spool,
        clock_threshold_s=clock_sync,
        events=events,
        listen=listen,
        master_key_file=str(master_key_file) if master_key_file is not None else None,
        worst=worst,
    )
    setup_json_log(log_file)
    display = _Display(progress and sys.stderr.isatty())
    signum: int | None
    try:
        if workers == 1:
            try:
                summary, signum = asyncio.run(
                    collect_async(opts, plan, lambda s: display.update([s.as_dict()]))
                )
            except (StorageError, OutboxError, OSError) as exc:
                raise fail(str(exc), 1) from None
            except KeyStoreError as exc:
                raise fail(str(exc), 2) from None
            parts = [summary.as_dict(worst)]
        else:
            parts, signum = _run_sharded(opts, workers, display)
    finally:
        display.close()
    result = _merge_summaries(parts, worst)
    typer.echo(json.dumps(result))
    line = summary_line(result)
    failed_under = (
        signum is None and fail_under is not None and below(result["success_rate"], fail_under)
    )
    if failed_under:
        line += f"; below --fail-under {fail_under:g} %"
    typer.echo(line, err=True)
    if signum is not None:
        raise typer.Exit(128 + signum)
    if failed_under:
        raise typer.Exit(EXIT_FAIL_UNDER)
