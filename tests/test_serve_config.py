"""``hes serve``'s configuration (app.serve_config) and the operations files in ops/."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.serve_config import CLUSTER_DEFAULTS, DEFAULTS, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED = ROOT / "ops" / "hes.toml"
UNIT = ROOT / "ops" / "hes.service"


def service_lines(name: str = "service") -> dict[str, str]:
    """``key = value`` lines of the documented file's [service] (or other) table."""
    text = DOCUMENTED.read_text(encoding="utf-8")
    table = text.split(f"[{name}]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r"^(\w+) = (.+)$", table, flags=re.MULTILINE))


@pytest.mark.parametrize(
    ("name", "defaults"), [("service", DEFAULTS), ("cluster", CLUSTER_DEFAULTS)]
)
def test_the_documented_file_names_every_key_with_its_default(
    name: str, defaults: dict[str, object]
) -> None:
    documented = service_lines(name)
    assert set(documented) == set(defaults)
    for key, default in defaults.items():
        shown = documented[key]
        if isinstance(default, bool):
            assert shown == str(default).lower(), key
        elif isinstance(default, str):
            assert shown == f'"{default}"', key
        else:
            assert float(shown) == default, key


def test_the_documented_file_loads_with_a_group_per_kind_of_meter(tmp_path: Path) -> None:
    cfg = load_config(DOCUMENTED)
    assert cfg.db == str(ROOT / "ops" / "hes.db")  # relative to the file
    assert (cfg.http_host, cfg.http_port) == ("127.0.0.1", 8080)
    assert cfg.push_port is None and cfg.mqtt_url is None
    assert [g.name for g in cfg.plan.groups] == [
        "large-customers",
        "residential-bus",
        "residential-gprs",
    ]
    assert cfg.plan.timezone == "Asia/Shanghai"
    hourly = cfg.plan.groups[0].schedules
    assert set(hourly) == {"profile", "registers", "events", "clock"}


def test_no_file_is_sqlite_no_broker_and_the_built_in_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None)
    assert cfg.db == str(tmp_path / "hes.db")
    assert cfg.mqtt_url is None and cfg.push_port is None
    assert [g.name for g in cfg.plan.groups] == ["default"]


def test_overrides_and_a_plan_file(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    shutil.copy(ROOT / "ops" / "hes.toml", tmp_path / "full.toml")
    full = (tmp_path / "full.toml").read_text()
    plan.write_text(full.split("# The plan, inline", 1)[1].split("\n", 2)[2])
    conf = tmp_path / "hes.toml"
    conf.write_text(
        '[service]\nplan = "plan.toml"\npush_listen = "127.0.0.1:0"\ndrain_s = 5\n'
        'http = "127.0.0.1:0"\n'
    )
    kept = load_config(conf, {"db": None, "http": None})  # options not given keep the file's
    assert kept.db == str(tmp_path / "hes.db") and kept.http_port == kept.push_port == 0
    assert kept.drain_s == 5.0
    cfg = load_config(conf, {"db": "postgresql+psycopg://u@h/db", "http": "0.0.0.0:9000"})
    assert cfg.db == "postgresql+psycopg://u@h/db"
    assert (cfg.http_host, cfg.http_port, cfg.push_port, cfg.drain_s) == ("0.0.0.0", 9000, 0, 5.0)
    assert len(cfg.plan.groups) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[service]\ndrian_s = 3\n", "unknown key service.drian_s"),
        ("[service]\ndrain_s = 'long'\n", "service.drain_s must be a float, not str"),
        ("[service]\nmax_jobs = 1\n", "service.max_jobs = 1 is outside 2..64"),
        ("[service]\npublic_status = 1\n", "service.public_status must be a bool"),
        ("[service]\nhttp = 'localhost'\n", "service.http must be HOST:PORT"),
        ("[service]\npush_listen = ':99999'\n", "service.push_listen must be HOST:PORT"),
        ("[service]\nmqtt_url = 'http://x'\n", "service.mqtt_url"),
        ("[service]\nmqtt_prefix = 'a/#'\n", "service.mqtt_prefix 'a/#' must be a topic"),
        ("[servce]\n", "unknown table or key 'servce'"),
        ("service = 3\n", "service must be a table"),
        ("[service\n", "not valid TOML"),
        ("[service]\nplan = 'missing.toml'\n", "missing.toml: cannot read"),
        ("[collector]\nconcurrency = 5\n", "no [[group]]"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "hes.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(conf)


def test_inline_plan_and_plan_file_together_are_refused(tmp_path: Path) -> None:
    conf = tmp_path / "hes.toml"
    conf.write_text(DOCUMENTED.read_text().replace('plan = ""', 'plan = "other.toml"'))
    with pytest.raises(ConfigError, match=r"inline or as service\.plan, not both"):
        load_config(conf)


def test_hes_serve_refuses_a_bad_file_before_it_opens_anything(tmp_path: Path) -> None:
    conf = tmp_path / "hes.toml"
    conf.write_text("[service]\ndrian_s = 3\n")
    hes = Path(sys.executable).with_name("hes")
    run = subprocess.run(
        [str(hes), "serve", "--config", str(conf)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert "unknown key service.drian_s" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "hes.db").exists()


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    hes = Path(sys.executable).with_name("hes")
    unit = tmp_path / "hes.service"
    unit.write_text(UNIT.read_text().replace("/opt/hes/bin/hes", str(hes)))
    run = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "hes.service" not in run.stderr, run.stderr  # no complaint about the unit
    text = UNIT.read_text()
    assert "ExecStart=/opt/hes/bin/hes serve --config /etc/hes/hes.toml" in text
    assert "SuccessExitStatus=143" in text  # SIGTERM's clean stop is not a failure


PG = "postgresql+psycopg://hes@db.example/hes"


def test_a_node_name_chooses_cluster_mode_on_postgresql_only(tmp_path: Path) -> None:
    cfg = load_config(None, {"db": PG}, {"node": "north-1"})
    assert (cfg.node, cfg.db, cfg.lease_s, cfg.gprs_batch) == ("north-1", PG, 30.0, 50)
    assert cfg.mqtt_spool.endswith("hes-mqtt-spool-north-1.db")  # a spool of its own
    assert load_config(None).node is None  # the embedded default stays
    with pytest.raises(ConfigError, match=r"needs a PostgreSQL database.*cannot be shared"):
        load_config(None, {"db": str(tmp_path / "hes.db")}, {"node": "north-1"})


def test_the_broker_is_the_databases_job_table() -> None:
    cfg = load_config(None, None, {"broker": PG})
    assert cfg.db == PG and cfg.node  # db follows the broker; the node is the host's name
    with pytest.raises(ConfigError, match=r"'nats' is not supported.*PostgreSQL"):
        load_config(None, {"db": PG}, {"broker": "nats://127.0.0.1:4222", "node": "n"})
    with pytest.raises(ConfigError, match="the same postgresql:// URL"):
        load_config(None, {"db": PG}, {"broker": PG + "2", "node": "n"})


def test_cluster_keys_are_checked(tmp_path: Path) -> None:
    conf = tmp_path / "hes.toml"
    conf.write_text(f'[service]\ndb = "{PG}"\n[cluster]\nnode = "a"\nlease = 3\n')
    with pytest.raises(ConfigError, match=r"unknown key cluster\.lease"):
        load_config(conf)
    conf.write_text(f'[service]\ndb = "{PG}"\n[cluster]\nnode = "a"\nlease_s = 0.1\n')
    with pytest.raises(ConfigError, match=r"cluster.lease_s = 0.1 is outside"):
        load_config(conf)
    conf.write_text(f'[service]\ndb = "{PG}"\n[cluster]\nnode = "a"\nlease_s = 5\n')
    assert load_config(conf).lease_s == 5.0
