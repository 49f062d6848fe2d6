"""``hes report --line-loss``: supplied, sold and lost energy per transformer area and day.

The figures come from :mod:`storage.line_loss` (two boundary values per meter, the pure
per-area arithmetic); this module checks the options, names what is wrong, and prints.
See ``docs/line-loss.md`` for the definitions and statuses.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from app.support import fail
from collector.plan import Plan, check_band
from storage.database import Database
from storage.export import known_areas
from storage.gaps import day_window
from storage.line_loss import AreaLoss, area_losses, area_members, boundary_values

#: How many known areas an "unknown area" error lists.
_AREAS_SHOWN = 10


def parse_band(text: str) -> tuple[float, float]:
    """``LOW:HIGH`` loss rates (``0:0.10``); a typer Exit naming the fault otherwise."""
    low_text, sep, high_text = text.partition(":")
    try:
        if not sep:
            raise ValueError("give LOW:HIGH, e.g. 0:0.10")
        try:
            low, high = float(low_text), float(high_text)
        except ValueError:
            raise ValueError("LOW and HIGH must be numbers, e.g. 0:0.10") from None
        return check_band(low, high)
    except ValueError as exc:
        raise fail(f"--band {text!r}: {exc}") from None


def line_loss_data(
    db: Database,
    plan: Plan,
    day: date,
    area: str | None,
    band: tuple[float, float],
    channel: str,
) -> dict[str, Any]:
    """The report of ``day`` (midnight to midnight in the plan's zone) as a JSON-ready dict;
    a typer Exit for an unknown area or a day with no value at all."""
    members = area_members(db, day, area)
    if not members:
        if area is not None:
            areas = known_areas(db)
            shown = ", ".join(areas[:_AREAS_SHOWN]) or "none"
            more = f" and {len(areas) - _AREAS_SHOWN} more" if len(areas) > _AREAS_SHOWN else ""
            raise fail(
                f"--area {area!r}: no meter of the inventory is in it (areas: {shown}{more})", 1
            )
        raise fail("no meter of the inventory is in an area (inventory column area)", 1)
    start, end = day_window(day, plan.tz)
    values = list(boundary_values(db, channel, (start, end), area))
    if not any(v[2] is not None for v in values):
        where = f"area {area!r}" if area is not None else "any area"
        raise fail(
            f"no {channel} value of {where} at {_stamp(start, plan)} or {_stamp(end, plan)}: "
            f"collect {day} and the day after (the day's last entry is stamped at the next "
            "midnight)",
            1,
        )
    losses = area_losses(members, values, start, end, band)
    return {
        "day": day.isoformat(),
        "timezone": plan.timezone,
        "channel": channel,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "band": {"low": band[0], "high": band[1]},
        "areas": [_area_json(a) for a in losses],
        "by_status": _by_status(losses),
    }


def _stamp(ts: datetime, plan: Plan) -> str:
    return ts.astimezone(plan.tz).isoformat(timespec="minutes")


def _number(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _area_json(a: AreaLoss) -> dict[str, Any]:
    return {
        "area": a.area,
        "status": a.status,
        "transformer": a.transformer,
        "supplied_kwh": _number(a.supplied_kwh),
        "sold_kwh": _number(a.sold_kwh),
        "loss_kwh": _number(a.loss_kwh),
        "loss_rate": a.loss_rate,
        "customers": a.customers,
        "customers_counted": a.customers_counted,
        "missing_count": a.missing_count,
        "missing": list(a.missing),
    }


def _by_status(losses: list[AreaLoss]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in losses:
        counts[a.status] = counts.get(a.status, 0) + 1
    return counts


def print_line_loss(data: dict[str, Any], output: str) -> None:
    """The report as one JSON document or as a table."""
    if output == "json":
        typer.echo(json.dumps(data, indent=2))
        return
    band = data["band"]
    table = Table(
        title=f"hes line loss {data['day']} ({data['timezone']}, {data['channel']}, "
        f"ok band {100 * band['low']:g} % .. {100 * band['high']:g} %)"
    )
    columns = ("area", "status", "supplied kWh", "sold kWh", "loss kWh", "loss rate")
    for col in (*columns, "customers", "lacking"):
        table.add_column(col, justify="left" if col in ("area", "status") else "right")
    lacking = []
    for a in data["areas"]:
        rate = a["loss_rate"]
        if a["missing"]:
            more = a["missing_count"] - len(a["missing"])
            names = ", ".join(a["missing"]) + (f" and {more} more" if more else "")
            lacking.append(f"{a['area']}: lacking a value at either midnight: {names}")
        table.add_row(
            a["area"],
            a["status"].replace("_", " "),
            _kwh_text(a["supplied_kwh"]),
            _kwh_text(a["sold_kwh"]),
            _kwh_text(a["loss_kwh"]),
            "-" if rate is None else f"{100 * rate:.2f} %",
            f"{a['customers_counted']}/{a['customers']}",
            str(a["missing_count"]),
        )
    console = Console()
    if not console.is_terminal:  # a file or a pipe: no 80-column default cutting names short
        console = Console(width=120)
    console.print(table)
    for line in lacking:
        typer.echo(line)
    counts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(data["by_status"].items()))
    typer.echo(f"areas: {counts}")


def _kwh_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
