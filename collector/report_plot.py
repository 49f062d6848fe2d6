"""PNG plots for ``hes report --plot``: the success rate per day and one meter's load curve.

One concern: turning report data that the caller has already read from storage into a PNG
file. Nothing here touches the database. matplotlib is imported inside the plotting functions
(``hes`` start-up stays fast) and drawn with the object-oriented API on an Agg canvas, so no
global backend is switched and no display is needed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from protocols.cosem import UNIT_NAMES
from storage.gaps import epoch, expected_epochs, from_epoch, group_missing, missing_epochs
from storage.records import IntervalRead
from storage.report import DayRate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The success-rate target drawn on the success plot: 99.99 % of meters complete per day.
SUCCESS_TARGET = 0.9999
_SIZE_IN = (10.0, 4.8)
_DPI = 100


class PlotError(Exception):
    """A plot could not be written (bad path, nothing to plot); the message says why."""


def check_png_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if a PNG can be written there, else :class:`PlotError`.

    Checked before any (possibly long) database query, so a typo fails at once.
    """
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise PlotError(f"{p}: the plot is a PNG image, name the file *.png")
    if p.is_dir():
        raise PlotError(f"{p}: is a directory")
    parent = p.parent
    if not parent.is_dir():
        raise PlotError(f"{p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise PlotError(f"{p}: not writable")
    return p


def unit_label(unit: int | None) -> str | None:
    """The COSEM unit's name (``Wh``, ``var``...), or None when the unit is unknown."""
    if unit is None:
        return None
    return UNIT_NAMES.get(unit, f"unit {unit}")


def scaled(raw: int, scaler: int) -> float:
    """Physical value raw * 10**scaler (divides by an exact power of ten for negative ones)."""
    if scaler >= 0:
        return float(raw * 10**scaler)
    return raw / 10 ** (-scaler)


def load_curve_series(
    rows: Sequence[IntervalRead], start: datetime, end: datetime, period_s: int
) -> tuple[list[datetime], list[float], list[tuple[datetime, datetime]]]:
    """(x, y, missing) of a load curve over ``[start, end)``.

    y is the scaled value; where consecutive stored entries are more than one period apart,
    a NaN point between them breaks the line, so a gap stays a gap instead of being bridged.
    ``missing`` lists the expected aligned stamps without a (non-null) value, merged into
    inclusive (first, last) ranges.
    """
    present: list[IntervalRead] = sorted(
        (r for r in rows if r.value is not None and start <= r.ts < end), key=lambda r: r.ts
    )
    xs: list[datetime] = []
    ys: list[float] = []
    step = timedelta(seconds=period_s)
    for r in present:
        if xs and r.ts - xs[-1] > step:
            xs.append(xs[-1] + step)
            ys.append(math.nan)
        assert r.value is not None
        xs.append(r.ts)
        ys.append(scaled(r.value, r.scaler))
    absent = missing_epochs(
        expected_epochs(start, end, period_s), (epoch(r.ts) for r in present), ()
    )
    missing = [(from_epoch(a), from_epoch(b)) for a, b in group_missing(absent, period_s)]
    return xs, ys, missing


#: Energy units (Blue Book unit enumeration) and the power unit of their per-interval rate.
ENERGY_TO_POWER = {30: 27, 31: 28, 32: 29}  # Wh -> W, VAh -> VA, varh -> var


def is_cumulative_energy(channel: str, unit: int | None) -> bool:
    """Whether a channel holds a cumulative energy register (OBIS D = 8, time integral 1;
    an energy unit), whose load curve is the average power of each interval."""
    parts = re.split(r"[.:\-*]", channel)
    return unit in ENERGY_TO_POWER and len(parts) >= 4 and parts[3] == "8"


def demand_series(
    times: Sequence[datetime], values: Sequence[float], period_s: int
) -> tuple[list[datetime], list[float]]:
    """Average power over each interval from a cumulative register's series.

    A profile entry is stamped at the end of its interval, so the value at ``t`` minus the
    value at ``t - period`` is the energy of the interval ending at ``t``; x 3600 / period
    gives its mean power. An interval without both ends stored is NaN (a gap).
    """
    step = timedelta(seconds=period_s)
    per_hour = 3600 / period_s
    xs: list[datetime] = []
    ys: list[float] = []
    for i in range(1, len(times)):
        xs.append(times[i])
        a, b = values[i - 1], values[i]
        ok = times[i] - times[i - 1] == step and not (math.isnan(a) or math.isnan(b))
        ys.append((b - a) * per_hour if ok else math.nan)
    return xs, ys


def _day_range(first: date, last: date) -> str:
    return first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"


def _num(ts: datetime) -> float:
    """matplotlib's date number (days) of an aware datetime: the axes hold plain floats."""
    from matplotlib.dates import date2num

    return float(date2num(ts))


def _new_figure(size_in: tuple[float, float] = _SIZE_IN) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size_in, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    try:
        fig.savefig(p, format="png", dpi=_DPI)
    except OSError as exc:
        raise PlotError(f"{p}: cannot write: {exc.strerror or exc}") from None
    return p


def success_figure(days: Sequence[DayRate], *, target: float = SUCCESS_TARGET) -> Figure:
    """The success-rate plot of ``days`` as a matplotlib Figure (not yet written).

    Top: the final success rate per day (green on target, red below it, labelled
    complete/expected up to a month) and the first-pass rate (dashed), over a y axis zoomed
    to what was reached. Bottom: the incomplete meters of each day, *failed* (tried) stacked
    under *not collected* (never tried), so a stopped collector is not mistaken for
    unreachable meters. A day without expected meters is labelled "no data" in both panels,
    never drawn as 0 or 100 %.
    """
    if not days:
        raise PlotError("no day to plot")
    from matplotlib.dates import AutoDateLocator, DateFormatter, DayLocator
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    series = sorted((DayRate(*d) for d in days), key=lambda d: d.day)
    xs = [_num(datetime.combine(d.day, time(0), UTC)) for d in series]
    ys = [math.nan if d.success_rate is None else d.success_rate for d in series]
    first = [math.nan if d.first_pass_rate is None else d.first_pass_rate for d in series]
    few = len(series) <= 31  # beyond a month, per-day labels are clutter

    fig = _new_figure((_SIZE_IN[0], _SIZE_IN[1] * 1.35))
    ax, bars = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    ax.plot(xs, ys, color="tab:blue", linewidth=1.5, zorder=2, label="final (after re-reads)")
    ax.plot(
        xs,
        first,
        color="tab:purple",
        linestyle="--",
        linewidth=1.0,
        zorder=2,
        label="first pass",
    )
    ok = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(y) and y >= target]
    low = [
        (x, y, d)
        for x, y, d in zip(xs, ys, series, strict=True)
        if not math.isnan(y) and y < target
    ]
    if ok:
        ax.scatter([p[0] for p in ok], [p[1] for p in ok], color="tab:green", zorder=3, s=25)
    if low:
        ax.scatter([p[0] for p in low], [p[1] for p in low], color="tab:red", zorder=3, s=25)
        for x, y, d in low if few else ():
            ax.annotate(
                f"{d.complete}/{d.expected}",
                (x, y),
                textcoords="offset points",
                xytext=(0, -12),
                ha="center",
                fontsize=7,
                color="tab:red",
            )
    ax.axhline(target, color="tab:orange", linestyle=":", linewidth=1, zorder=1)
    ax.annotate(
        f"target {100 * target:g} %",
        (0.0, target),
        xycoords=("axes fraction", "data"),
        textcoords="offset points",
        xytext=(4, 3),
        fontsize=8,
        color="tab:orange",
    )
    known = [y for y in (*ys, *first) if not math.isnan(y)]
    lo = min([*known, target])
    pad = max((1.0 - lo) * 0.15, 0.00002)
    ax.set_ylim(lo - pad, 1.0 + pad)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_ylabel("meters complete")
    ax.legend(loc="lower left", fontsize=7)
    ax.grid(True, linewidth=0.3)

    failed = [d.failed for d in series]
    not_collected = [d.not_collected for d in series]
    bars.bar(xs, failed, width=0.8, color="tab:red", label="failed (tried)")
    bars.bar(xs, not_collected, width=0.8, bottom=failed, color="tab:gray", label="not collected")
    for x, d in zip(xs, series, strict=True):
        if d.success_rate is not None:
            continue
        for panel in (ax, bars):
            panel.axvspan(x - 0.4, x + 0.4, color="0.9", zorder=0, linewidth=0)
            panel.annotate(
                "no data",
                (x, 0.5),
                xycoords=("data", "axes fraction"),
                ha="center",
                va="center",
                rotation=90,
                fontsize=7,
                color="gray",
            )
    bars.set_ylabel("meters incomplete")
    bars.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    bars.set_ylim(0, max([1, *(f + n for f, n in zip(failed, not_collected, strict=True))]) * 1.15)
    bars.legend(loc="upper left", fontsize=7)
    bars.grid(True, axis="y", linewidth=0.3)

    bars.set_xlim(xs[0] - 0.5, xs[-1] + 0.5)  # date numbers count days
    if few:
        bars.xaxis.set_major_locator(DayLocator(interval=max(1, math.ceil(len(xs) / 16)), tz=UTC))
    else:
        bars.xaxis.set_major_locator(AutoDateLocator(tz=UTC))
    bars.xaxis.set_major_formatter(DateFormatter("%m-%d", tz=UTC))
    bars.set_xlabel("collection day")
    n = len(series)
    ax.set_title(
        f"hes collection success rate, {_day_range(series[0].day, series[-1].day)} "
        f"({n} day{'s' if n != 1 else ''})"
    )
    return fig


def plot_success_rate(
    days: Sequence[DayRate],
    path: str | os.PathLike[str],
    *,
    target: float = SUCCESS_TARGET,
) -> Path:
    """Write :func:`success_figure` of ``days`` to a PNG; returns the path written."""
    return _save(success_figure(days, target=target), path)


def plot_load_curve(
    meter_id: str,
    channel: str,
    rows: Sequence[IntervalRead],
    path: str | os.PathLike[str],
    *,
    start: datetime,
    end: datetime,
    period_s: int = 900,
    unit: int | None = None,
    tz: tzinfo = UTC,
) -> Path:
    """Write one meter channel's stored interval values over ``[start, end)`` to a PNG.

    Values are scaled by each entry's stored scaler; missing intervals are gaps in the line,
    shaded red. Times are shown in ``tz``. Returns the path written.
    """
    times, ys, missing = load_curve_series(rows, start, end, period_s)
    if not times:
        raise PlotError(f"meter {meter_id} channel {channel}: no stored value to plot")
    demand = is_cumulative_energy(channel, unit)
    if demand:
        # a register that only grows says little to the eye: plot what each interval drew
        times, ys = demand_series(times, ys, period_s)
        if not times:
            raise PlotError(
                f"meter {meter_id} channel {channel}: one stored value, no interval to plot"
            )
    from matplotlib.dates import AutoDateLocator, DateFormatter
    from matplotlib.patches import Patch

    xs = [_num(t) for t in times]
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.plot(xs, ys, color="tab:blue", linewidth=1.2)
    # a value with gaps on both sides draws no line segment: mark it so it is not lost
    alone = [
        i
        for i, y in enumerate(ys)
        if not math.isnan(y)
        and (i == 0 or math.isnan(ys[i - 1]))
        and (i == len(ys) - 1 or math.isnan(ys[i + 1]))
    ]
    if alone:
        ax.scatter([xs[i] for i in alone], [ys[i] for i in alone], color="tab:blue", s=8)
    half = period_s / 2 / 86400  # date numbers count days
    for first, last in missing:
        ax.axvspan(_num(first) - half, _num(last) + half, color="tab:red", alpha=0.15, linewidth=0)
    if missing:
        n_missing = sum((b - a) // timedelta(seconds=period_s) + 1 for a, b in missing)
        ax.legend(
            handles=[Patch(color="tab:red", alpha=0.15, label=f"no stored value ({n_missing})")],
            loc="upper left",
            fontsize=8,
        )
    ax.set_xlim(_num(start), _num(end))
    ax.xaxis.set_major_locator(AutoDateLocator(tz=tz))
    multi_day = end - start > timedelta(days=1)
    ax.xaxis.set_major_formatter(DateFormatter("%m-%d %H:%M" if multi_day else "%H:%M", tz=tz))
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    if demand and unit is not None:
        ax.set_ylabel(f"{channel}: mean power per interval [{unit_label(ENERGY_TO_POWER[unit])}]")
    else:
        name = unit_label(unit)
        ax.set_ylabel(f"{channel} [{name}]" if name else channel)
    ax.set_xlabel(f"time ({tz})")
    first_day = start.astimezone(tz).date()
    last_day = (end - timedelta(microseconds=1)).astimezone(tz).date()
    ax.set_title(
        f"meter {meter_id}, channel {channel}, {_day_range(first_day, last_day)} "
        f"({period_s // 60}-minute intervals)"
    )
    ax.grid(True, linewidth=0.3)
    return _save(fig, path)
