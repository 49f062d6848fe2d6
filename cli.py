"""The ``hes`` command line: every command of ``app/`` assembled into one typer app."""

from __future__ import annotations

import typer

from app.bench import bench_command
from app.collect import collect_command
from app.demo import demo_command
from app.export import export_command
from app.meters import meters_app
from app.ops import disconnect_command, listen_command, reconnect_command
from app.read import read_command
from app.report import report_command
from app.retention import retention_command
from app.security import keys_app
from app.serve import serve_command
from app.simulate import simulate_command
from app.tokens import tokens_app

app = typer.Typer(
    name="hes",
    help="Smart-meter head-end system: DLMS/COSEM collector and meter simulator.",
    no_args_is_help=True,
    add_completion=False,
)

app.command("read")(read_command)
app.command("simulate")(simulate_command)
app.add_typer(meters_app, name="meters")
app.command("collect")(collect_command)
app.command("report")(report_command)
app.command("export")(export_command)
app.command("retention")(retention_command)
app.command("demo")(demo_command)
app.command("bench")(bench_command)
app.add_typer(keys_app, name="keys")
app.command("disconnect")(disconnect_command)
app.command("reconnect")(reconnect_command)
app.command("listen")(listen_command)
app.command("serve")(serve_command)
app.add_typer(tokens_app, name="token")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
