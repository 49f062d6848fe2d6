"""``hes nodes``: the nodes of a cluster (``hes serve --node``), and draining one.

The list comes from the shared PostgreSQL (:mod:`storage.cluster`): each node's state,
whether it is alive (a heartbeat within its lease) and leads (runs the ticker), its last
heartbeat, the jobs and the bus leases it holds and its sessions in flight. ``drain NAME``
asks a node to finish what it holds and claim nothing new (it reads the request at its next
heartbeat); ``resume NAME`` undoes it. The database is ``--db`` or ``--config``'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.serve import ConfigOption
from app.serve_config import ConfigError, load_config
from app.support import DbOption, fail, open_db
from storage import cluster
from storage.database import Database
from storage.errors import StorageError

nodes_app = typer.Typer(
    help="Nodes of a hes cluster: list, drain, resume.", invoke_without_command=True
)

JsonOption = Annotated[bool, typer.Option("--json", help="one JSON object per node")]
GoneOption = Annotated[bool, typer.Option("--all", help="also the nodes that stopped")]


def _database(config: Path | None, db: str | None) -> Database:
    if db is None and config is not None:
        try:
            db = load_config(config).db
        except ConfigError as exc:
            raise fail(str(exc)) from None
    database = open_db(db)
    try:
        cluster.require_postgres(database)
    except StorageError as exc:
        database.close()
        raise fail(str(exc)) from None
    return database


def _age(seconds: float) -> str:
    return f"{seconds:.1f}s"


def _show(config: Path | None, db: str | None, as_json: bool, include_gone: bool) -> None:
    database = _database(config, db)
    try:
        nodes = cluster.list_nodes(database, include_gone=include_gone)
    except StorageError as exc:
        raise fail(str(exc), 1) from None
    finally:
        database.close()
    if as_json:
        for node in nodes:
            typer.echo(json.dumps(node.as_dict()))
        return
    rows = [("NODE", "STATE", "ALIVE", "LEADER", "HEARTBEAT", "JOBS", "LINKS", "SESSIONS", "HOST")]
    for n in nodes:
        rows.append(
            (
                n.name,
                n.state,
                "yes" if n.alive else "no",
                "yes" if n.leader else "",
                _age(n.heartbeat_age_s) + " ago",
                ",".join(map(str, n.jobs)) or "-",
                str(len(n.links)),
                str(n.sessions),
                f"{n.host}:{n.pid}",
            )
        )
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


@nodes_app.callback()
def nodes_group(
    ctx: typer.Context,
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    include_gone: GoneOption = False,
) -> None:
    """Without a command: the list (as ``hes nodes list``)."""
    if ctx.invoked_subcommand is None:
        _show(config, db, as_json, include_gone)


@nodes_app.command("list")
def list_command(
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    include_gone: GoneOption = False,
) -> None:
    """The nodes: state, alive, leader, last heartbeat, jobs and links held, sessions."""
    _show(config, db, as_json, include_gone)


def _set(name: str, state: str, config: Path | None, db: str | None) -> None:
    database = _database(config, db)
    try:
        found = cluster.set_state(database, name, state)
    except StorageError as exc:
        raise fail(str(exc), 1) from None
    finally:
        database.close()
    if not found:
        raise fail(f"no node {name!r} (hes nodes --all lists them)", 1)
    typer.echo(json.dumps({"node": name, "state": state}))


@nodes_app.command("drain")
def drain_command(
    name: Annotated[str, typer.Argument(help="the node (its --node name)")],
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """The node finishes the jobs it holds and claims no new one (nor leads)."""
    _set(name, "draining", config, db)


@nodes_app.command("resume")
def resume_command(
    name: Annotated[str, typer.Argument(help="the node (its --node name)")],
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """A drained node claims jobs again."""
    _set(name, "running", config, db)
