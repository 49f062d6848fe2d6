"""``hes serve``'s configuration file (``hes.toml``): a ``[service]`` table and the plan.

One file says everything a running head-end needs: where its database is, where it listens,
its broker, and the reading plan, either inline (the plan's own ``[collector]``,
``[retry]``, ``[timeouts]`` and ``[[group]]`` tables, schedules included) or by ``plan =
"path"``. Every key has a default, so ``hes serve`` without a file runs on SQLite, with no
broker and the built-in plan. ``ops/hes.toml`` documents every key; a test keeps it in step
with :data:`DEFAULTS`. Unknown keys are refused with the key named: a misspelt
``drain_s`` must not silently mean the default. Relative paths are relative to the file.
"""

from __future__ import annotations

import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.mqtt import parse_mqtt_url
from collector.plan import Plan, PlanError, load_plan, plan_from_data

#: Every ``[service]`` key and its default.
DEFAULTS: dict[str, Any] = {
    "db": "hes.db",
    "http": "127.0.0.1:8080",
    "push_listen": "",
    "mqtt_url": "",
    "mqtt_spool": "hes-mqtt-spool.db",
    "mqtt_prefix": "hes",
    "plan": "",
    "inventory": "",
    "master_key_file": "",
    "log_file": "",
    "drain_s": 30.0,
    "catch_up": 3,
    "max_jobs": 4,
    "poll_s": 1.0,
    "public_status": True,
    "clock_threshold_s": 10.0,
    # days of readings kept (interval, register, attempts); 0 keeps everything
    "retention_days": 0,
}
#: Every ``[cluster]`` key and its default (cluster mode: ``node`` or ``broker`` set).
CLUSTER_DEFAULTS: dict[str, Any] = {
    # this node's name (default: the host name, when a broker is given)
    "node": "",
    # the work queue: postgresql://, the database's own job table (docs/scale-out.md)
    "broker": "",
    "lease_s": 30.0,
    "gprs_batch": 50,
}
_CLUSTER_BOUNDS: dict[str, tuple[float, float]] = {
    "lease_s": (1.0, 3600.0),
    "gprs_batch": (1, 10_000),
}
_PATHS = ("mqtt_spool", "plan", "inventory", "master_key_file", "log_file")
_PLAN_TABLES = ("collector", "retry", "timeouts", "group", "line_loss")
_BOUNDS: dict[str, tuple[float, float]] = {
    "drain_s": (0.0, 3600.0),
    "catch_up": (0, 10_000),
    "max_jobs": (2, 64),
    "poll_s": (0.01, 60.0),
    "clock_threshold_s": (0.0, 86400.0),
    "retention_days": (0, 36_500),
}


class ConfigError(ValueError):
    """The configuration was refused; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What ``hes serve`` runs with."""

    source: str
    db: str
    http_host: str
    http_port: int
    push_host: str | None
    push_port: int | None
    mqtt_url: str | None
    mqtt_spool: str
    mqtt_prefix: str
    inventory: str | None
    master_key_file: str | None
    log_file: str | None
    drain_s: float
    catch_up: int
    max_jobs: int
    poll_s: float
    public_status: bool
    clock_threshold_s: float
    retention_days: int
    plan: Plan
    #: Cluster mode: this node's name (None: the embedded service, one process).
    node: str | None = None
    lease_s: float = 30.0
    gprs_batch: int = 50


def _address(source: str, key: str, text: str) -> tuple[str, int]:
    """``HOST:PORT`` to listen on; port 0 takes any free one (the tests do)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{source}: service.{key} must be HOST:PORT, not {text!r}")
    return host, int(port)


def _check_type(
    source: str,
    key: str,
    value: Any,
    defaults: dict[str, Any] = DEFAULTS,
    bounds: dict[str, tuple[float, float]] = _BOUNDS,
    table: str = "service",
) -> Any:
    want = type(defaults[key])
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(
            f"{source}: {table}.{key} must be a {want.__name__}, not {type(value).__name__}"
        )
    if key in bounds:
        lo, hi = bounds[key]
        if not lo <= value <= hi:
            raise ConfigError(f"{source}: {table}.{key} = {value} is outside {lo:g}..{hi:g}")
    return value


def _cluster(
    source: str, table: Any, overrides: dict[str, Any], db: str, db_given: bool
) -> tuple[dict[str, Any], str]:
    """The ``[cluster]`` settings and the database URL they leave (see CLUSTER_DEFAULTS)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: cluster must be a table ([cluster])")
    values = dict(CLUSTER_DEFAULTS)
    for key, value in {**table, **overrides}.items():
        if key not in CLUSTER_DEFAULTS:
            raise ConfigError(
                f"{source}: unknown key cluster.{key} "
                f"(known: {', '.join(sorted(CLUSTER_DEFAULTS))})"
            )
        values[key] = _check_type(source, key, value, CLUSTER_DEFAULTS, _CLUSTER_BOUNDS, "cluster")
    broker = values["broker"]
    if broker:
        scheme = broker.split("://", 1)[0].lower() if "://" in broker else ""
        if scheme not in ("postgresql", "postgresql+psycopg", "postgres"):
            raise ConfigError(
                f"{source}: cluster.broker (--broker) {scheme or broker!r} is not supported: "
                "the work queue is a table of the PostgreSQL database (postgresql://...; "
                "docs/scale-out.md says why not NATS or RabbitMQ)"
            )
        if not db_given:
            db = broker
        elif db != broker:
            raise ConfigError(
                f"{source}: the broker is the database's job table: give --db and --broker "
                "the same postgresql:// URL, or only one of them"
            )
        if not values["node"]:
            values["node"] = socket.gethostname()
    if values["node"]:
        if len(values["node"]) > 128:
            raise ConfigError(f"{source}: cluster.node (--node) is longer than 128 characters")
        if not db.startswith(("postgresql", "postgres")):
            raise ConfigError(
                f"{source}: cluster mode (--node {values['node']}) needs a PostgreSQL "
                f"database (--db postgresql://...), not {db}: a SQLite file cannot be shared "
                "between hosts"
            )
    return values, db


def load_config(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
) -> ServeConfig:
    """The configuration in ``path`` (None: the defaults), with command-line ``overrides``
    of ``[service]`` and ``cluster`` of ``[cluster]``."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    source = "<defaults>"
    if path is not None:
        file = Path(path)
        source = str(file)
        base = file.resolve().parent
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{file}: not UTF-8 text ({exc.reason})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    service = data.pop("service", {})
    cluster_table = data.pop("cluster", {})
    if not isinstance(service, dict):
        raise ConfigError(f"{source}: service must be a table ([service])")
    unknown_tables = [k for k in data if k not in _PLAN_TABLES]
    if unknown_tables:
        raise ConfigError(
            f"{source}: unknown table or key {unknown_tables[0]!r} (expected [service], "
            "[cluster] and "
            f"the plan's {', '.join(_PLAN_TABLES)})"
        )
    values = dict(DEFAULTS)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key, value in {**service, **given}.items():
        if key not in DEFAULTS:
            raise ConfigError(
                f"{source}: unknown key service.{key} (known: {', '.join(sorted(DEFAULTS))})"
            )
        values[key] = _check_type(source, key, value)

    def where(key: str) -> str | None:
        text = str(values[key])
        if not text:
            return None
        p = Path(text).expanduser()
        return str(p if p.is_absolute() else base / p)

    db = str(values["db"])
    if "://" not in db:
        db = str(Path(db) if Path(db).is_absolute() else base / db)
    cluster_given = {k: v for k, v in (cluster or {}).items() if v is not None}
    clustered, db = _cluster(source, cluster_table, cluster_given, db, "db" in {**service, **given})
    plan_path = where("plan")
    try:
        if data and plan_path is not None:
            raise ConfigError(f"{source}: give the plan inline or as service.plan, not both")
        plan = plan_from_data(data, source) if data else load_plan(plan_path)
    except PlanError as exc:
        raise ConfigError(str(exc)) from None
    http_host, http_port = _address(source, "http", values["http"])
    if values["mqtt_url"]:
        try:
            parse_mqtt_url(values["mqtt_url"])
        except ValueError as exc:
            raise ConfigError(f"{source}: service.mqtt_url: {exc}") from None
    prefix = values["mqtt_prefix"].strip("/")
    if not prefix or any(c in prefix for c in "+#\0"):
        raise ConfigError(
            f"{source}: service.mqtt_prefix {values['mqtt_prefix']!r} must be a topic "
            "without +, # or NUL"
        )
    push_host = push_port = None
    if values["push_listen"]:
        push_host, push_port = _address(source, "push_listen", values["push_listen"])
    return ServeConfig(
        source=source,
        db=db,
        http_host=http_host,
        http_port=http_port,
        push_host=push_host,
        push_port=push_port,
        mqtt_url=values["mqtt_url"] or None,
        mqtt_spool=_spool(where("mqtt_spool") or str(base / DEFAULTS["mqtt_spool"]), clustered),
        mqtt_prefix=values["mqtt_prefix"],
        inventory=where("inventory"),
        master_key_file=where("master_key_file"),
        log_file=where("log_file"),
        drain_s=values["drain_s"],
        catch_up=values["catch_up"],
        max_jobs=values["max_jobs"],
        poll_s=values["poll_s"],
        public_status=values["public_status"],
        clock_threshold_s=values["clock_threshold_s"],
        retention_days=values["retention_days"],
        plan=plan,
        node=clustered["node"] or None,
        lease_s=clustered["lease_s"],
        gprs_batch=clustered["gprs_batch"],
    )


def _spool(path: str, clustered: dict[str, Any]) -> str:
    """A node's own MQTT spool: nodes sharing a host and a configuration file must not
    share one (each would hand the other's messages to the broker)."""
    if not clustered["node"]:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{clustered['node']}{p.suffix}"))
