"""``hes report``: the collection figures of a day, as a table or JSON, optionally a PNG plot;
with ``--line-loss`` the line loss per transformer area instead (:mod:`app.line_loss`)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from app.line_loss import line_loss_data, parse_band, print_line_loss
from app.support import DbOption, fail, open_db, parse_day
from collector.plan import Plan, PlanError, load_plan
from collector.report_plot import PlotError, check_png_path, plot_load_curve, plot_success_rate
from storage.database import Database
from storage.errors import StorageError
from storage.gaps import day_window
from storage.report import DayRate, day_rate


def judged_on(plan: Plan) -> tuple[list[str], int]:
    """The channels and the profile period a day is judged on: the plan's.

    Never what happens to be stored: a fresh database where every read failed holds no
    channel at all, and judging on stored channels would call that night 100 %.
    """
    channels = list(dict.fromkeys(c for g in plan.groups for c in g.channels))
    return channels, plan.groups[0].profile.period_s


def plan_daily_report(db: Database, plan: Plan, day: date, worst: int = 10) -> dict[str, Any]:
    """:func:`storage.report.daily_report` of ``day`` judged on ``plan`` (in its zone)."""
    channels, period_s = judged_on(plan)
    return db.daily_report(day, channels, period_s=period_s, tz=plan.tz, worst=worst)


def plan_success_rates(db: Database, plan: Plan, last_day: date, days: int) -> list[DayRate]:
    """:func:`storage.report.success_rates` judged on ``plan``, oldest first."""
    channels, period_s = judged_on(plan)
    return db.success_rates(last_day, days, channels, period_s=period_s, tz=plan.tz)


def collection_day(plan: Plan, now: datetime | None = None) -> date:
    """The day the head-end collects today: yesterday in the plan's zone (a day's profile is
    only whole after its midnight), the day ``hes collect`` reads by default."""
    return (now or datetime.now(UTC)).astimezone(plan.tz).date() - timedelta(days=1)


def report_command(
    report_date: Annotated[str, typer.Option("--date", help="collection day, YYYY-MM-DD")],
    db: DbOption = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="reading plan: its channels, period and time zone"),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    worst: Annotated[int, typer.Option(min=0, help="how many worst meters to list")] = 10,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="also write a PNG: the success rate per day, or with --meter its load curve",
        ),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option(
            min=1, help="with --plot: days ending at --date (default: 14; with --meter: 1)"
        ),
    ] = None,
    meter: Annotated[
        str | None, typer.Option("--meter", help="with --plot: plot this meter's load curve")
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(
            help="with --meter: channel to plot (default: the plan's first channel); "
            "with --line-loss: the A+ channel (default: the plan's [line_loss] channel)"
        ),
    ] = None,
    line_loss: Annotated[
        bool,
        typer.Option(
            "--line-loss", help="line loss per transformer area instead (docs/line-loss.md)"
        ),
    ] = False,
    area: Annotated[
        str | None, typer.Option("--area", help="with --line-loss: only this area")
    ] = None,
    band: Annotated[
        str | None,
        typer.Option(
            "--band",
            help="with --line-loss: loss rates judged ok, LOW:HIGH (default: the plan's, 0:0.10)",
        ),
    ] = None,
) -> None:
    """Collection figures of a day: expected and complete meters, success rate, missing
    intervals, failures by error class, by link and by area, the worst meters.

    --plot FILE.png also draws the success rate per day, or with --meter a load curve.
    --line-loss reports supplied, sold and lost energy per transformer area instead."""
    if output not in ("table", "json"):
        raise fail(f"--format {output!r}: use table or json")
    if line_loss:
        for name, given in (("--plot", plot), ("--meter", meter), ("--days", days)):
            if given is not None:
                raise fail(f"{name} does not go with --line-loss")
        _line_loss(report_date, db, config, output, area, band, channel)
        return
    for name, given in (("--area", area), ("--band", band)):
        if given is not None:
            raise fail(f"{name} needs --line-loss")
    if plot is None and (meter is not None or days is not None):
        raise fail(f"{'--meter' if meter is not None else '--days'} needs --plot FILE.png")
    if channel is not None and meter is None:
        raise fail("--channel needs --meter")
    if plot is not None:
        try:
            plot = check_png_path(plot)
        except PlotError as exc:
            raise fail(f"--plot {exc}") from None
    try:
        plan = load_plan(config)
    except PlanError as exc:
        raise fail(str(exc)) from None
    the_day = parse_day(report_date, plan, "--date")
    written: Path | None = None
    database = open_db(db)
    try:
        data = plan_daily_report(database, plan, the_day, worst)
        if plot is not None and meter is not None:
            written = _plot_meter(database, plot, plan, meter, channel, the_day, days or 1)
        elif plot is not None:
            n = days or 14
            series: list[DayRate] = []
            if n > 1:  # the days before --date; --date itself is the report just made
                series = plan_success_rates(database, plan, the_day - timedelta(days=1), n - 1)
            series.append(day_rate(data))
            written = plot_success_rate(series, plot)
    except StorageError as exc:
        raise fail(str(exc), 1) from None
    except PlotError as exc:
        raise fail(str(exc), 1) from None
    finally:
        database.close()
    if output == "json":
        typer.echo(json.dumps(data, indent=2, default=str))
        if written is not None:
            typer.echo(f"plot: {written}", err=True)  # stdout stays one JSON document
        return
    _print_report(data)
    if written is not None:
        typer.echo(f"plot: {written}")


def _line_loss(
    report_date: str,
    db: str | None,
    config: Path | None,
    output: str,
    area: str | None,
    band_text: str | None,
    channel: str | None,
) -> None:
    """``hes report --line-loss``: check the options, compute, print."""
    try:
        plan = load_plan(config)
    except PlanError as exc:
        raise fail(str(exc)) from None
    band = parse_band(band_text) if band_text is not None else plan.line_loss.band
    the_day = parse_day(report_date, plan, "--date")
    database = open_db(db)
    try:
        data = line_loss_data(
            database, plan, the_day, area, band, channel or plan.line_loss.channel
        )
    except StorageError as exc:
        raise fail(str(exc), 1) from None
    finally:
        database.close()
    print_line_loss(data, output)


def _plot_meter(
    database: Database,
    path: Path,
    plan: Plan,
    meter_id: str,
    channel: str | None,
    last_day: date,
    days: int,
) -> Path:
    """Write one meter's load curve over ``days`` days ending with ``last_day``."""
    record = database.get_meter(meter_id)
    if record is None:
        raise fail(f"--meter {meter_id!r}: not in the inventory", 1)
    group = plan.group_for(record) or plan.groups[0]
    name = channel if channel is not None else group.channels[0]
    first_day = last_day - timedelta(days=days - 1)
    start, end = day_window(first_day, plan.tz)[0], day_window(last_day, plan.tz)[1]
    rows = database.interval_reads(meter_id, name, start, end)
    known = {c.channel: c for c in database.meter_channels(meter_id)}
    if not any(r.value is not None for r in rows):
        span = first_day.isoformat() if days == 1 else f"{first_day} to {last_day}"
        have = ", ".join(known) or "none recorded"
        raise fail(
            f"meter {meter_id} channel {name}: no interval values stored for {span} "
            f"(the meter's channels: {have})",
            1,
        )
    info = known.get(name)
    return plot_load_curve(
        meter_id,
        name,
        rows,
        path,
        start=start,
        end=end,
        period_s=info.period_s if info is not None and info.period_s else group.profile.period_s,
        unit=info.unit if info is not None else None,
        tz=plan.tz,
    )


def _percent(rate: float | None, digits: int = 3) -> str:
    return "no data" if rate is None else f"{100 * rate:.{digits}f} %"


def _print_report(data: dict[str, Any]) -> None:
    console = Console()
    head = Table(title=f"hes collection report {data['day']}", show_header=False)
    head.add_column("figure")
    head.add_column("value", justify="right")
    head.add_row("meters expected", str(data["expected_meters"]))
    head.add_row(
        "meters not expected (disabled, not yet installed)", str(data["not_expected_meters"])
    )
    head.add_row("meters complete", str(data["complete_meters"]))
    head.add_row("meters failed (tried, incomplete)", str(data["failed_meters"]))
    head.add_row("meters not collected (never tried)", str(data["not_collected_meters"]))
    head.add_row("success rate (final, after re-reads)", _percent(data["success_rate"]))
    head.add_row("first-pass rate (complete after one session)", _percent(data["first_pass_rate"]))
    head.add_row("intervals expected", str(data["intervals_expected"]))
    head.add_row("intervals missing", str(data["intervals_missing"]))
    for outcome, n in sorted(data["attempts_by_outcome"].items()):
        head.add_row(f"attempts {outcome}", str(n))
    console.print(head)
    _counts(console, "failed attempts by error class", data["failures_by_error_class"])
    _counts(console, "incomplete meters by last error", data["incomplete_by_last_error_class"])
    groups = Table(title="by area")
    columns = (
        "area",
        "expected",
        "complete",
        "failed",
        "not collected",
        "not expected",
        "first pass",
        "success rate",
        "intervals missing",
    )
    for col in columns:
        groups.add_column(col, justify="left" if col == "area" else "right")
    for area, g in data["by_area"].items():
        groups.add_row(
            area or "-",
            str(g["expected"]),
            str(g["complete"]),
            str(g["failed"]),
            str(g["not_collected"]),
            str(g["not_expected"]),
            _percent(g["first_pass_rate"], 2),
            _percent(g["success_rate"], 2),
            str(g["intervals_missing"]),
        )
    console.print(groups)
    if data["by_link"]:
        links = Table(title="links with incomplete meters")
        for col in ("link", "expected", "failed", "not collected", "intervals missing"):
            links.add_column(col)
        for link, g in data["by_link"].items():
            links.add_row(
                link,
                str(g["expected"]),
                str(g["failed"]),
                str(g["not_collected"]),
                str(g["intervals_missing"]),
            )
        console.print(links)
    if data["worst_meters"]:
        worst = Table(title="worst meters")
        for col in ("meter", "link", "missing", "last outcome", "last error"):
            worst.add_column(col)
        for m in data["worst_meters"]:
            worst.add_row(
                m["meter_id"],
                str(m["link_id"]),
                str(m["intervals_missing"]),
                str(m["last_outcome"]).replace("_", " "),
                str(m["last_error_class"] or "-"),
            )
        console.print(worst)


def _counts(console: Console, title: str, counts: dict[str, int]) -> None:
    if not counts:
        return
    table = Table(title=title)
    table.add_column("class")
    table.add_column("count", justify="right")
    for key, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        table.add_row(key, str(n))
    console.print(table)
