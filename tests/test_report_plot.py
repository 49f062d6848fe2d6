"""``hes report --plot``: success rate per day and a meter's load curve as PNG files.

A real SQLite database filled through the Database API; the plots' data series are checked
against ``daily_report`` and the stored rows, the files as PNGs (signature and IHDR size), and
the CLI end to end through typer's CliRunner.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import app
from collector.plan import DEFAULT_PLAN_TOML
from collector.report_plot import (
    SUCCESS_TARGET,
    PlotError,
    check_png_path,
    demand_series,
    is_cumulative_energy,
    load_curve_series,
    plot_load_curve,
    plot_success_rate,
    scaled,
    success_figure,
    unit_label,
)
from storage.database import Database, open_database
from storage.gaps import day_window
from storage.records import Attempt, Channel, IntervalRead, MeterRecord
from storage.report import DayRate, success_rates

CH = "1.0.1.8.0.255"  # the built-in plan's first channel
CH2 = "1.0.2.8.0.255"
D0, D1, D2 = date(2024, 3, 8), date(2024, 3, 9), date(2024, 3, 10)
Q = timedelta(minutes=15)
WH = 30  # COSEM unit Wh
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def meter(mid: str) -> MeterRecord:
    return MeterRecord(mid, "tcp", "10.0.0.1", 4059, None, None, 1, 16, "none", f"L-{mid}", "north")


def day_rows(mid: str, day: date, skip: frozenset[int] = frozenset()) -> list[IntervalRead]:
    t0 = day_window(day)[0]
    return [
        IntervalRead(mid, CH, t0 + k * Q, 10_000 + 7 * k, -1, 0) for k in range(96) if k not in skip
    ]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG signature"
    assert data[12:16] == b"IHDR", "first chunk is not IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def assert_png(path: Path) -> None:
    width, height = png_size(path)
    assert width > 0 and height > 0


@pytest.fixture
def db_path(tmp_path: Path) -> Iterator[Path]:
    """Four meters over three days on channel CH (0.1 Wh steps):
    D0 all complete; D1 M2 lacks intervals 10-12; D2 M3 and M4 have nothing."""
    path = tmp_path / "hes.db"
    database = open_database(path)
    try:
        ids = ["M1", "M2", "M3", "M4"]
        database.upsert_meters([meter(m) for m in ids])
        database.upsert_channels(Channel(m, CH, WH, -1, 900) for m in ids)
        rows: list[IntervalRead] = []
        for m in ids:
            rows += day_rows(m, D0)
            rows += day_rows(m, D1, frozenset({10, 11, 12}) if m == "M2" else frozenset())
            if m in ("M1", "M2"):
                rows += day_rows(m, D2)
        database.insert_interval_reads(rows)
        t = datetime(2024, 3, 10, 1, tzinfo=UTC)
        database.record_attempts(
            [
                Attempt("M2", "run1", D1, t, t + Q, "partial", "timeout", "no answer"),
                Attempt("M3", "run2", D2, t, t + Q, "failed", "timeout", "no answer"),
                Attempt("M1", "run2", D2, t, t + Q, "ok"),
            ]
        )
    finally:
        database.close()
    yield path


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    database = open_database(db_path)
    try:
        yield database
    finally:
        database.close()


# -- data behind the plots --------------------------------------------------------------------


def test_success_series_equals_daily_report(db: Database) -> None:
    series = success_rates(db, D2, 4, [CH])
    assert [s.day for s in series] == [D0 - timedelta(days=1), D0, D1, D2]
    # D0 complete without an attempt of its own (no first pass); D1 M2 tried and incomplete;
    # D2 M1 complete on its one ok session, M3 failed, M4 never tried.
    assert series[1:] == [
        DayRate(D0, 1.0, 0.0, 4, 4, 0, 0, 0),
        DayRate(D1, 0.75, 0.0, 3, 4, 1, 0, 0),
        DayRate(D2, 0.5, 0.25, 2, 4, 1, 1, 0),
    ]
    assert series[0] == DayRate(D0 - timedelta(days=1), 0.0, 0.0, 0, 4, 0, 4, 0)
    for row in series:
        report = db.daily_report(row.day, [CH])
        assert row.success_rate == report["success_rate"]
        assert row.first_pass_rate == report["first_pass_rate"]
        assert row.complete == report["complete_meters"]
        assert row.expected == report["expected_meters"]
        assert row.failed == report["failed_meters"]
        assert row.not_collected == report["not_collected_meters"]
        assert row.as_dict()["day"] == row.day.isoformat()
    assert db.success_rates(D2, 4, [CH]) == series


def test_success_series_empty_inventory(tmp_path: Path) -> None:
    with open_database(tmp_path / "empty.db") as empty:
        assert success_rates(empty, D2, 2, [CH]) == [
            DayRate(D1, None, None, 0, 0, 0, 0, 0),
            DayRate(D2, None, None, 0, 0, 0, 0, 0),
        ]
        with pytest.raises(ValueError, match="days"):
            success_rates(empty, D2, 0, [CH])


def test_load_curve_series_keeps_gaps(db: Database) -> None:
    start, end = day_window(D1)
    rows = db.interval_reads("M2", CH, start, end)
    xs, ys, missing = load_curve_series(rows, start, end, 900)
    assert missing == [(start + 10 * Q, start + 12 * Q)]
    # 93 values plus one NaN that breaks the line across the gap instead of bridging it
    assert len(xs) == len(ys) == 94
    nan_at = [i for i, y in enumerate(ys) if math.isnan(y)]
    assert nan_at == [10]
    assert xs[9] == start + 9 * Q and xs[11] == start + 13 * Q
    assert ys[0] == pytest.approx(1000.0) and ys[1] == pytest.approx(1000.7)
    assert all(a < b for a, b in itertools.pairwise(xs))


def test_load_curve_series_null_values_and_edges() -> None:
    start = datetime(2024, 3, 10, tzinfo=UTC)
    end = start + 8 * Q
    rows = [
        IntervalRead("M", CH, start + 2 * Q, 5, 2),
        IntervalRead("M", CH, start + 3 * Q, None, 2),  # stored without a value: missing
        IntervalRead("M", CH, start + 4 * Q, 6, 2),
        IntervalRead("M", CH, end, 9, 2),  # outside [start, end)
    ]
    xs, ys, missing = load_curve_series(rows, start, end, 900)
    assert missing == [
        (start, start + Q),
        (start + 3 * Q, start + 3 * Q),
        (start + 5 * Q, start + 7 * Q),
    ]
    assert xs == [start + 2 * Q, start + 3 * Q, start + 4 * Q]
    assert ys[0] == 500.0 and math.isnan(ys[1]) and ys[2] == 600.0


def test_scaling_and_units() -> None:
    assert scaled(12345, -3) == 12.345
    assert scaled(12, 2) == 1200.0
    assert scaled(7, 0) == 7.0
    assert unit_label(WH) == "Wh"
    assert unit_label(27) == "W"
    assert unit_label(None) is None
    assert unit_label(200) == "unit 200"


# -- PNG files --------------------------------------------------------------------------------


def test_plot_success_rate_png(db: Database, tmp_path: Path) -> None:
    series = success_rates(db, D2, 3, [CH])
    out = plot_success_rate(series, tmp_path / "rate.png")
    assert out == tmp_path / "rate.png"
    assert_png(out)
    # all days on target, a single day, a day without meters: still a valid plot
    assert_png(plot_success_rate([DayRate(D0, 1.0, 1.0, 4, 4, 0, 0, 0)], tmp_path / "one.png"))
    assert_png(
        plot_success_rate(
            [DayRate(D0, None, None, 0, 0, 0, 0, 3), DayRate(D1, 1.0, 1.0, 1, 1, 0, 0, 0)],
            tmp_path / "none.png",
        )
    )
    assert SUCCESS_TARGET == 0.9999
    with pytest.raises(PlotError, match="no day"):
        plot_success_rate([], tmp_path / "empty.png")


def _texts(ax: Any) -> list[tuple[float, str]]:
    return [(t.xy[0], t.get_text()) for t in ax.texts]


def test_success_figure_tells_failed_from_not_collected_and_says_no_data(db: Database) -> None:
    """The bars stack failed (tried) under not collected (never tried), per day; the rates
    of a day without expected meters are not drawn (no 0 or 100 % point) but labelled."""
    series = [
        *success_rates(db, D2, 3, [CH]),
        DayRate(D2 + timedelta(days=1), *[None] * 2, *[0] * 5),
    ]
    fig = success_figure(series)
    rates, bars = fig.axes
    failed, not_collected = bars.containers
    assert failed.get_label() == "failed (tried)"
    assert not_collected.get_label() == "not collected"
    assert [p.get_height() for p in failed] == [0, 1, 1, 0]
    assert [p.get_height() for p in not_collected] == [0, 0, 1, 0]
    # not collected sits on top of failed
    assert [p.get_y() for p in not_collected] == [0, 1, 1, 0]
    final, first = rates.lines[0], rates.lines[1]
    assert list(final.get_ydata())[:3] == [1.0, 0.75, 0.5]
    assert list(first.get_ydata())[:3] == [0.0, 0.0, 0.25]
    assert math.isnan(final.get_ydata()[3]) and math.isnan(first.get_ydata()[3])
    last_x = final.get_xdata()[3]
    for panel in (rates, bars):
        assert (last_x, "no data") in _texts(panel)
        assert [text for _, text in _texts(panel)].count("no data") == 1
    assert (final.get_xdata()[2], "2/4") in _texts(rates)  # below target: complete/expected


def test_plot_load_curve_png(db: Database, tmp_path: Path) -> None:
    start, end = day_window(D1)
    rows = db.interval_reads("M2", CH, start, end)
    out = plot_load_curve("M2", CH, rows, tmp_path / "m2.png", start=start, end=end, unit=WH)
    assert_png(out)
    # a range of days, unknown unit
    start = day_window(D0)[0]
    rows = db.interval_reads("M1", CH, start, end)
    assert_png(plot_load_curve("M1", CH, rows, tmp_path / "m1.png", start=start, end=end))
    with pytest.raises(PlotError, match="no stored value"):
        plot_load_curve("M3", CH, [], tmp_path / "m3.png", start=start, end=end)
    assert not (tmp_path / "m3.png").exists()


def test_png_path_checks(tmp_path: Path) -> None:
    assert check_png_path(tmp_path / "a.png") == tmp_path / "a.png"
    assert check_png_path(str(tmp_path / "a.PNG")) == tmp_path / "a.PNG"
    with pytest.raises(PlotError, match=r"\*\.png"):
        check_png_path(tmp_path / "a.pdf")
    with pytest.raises(PlotError, match="does not exist"):
        check_png_path(tmp_path / "nowhere" / "a.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(PlotError, match="is a directory"):
        check_png_path(tmp_path / "dir.png")
    with pytest.raises(PlotError, match="cannot write"):
        plot_success_rate([DayRate(D0, 1.0, 1.0, 1, 1, 0, 0, 0)], tmp_path / "dir.png")


# -- the CLI ----------------------------------------------------------------------------------

runner = CliRunner()


def report(db_path: Path, *args: str) -> tuple[int, str, str]:
    """``hes report`` judged on a plan of the fixture's one channel (the report takes its
    channels from the plan, and the built-in plan has four)."""
    plan = db_path.parent / "one-channel.toml"
    lines = DEFAULT_PLAN_TOML.splitlines()
    plan.write_text("\n".join(line for line in lines if line[:4] not in ("3 = ", "4 = ", "5 = ")))
    result = runner.invoke(app, ["report", "--db", str(db_path), "--config", str(plan), *args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_success_plot(db_path: Path, tmp_path: Path) -> None:
    png = tmp_path / "rate.png"
    code, out, err = report(db_path, "--date", D2.isoformat(), "--days", "3", "--plot", str(png))
    assert code == 0, err
    assert "hes collection report 2024-03-10" in out  # the table is still printed
    assert f"plot: {png}" in out
    assert_png(png)


def test_cli_success_series_is_the_daily_reports(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.report

    seen: list[list[DayRate]] = []

    def capture(days: list[DayRate], path: Path) -> Path:
        seen.append(list(days))
        return path

    monkeypatch.setattr(app.report, "plot_success_rate", capture)
    png = tmp_path / "rate.png"
    for n in (1, 4):
        code, _, err = report(
            db_path, "--date", D2.isoformat(), "--days", str(n), "--plot", str(png)
        )
        assert code == 0, err
    with open_database(db_path) as database:
        assert seen == [success_rates(database, D2, 1), success_rates(database, D2, 4)]
        assert seen[1][-1] == DayRate(D2, 0.5, 0.25, 2, 4, 1, 1, 0)


def test_cli_success_plot_json_stays_json(db_path: Path, tmp_path: Path) -> None:
    import json

    png = tmp_path / "rate.png"
    code, out, err = report(
        db_path, "--date", D2.isoformat(), "--format", "json", "--plot", str(png)
    )
    assert code == 0, err
    assert json.loads(out)["success_rate"] == 0.5
    assert f"plot: {png}" in err
    assert_png(png)  # default: 14 days ending at --date


def test_cli_load_curve(db_path: Path, tmp_path: Path) -> None:
    png = tmp_path / "m2.png"
    code, out, err = report(db_path, "--date", D1.isoformat(), "--meter", "M2", "--plot", str(png))
    assert code == 0, err
    assert f"plot: {png}" in out
    assert_png(png)
    png = tmp_path / "m1-range.png"
    code, out, err = report(
        db_path,
        "--date",
        D2.isoformat(),
        "--meter",
        "M1",
        "--channel",
        CH,
        "--days",
        "3",
        "--plot",
        str(png),
    )
    assert code == 0, err
    assert_png(png)


def test_cli_meter_without_data_fails(db_path: Path, tmp_path: Path) -> None:
    png = tmp_path / "m3.png"
    code, out, err = report(db_path, "--date", D2.isoformat(), "--meter", "M3", "--plot", str(png))
    assert code != 0
    assert "M3" in err and "no interval values" in err and CH in err
    assert not png.exists()
    assert out == ""  # fails before printing the report


def test_cli_unknown_meter_and_channel(db_path: Path, tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    code, _, err = report(db_path, "--date", D1.isoformat(), "--meter", "NOPE", "--plot", str(png))
    assert code != 0
    assert "'NOPE'" in err and "not in the inventory" in err
    code, _, err = report(
        db_path, "--date", D1.isoformat(), "--meter", "M1", "--channel", CH2, "--plot", str(png)
    )
    assert code != 0
    assert CH2 in err and "no interval values" in err
    assert f"channels: {CH}" in err  # says which channels the meter has
    assert not png.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--meter", "M1"], "--meter needs --plot"),
        (["--channel", CH, "--plot", "{tmp}/a.png"], "--channel needs --meter"),
        (["--plot", "{tmp}/missing/a.png"], "does not exist"),
        (["--plot", "{tmp}/a.svg"], "*.png"),
        (["--plot", "{tmp}"], "*.png"),
        (["--days", "0", "--plot", "{tmp}/a.png"], "--days"),
    ],
)
def test_cli_plot_option_errors(
    db_path: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = report(db_path, "--date", D1.isoformat(), *args)
    assert code == 2
    assert message in err
    assert out == ""


def test_cumulative_energy_channels_plot_mean_power_per_interval(tmp_path: Path) -> None:
    assert is_cumulative_energy("1.0.1.8.0.255", 30)
    assert is_cumulative_energy("1-0:2.8.0*255", 30)
    assert not is_cumulative_energy("1.0.32.7.0.255", 35)  # a voltage
    assert not is_cumulative_energy("1.0.1.8.0.255", None)  # unit unknown: plot as stored
    t0 = datetime(2024, 3, 10, tzinfo=UTC)
    q = timedelta(minutes=15)
    times = [t0, t0 + q, t0 + 2 * q, t0 + 4 * q, t0 + 5 * q]
    values = [1000.0, 1250.0, 1250.0, 2000.0, math.nan]
    xs, ys = demand_series(times, values, 900)
    assert xs == times[1:]
    # 250 Wh in a quarter-hour is 1,000 W on average; the gap and the null stay gaps
    assert ys[:2] == [1000.0, 0.0]
    assert math.isnan(ys[2]) and math.isnan(ys[3])
    rows = [
        IntervalRead("M1", "1.0.1.8.0.255", t, int(v), 0, 0)
        for t, v in zip(times[:4], values[:4], strict=True)
    ]
    out = plot_load_curve(
        "M1", "1.0.1.8.0.255", rows, tmp_path / "m1.png", start=t0, end=t0 + 6 * q, unit=30
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(PlotError, match="one stored value"):
        plot_load_curve(
            "M1", "1.0.1.8.0.255", rows[:1], tmp_path / "m2.png", start=t0, end=t0 + q, unit=30
        )


def test_a_night_where_every_read_failed_is_zero_not_a_hundred(tmp_path: Path) -> None:
    """A fresh database where every session failed stores no channel at all; the day is
    still judged on the plan's four channels (the built-in plan), so it is 0 %."""
    import json

    path = tmp_path / "fresh.db"
    with open_database(path) as database:
        database.upsert_meters([meter(m) for m in ("M1", "M2")])
        t = datetime(2024, 3, 10, 1, tzinfo=UTC)
        database.record_attempts(
            [Attempt(m, "run1", D2, t, t + Q, "failed", "link", "refused") for m in ("M1", "M2")]
        )
    result = runner.invoke(
        app, ["report", "--db", str(path), "--date", D2.isoformat(), "--format", "json"]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["success_rate"] == 0.0
    assert (data["expected_meters"], data["complete_meters"]) == (2, 0)
    assert data["intervals_expected"] == 2 * 96 * 4


def test_report_tells_not_collected_apart_from_failed(db_path: Path) -> None:
    """On D2, M3 was tried and failed, M4 never got a session: one failed, one not collected."""
    import json

    code, out, err = report(db_path, "--date", D2.isoformat(), "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["incomplete_meters"], data["failed_meters"], data["not_collected_meters"]) == (
        2,
        1,
        1,
    )
    outcome = {m["meter_id"]: m["last_outcome"] for m in data["worst_meters"]}
    assert outcome == {"M3": "failed", "M4": "not_collected"}
    code, table, err = report(db_path, "--date", D2.isoformat())
    assert code == 0, err
    assert "meters not collected (never tried)" in table and "not collected" in table
    assert "first-pass rate" in table and "meters not expected" in table
