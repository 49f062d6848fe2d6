"""The ``hes`` entry point imports only the command it runs (a report does not load Alembic,
the simulator or the service), and still offers every command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cli
from storage.database import open_database

#: Runs ``cli.main()`` with the given arguments, then prints the top-level packages loaded.
PROBE = """
import json, sys
import cli
sys.argv = ["hes", *json.loads(sys.argv[1])]
try:
    cli.main()
except SystemExit as stop:
    code = stop.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def run_hes(*args: str) -> tuple[int, set[str], str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(args))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    *printed, probe = out.stdout.strip().splitlines()
    last = json.loads(probe)
    return last["code"], set(last["modules"]), "\n".join([*printed, out.stderr])


def test_report_loads_neither_alembic_nor_other_commands(tmp_path: Path) -> None:
    db_path = tmp_path / "hes.db"
    with open_database(str(db_path)):
        pass  # migrated to the head: no upgrade left for the report to run
    code, modules, stdout = run_hes(
        "report", "--date", "2026-11-22", "--db", str(db_path), "--format", "json"
    )
    assert code == 0, stdout
    assert json.loads(stdout)["day"] == "2026-11-22"
    for heavy in ("alembic", "simulator", "app.serve", "app.bench", "uvicorn", "fastapi"):
        assert heavy not in modules, f"hes report imported {heavy}"


def test_fresh_database_is_still_migrated(tmp_path: Path) -> None:
    db_path = tmp_path / "new.db"
    code, modules, stdout = run_hes("report", "--date", "2026-11-22", "--db", str(db_path))
    assert code == 0, stdout
    assert "alembic" in modules
    with open_database(str(db_path)) as db:
        assert db.schema_version() > 0


def test_help_lists_every_command() -> None:
    code, _, stdout = run_hes("--help")
    assert code == 0
    for name in cli.COMMANDS:
        assert name in stdout, f"hes --help does not list {name}"


def test_unknown_command_is_a_usage_error() -> None:
    code, modules, _ = run_hes("no-such-command")
    assert code == 2
    assert "app.report" in modules  # the whole app was built to say what exists


def test_parse_errors_of_the_bench_tools_are_json() -> None:
    """click's own errors (a bad number, an unknown option) come out as ``hes read``'s do."""
    for args, names in (
        (("read", "--baud", "abc", "--serial", "/dev/null"), "--baud"),
        (("read", "--port", "1"), "--port"),
        (("scan", "--timeout", "x"), "--timeout"),
    ):
        code, _modules, printed = run_hes(*args)
        assert code == 2, printed
        first = json.loads(printed.splitlines()[0])
        assert first["error"] == "usage" and names in first["detail"], first


def test_help_and_success_keep_their_exit_codes() -> None:
    code, _modules, printed = run_hes("read", "--help")
    assert code == 0 and "--baud" in printed
    code, _modules, printed = run_hes("report", "--bogus")
    assert code == 2 and "No such option" in printed  # other commands keep click's usage text
