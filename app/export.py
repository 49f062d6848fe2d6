"""``hes export``: interval reads of a time range as CSV or Parquet, for billing, MDM and
line-loss analysis downstream.

Streaming end to end: :func:`storage.export.interval_columns` reads the range in bounded
batches and :mod:`app.export_formats` writes each one before the next is read, so memory stays
flat however large the range. A file is written under a temporary name beside ``--out`` and
renamed when complete, so a failed export never leaves a file that looks whole. What the
columns mean (timestamps are interval ends, values scaled, units, status bits) is
``docs/export.md``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import IO, Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from app.export_formats import FORMATS, BatchWriter, CsvWriter, ParquetWriter
from app.support import DbOption, fail, open_db
from collector.plan import PlanError, load_plan
from storage.database import Database
from storage.errors import StorageError
from storage.export import BATCH_ROWS, ExportRange, interval_columns, known_areas, unknown_meters

#: How many known areas an "unknown area" error lists.
_AREAS_SHOWN = 20


def parse_zone(name: str) -> tzinfo:
    """``UTC`` or an IANA zone name (``Europe/Berlin``); a clear exit for any other."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(f"--tz {name!r} is not a time zone (use UTC or an IANA name)") from None


def parse_instant(text: str, zone: tzinfo, option: str) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is wall time in ``zone``."""
    try:
        instant = datetime.fromisoformat(text.strip())
    except ValueError:
        raise fail(
            f"{option} {text!r} is not an ISO 8601 date or date-time "
            "(e.g. 2026-03-10 or 2026-03-10T06:00+01:00)"
        ) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=zone)
    return instant


def _zone_name(zone: tzinfo) -> str:
    return "UTC" if zone is UTC else str(zone)


def _check_filters(db: Database, spec: ExportRange) -> None:
    """An area or meter nobody knows is a typo, not an empty export: say so."""
    if spec.area is not None:
        areas = known_areas(db)
        if spec.area not in areas:
            shown = ", ".join(areas[:_AREAS_SHOWN]) or "none"
            more = f" and {len(areas) - _AREAS_SHOWN} more" if len(areas) > _AREAS_SHOWN else ""
            raise fail(
                f"--area {spec.area!r}: no meter of the inventory is in it (areas: {shown}{more})"
            )
    unknown = unknown_meters(db, spec.meters)
    if unknown:
        raise fail(
            f"--meter {', '.join(map(repr, unknown))}: not in the inventory, no reads recorded"
        )


def _open_out(out: str, fmt: str) -> tuple[Any, Path | None]:
    """The stream to write (stdout for ``-``) and the temporary file behind it, if any."""
    if out == "-":
        if fmt == "parquet":
            if sys.stdout.isatty():
                raise fail("--format parquet is binary: give --out FILE, or redirect stdout")
            return sys.stdout.buffer, None
        return sys.stdout, None
    target = Path(out)
    if target.is_dir():
        raise fail(f"--out {out}: is a directory")
    partial = target.with_name(f".{target.name}.partial")
    try:
        stream: IO[Any] = (
            open(partial, "wb")
            if fmt == "parquet"
            else open(partial, "w", encoding="utf-8", newline="")
        )
    except OSError as exc:
        raise fail(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    return stream, partial


def export_reads(
    db: Database,
    spec: ExportRange,
    writer: BatchWriter,
    batch_rows: int = BATCH_ROWS,
) -> tuple[int, int]:
    """Stream ``spec`` into ``writer``; returns (rows, meters) written. Closes the writer."""
    rows = meters = 0
    last_meter: str | None = None
    batches = interval_columns(db, spec, batch_rows)
    try:
        with contextlib.closing(batches):
            for batch in batches:
                writer.write(batch)
                rows += len(batch)
                ids = dict.fromkeys(run[0] for run in batch.runs)
                meters += len(ids) - (1 if last_meter in ids else 0)
                last_meter = batch.runs[-1][0]
    except BaseException:
        # The file is discarded; closing only releases the writer (its footer may not fit).
        with contextlib.suppress(Exception):
            writer.close()
        raise
    writer.close()
    return rows, meters


def export_command(
    start: Annotated[
        str, typer.Option("--from", help="first instant, ISO 8601 (a date means its midnight)")
    ],
    end: Annotated[str, typer.Option("--to", help="end of the range (excluded), ISO 8601")],
    area: Annotated[str | None, typer.Option("--area", help="only the meters of this area")] = None,
    meter: Annotated[
        list[str] | None, typer.Option("--meter", help="only this meter (repeatable)")
    ] = None,
    channel: Annotated[
        list[str] | None,
        typer.Option("--channel", help="only this channel, e.g. 1.0.1.8.0.255 (repeatable)"),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    out: Annotated[str, typer.Option("--out", help="file to write, or - for stdout")] = "-",
    tz: Annotated[
        str | None,
        typer.Option(
            "--tz",
            help="time zone of timestamps and of dates without an offset "
            "(default: the plan's, or UTC)",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="reading plan: its time zone is the default")
    ] = None,
    batch_rows: Annotated[
        int, typer.Option("--batch-rows", min=1, help="rows read and written at a time")
    ] = BATCH_ROWS,
    db: DbOption = None,
) -> None:
    """Interval reads in [--from, --to) as CSV or Parquet, scaled with units (docs/export.md).

    Rows are ordered by meter, channel and timestamp; a timestamp is the END of the interval
    (the profile entry's capture time)."""
    if fmt not in FORMATS:
        raise fail(f"--format {fmt!r}: use csv or parquet")
    if tz is None:
        try:
            tz = load_plan(config).timezone
        except PlanError as exc:
            raise fail(str(exc)) from None
    zone = parse_zone(tz)
    first = parse_instant(start, zone, "--from")
    stop = parse_instant(end, zone, "--to")
    if stop <= first:
        raise fail(f"--to {stop.isoformat()} is not after --from {first.isoformat()}")
    spec = ExportRange(first, stop, area, tuple(meter or ()), tuple(channel or ()))
    database = open_db(db)
    try:
        try:
            _check_filters(database, spec)
        except StorageError as exc:
            raise fail(str(exc), 1) from None
        stream, partial = _open_out(out, fmt)
        started = time.monotonic()
        try:
            rows, meters = _run(database, spec, stream, fmt, zone, batch_rows)
            if partial is not None:
                stream.close()
                os.replace(partial, out)
        except OSError as exc:
            raise fail(f"writing {out} failed: {exc.strerror or exc}", 1) from None
        finally:
            if partial is not None:
                stream.close()
                partial.unlink(missing_ok=True)
    finally:
        database.close()
    where = "stdout" if out == "-" else out
    took = time.monotonic() - started
    if rows == 0:
        typer.echo(
            f"hes export: warning: no interval reads in [{first.isoformat()}, "
            f"{stop.isoformat()}){_filters(spec)}; wrote an empty {fmt} to {where}",
            err=True,
        )
        return
    typer.echo(
        f"hes export: {rows} values of {meters} meters{_filters(spec)} to {where} in {took:.1f} s",
        err=True,
    )


def _filters(spec: ExportRange) -> str:
    parts = []
    if spec.area is not None:
        parts.append(f"area {spec.area}")
    if spec.meters:
        parts.append(f"{len(spec.meters)} named meters")
    if spec.channels:
        parts.append(f"channels {', '.join(spec.channels)}")
    return f" ({'; '.join(parts)})" if parts else ""


def _run(
    db: Database, spec: ExportRange, stream: Any, fmt: str, zone: tzinfo, batch_rows: int
) -> tuple[int, int]:
    """The export proper; storage and write failures become clear exits."""
    writer: BatchWriter
    try:
        if fmt == "parquet":
            meta = {
                "hes.from": spec.start.isoformat(),
                "hes.to": spec.end.isoformat(),
                "hes.ts": "interval end (profile capture time)",
            }
            writer = ParquetWriter(stream, _zone_name(zone), meta)
        else:
            writer = CsvWriter(stream, zone)
        return export_reads(db, spec, writer, batch_rows)
    except StorageError as exc:
        raise fail(str(exc), 1) from None
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python's final flush of
        # stdout from failing on the closed pipe too.
        _silence_stdout()
        raise fail("stdout was closed before the export ended", 1) from None
    except OSError as exc:
        raise fail(f"writing the export failed: {exc.strerror or exc}", 1) from None


def _silence_stdout() -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
