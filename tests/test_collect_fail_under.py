"""``hes collect --fail-under``, its stderr summary line, the bounded summary and the
window-wait notice: the real CLI in a subprocess against a simulator fleet.

Meters that fail are inventory rows the simulator does not serve: TCP meters on a local port
nobody listens on (connection refused, retried until the plan's attempts run out).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_collector_cli import ROOT, TIMEOUT, _env, hes
from test_collector_fleet import DAY, Fleet, FleetThread, online_meter_ids, plan_text

from app.collect import EXIT_FAIL_UNDER, _merge_summaries

LINE = re.compile(
    r"hes collect: (?P<day>\S+) (?P<ok>\d+)/(?P<finished>\d+) meters complete "
    r"\((?P<pct>[^)]*)\), (?P<retries>\d+) retries, (?P<failed>\d+) failed, "
    r"(?P<seconds>[\d.]+) s(?P<rest>.*)"
)


def closed_port() -> int:
    """A local TCP port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dead_rows(count: int, port: int) -> list[str]:
    """Inventory rows of meters the simulator does not serve (X000000, X000001, ...)."""
    return [f"X{k:06d},tcp,127.0.0.1,{port},,16,none,,,north,S1" for k in range(count)]


@pytest.fixture
def fleet_db(tmp_path: Path) -> Iterator[tuple[Fleet, Path, Path]]:
    """A fault-free fleet (6 TCP meters, a bus of 3) and a plan; the database is empty."""
    ids = online_meter_ids(9, 4000)
    fleet = Fleet(ids[:6], [ids[6:]])
    with FleetThread(fleet):
        plan = tmp_path / "plan.toml"
        plan.write_text(plan_text(concurrency=20), encoding="utf-8")
        yield fleet, tmp_path / "hes.db", plan


def import_meters(fleet: Fleet, db: Path, extra: list[str], tmp: Path) -> int:
    csv = fleet.write_csv(tmp / "meters.csv")
    csv.write_text(csv.read_text(encoding="utf-8") + "".join(f"{r}\n" for r in extra), "utf-8")
    run = hes("meters", "import", str(csv), "--db", str(db), cwd=tmp)
    assert run.returncode == 0, run.stderr
    return int(json.loads(run.stdout)["inserted"])


def collect(db: Path, plan: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return hes(
        "collect", "--db", str(db), "--config", str(plan), "--day", DAY.isoformat(),
        "--seed", "1", *args, cwd=tmp,
    )  # fmt: skip


def stderr_line(run: subprocess.CompletedProcess[str]) -> str:
    """The last stderr line, which must be the one summary line."""
    lines = run.stderr.strip().splitlines()
    assert lines, "nothing on stderr"
    return lines[-1]


def expected_line(summary: dict[str, Any], rest: str = "") -> str:
    ok = summary["complete"] + summary["skipped_complete"]
    finished = summary["done"] + summary["skipped_complete"]
    return (
        f"hes collect: {DAY.isoformat()} {ok}/{finished} meters complete "
        f"({100 * summary['success_rate']:.3f} %), {summary['retries']} retries, "
        f"{summary['failed']} failed, {summary['seconds']:.1f} s{rest}"
    )


def test_a_complete_run_passes_fail_under_and_prints_its_line(
    fleet_db: tuple[Fleet, Path, Path],
) -> None:
    fleet, db, plan = fleet_db
    tmp = db.parent
    assert import_meters(fleet, db, [], tmp) == 9
    run = collect(db, plan, tmp, "--fail-under", "99.9")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert (summary["complete"], summary["failed"], summary["success_rate"]) == (9, 0, 1.0)
    assert summary["incomplete"] == {}
    assert summary["incomplete_more"] == 0
    line = stderr_line(run)
    assert line == expected_line(summary)
    m = LINE.fullmatch(line)
    assert m is not None
    assert (m["ok"], m["finished"], m["pct"], m["failed"]) == ("9", "9", "100.000 %", "0")
    # Run again: every meter is already complete (skipped), still 100 %.
    again = collect(db, plan, tmp, "--fail-under", "100")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["skipped_complete"] == 9
    assert stderr_line(again).startswith(f"hes collect: {DAY.isoformat()} 9/9 meters complete")


@pytest.mark.parametrize("workers", [1, 2])
def test_failing_meters_below_fail_under_exit_3_with_the_same_figures(
    fleet_db: tuple[Fleet, Path, Path], workers: int
) -> None:
    fleet, db, plan = fleet_db
    tmp = db.parent
    port = closed_port()
    assert import_meters(fleet, db, dead_rows(3, port), tmp) == 12
    run = collect(db, plan, tmp, "--fail-under", "75.1", "--workers", str(workers))
    assert EXIT_FAIL_UNDER == 3
    assert run.returncode == 3, run.stderr
    summary = json.loads(run.stdout)
    assert (summary["total"], summary["complete"], summary["failed"]) == (12, 9, 3)
    assert summary["success_rate"] == 9 / 12
    assert summary["incomplete"] == dict.fromkeys(["X000000", "X000001", "X000002"], "link")
    assert summary["retries"] == 3 * 3  # max_attempts = 4 per dead meter
    line = stderr_line(run)
    assert line == expected_line(summary, "; below --fail-under 75.1 %")
    assert "9/12 meters complete (75.000 %), 9 retries, 3 failed" in line
    # The same run's rate at or above the threshold passes.
    ok = collect(db, plan, tmp, "--fail-under", "0", "--workers", str(workers))
    assert ok.returncode == 0, ok.stderr
    assert stderr_line(ok).startswith(f"hes collect: {DAY.isoformat()} 9/12 meters complete")


def test_no_meter_expected_counts_as_below(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text(), encoding="utf-8")
    db = tmp_path / "hes.db"
    run = collect(db, plan, tmp_path, "--fail-under", "0")
    assert run.returncode == 3, run.stderr
    summary = json.loads(run.stdout)
    assert (summary["total"], summary["success_rate"]) == (0, None)
    line = stderr_line(run)
    m = LINE.fullmatch(line)
    assert m is not None, line
    assert (m["ok"], m["finished"], m["pct"]) == ("0", "0", "no meter expected")
    assert m["rest"] == "; below --fail-under 0 %"
    # Without --fail-under the same run exits 0, with the line.
    plain = collect(db, plan, tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "0/0 meters complete (no meter expected)" in stderr_line(plain)


@pytest.mark.parametrize(("workers", "worst"), [(1, 20), (2, 20), (2, 7), (1, 0)])
def test_the_summary_stays_bounded_however_many_meters_fail(
    tmp_path: Path, workers: int, worst: int
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text(concurrency=50), encoding="utf-8")
    db = tmp_path / "hes.db"
    csv = tmp_path / "meters.csv"
    header = Fleet([], []).write_csv(tmp_path / "h.csv").read_text(encoding="utf-8")
    csv.write_text(header + "".join(f"{r}\n" for r in dead_rows(200, closed_port())), "utf-8")
    assert hes("meters", "import", str(csv), "--db", str(db), cwd=tmp_path).returncode == 0
    args = ["--once", "--workers", str(workers), "--fail-under", "50"]
    if worst != 20:
        args += ["--worst", str(worst)]
    run = collect(db, plan, tmp_path, *args)
    assert run.returncode == 3, run.stderr
    summary = json.loads(run.stdout)
    assert (summary["total"], summary["failed"], summary["success_rate"]) == (200, 200, 0.0)
    assert summary["incomplete"] == {f"X{k:06d}": "link" for k in range(worst)}
    assert summary["incomplete_more"] == 200 - worst
    assert [k for k, v in summary.items() if isinstance(v, list)] == []
    assert all(len(v) <= max(worst, 10) for v in summary.values() if isinstance(v, dict))
    assert stderr_line(run) == expected_line(summary, "; below --fail-under 50 %")


def test_merge_caps_the_shards_incomplete_meters() -> None:
    def part(ids: list[str], more: int) -> dict[str, Any]:
        counts = dict.fromkeys(
            ["total", "skipped_complete", "not_planned", "done", "complete", "failed",
             "attempts", "retries", "intervals_stored", "peak_in_flight"], 0
        )  # fmt: skip
        return {
            "run_id": "r", "day": "2026-03-10", **counts, "errors": {}, "final_errors": {},
            "incomplete": dict.fromkeys(ids, "link"), "incomplete_more": more,
            "interrupted": False, "seconds": 1.0,
        }  # fmt: skip

    merged = _merge_summaries([part(["B", "D", "F"], 5), part(["A", "C", "E"], 4)], worst=3)
    assert merged["incomplete"] == {"A": "link", "B": "link", "C": "link"}
    assert merged["incomplete_more"] == 5 + 4 + 3


def test_a_run_waiting_for_its_window_says_so_on_stderr(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text(), encoding="utf-8")
    today = datetime.now(UTC).date()  # its window opens tomorrow at 00:05 (plan in UTC)
    err = tmp_path / "err.txt"
    with err.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "collect", "--db", str(tmp_path / "hes.db"),
             "--config", str(plan), "--day", today.isoformat()],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=err_file, text=True, env=_env(tmp_path),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + TIMEOUT
            while "\n" not in err.read_text(encoding="utf-8"):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.05)
            seen = datetime.now(UTC)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = err.read_text(encoding="utf-8").splitlines()
    assert proc.returncode == 128 + signal.SIGTERM, lines
    opens = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    opens += timedelta(minutes=5)  # the default window starts at 00:05
    m = re.fullmatch(
        r"hes collect: waiting (\d+)h(\d\d)m(\d\d)s for the collection window, until (.*)",
        lines[0],
    )
    assert m is not None, lines
    assert m[4] == f"{opens:%Y-%m-%d %H:%M:%S} UTC"
    waited = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])
    assert abs(waited - (opens - seen).total_seconds()) < 30
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert lines[1:] == [
        f"hes collect: {today.isoformat()} 0/0 meters complete (no meter expected), "
        f"0 retries, 0 failed, {summary['seconds']:.1f} s, interrupted"
    ]
