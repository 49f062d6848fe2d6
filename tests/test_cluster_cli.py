"""``hes nodes`` and ``hes serve --node`` on the command line: the list as a table and as
JSON, drain and resume, and the errors (SQLite, an unknown node, an unsupported broker)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli import build
from storage import cluster, jobs
from storage.database import open_database
from storage.jobs import JobRequest

runner = CliRunner()


def hes(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(build(["nodes", "serve"]), list(args))
    return result.exit_code, result.stdout, result.stderr


def test_hes_nodes_lists_drains_and_resumes(pg_url: str) -> None:
    with open_database(pg_url) as db:
        cluster.register_node(db, "north", "host-n", 11, 30.0, http="10.0.0.1:8080")
        cluster.register_node(db, "south", "host-s", 12, 30.0)
        job, _ = jobs.submit(db, JobRequest("read", {}, meters=["M1"]))
        cluster.claim(db, "south", 30.0)
        cluster.take_link(db, "south", "bus-7", 30.0)
        cluster.lead(db, "north", 30.0)
    code, out, _ = hes("nodes", "--db", pg_url)
    assert code == 0
    header, north, south = out.splitlines()
    assert header.split() == [
        "NODE", "STATE", "ALIVE", "LEADER", "HEARTBEAT", "JOBS", "LINKS", "SESSIONS", "HOST",
    ]  # fmt: skip
    assert north.split()[:4] == ["north", "running", "yes", "yes"]
    assert south.split()[:3] == ["south", "running", "yes"] and f" {job.id} " in south
    code, out, _ = hes("nodes", "list", "--db", pg_url, "--json")
    listed = {n["name"]: n for n in map(json.loads, out.splitlines())}
    assert listed["south"]["jobs"] == [job.id] and listed["south"]["links"] == ["bus-7"]
    assert listed["north"]["http"] == "10.0.0.1:8080" and listed["north"]["leader"]
    code, out, _ = hes("nodes", "drain", "south", "--db", pg_url)
    assert code == 0 and json.loads(out) == {"node": "south", "state": "draining"}
    code, out, _ = hes("nodes", "--db", pg_url, "--json")
    assert [n["state"] for n in map(json.loads, out.splitlines())] == ["running", "draining"]
    assert hes("nodes", "resume", "south", "--db", pg_url)[0] == 0
    code, _, err = hes("nodes", "drain", "west", "--db", pg_url)
    assert code == 1 and "no node 'west'" in err


def test_cluster_commands_refuse_what_cannot_work(tmp_path: Path) -> None:
    code, _, err = hes("nodes", "--db", f"{tmp_path}/hes.db")
    assert code == 2 and "needs a PostgreSQL database" in err
    code, _, err = hes("serve", "--node", "n1", "--db", f"{tmp_path}/hes.db")
    assert code == 2 and "cluster mode (--node n1) needs a PostgreSQL database" in err
    code, _, err = hes("serve", "--broker", "amqp://127.0.0.1:5672")
    assert code == 2 and "'amqp' is not supported" in err
