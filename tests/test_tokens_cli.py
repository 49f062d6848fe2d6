"""``hes token create/list/revoke`` in a subprocess, against the service's database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from storage import access
from storage.database import open_database

ROOT = Path(__file__).resolve().parents[1]


def hes(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(cwd)}
    return subprocess.run(
        [sys.executable, "-m", "cli", "token", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_create_list_revoke_through_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "hes.toml"
    conf.write_text('[service]\ndb = "tokens.db"\n')
    made = hes("create", "billing", "--role", "operator", "--config", str(conf), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["token"]
    with open_database(tmp_path / "tokens.db") as db:
        token = access.authenticate(db, secret)
        assert token is not None and token.name == "billing" and token.may("operator")
    listed = hes("list", "--config", str(conf), cwd=tmp_path)
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["name"] == "billing" and row["role"] == "operator" and row["revoked_at"] is None
    assert secret not in listed.stdout
    twice = hes("create", "billing", "--config", str(conf), cwd=tmp_path)
    assert twice.returncode == 2 and "a token named 'billing' exists" in twice.stderr
    assert hes("revoke", "billing", "--config", str(conf), cwd=tmp_path).returncode == 0
    with open_database(tmp_path / "tokens.db") as db:
        assert access.authenticate(db, secret) is None
    unknown = hes("revoke", "nobody", "--db", str(tmp_path / "tokens.db"), cwd=tmp_path)
    assert unknown.returncode == 1 and "no token named 'nobody'" in unknown.stderr
    bad_role = hes("create", "x", "--role", "admin", "--config", str(conf), cwd=tmp_path)
    assert bad_role.returncode == 2 and "role must be one of reader, operator" in bad_role.stderr
