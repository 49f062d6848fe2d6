"""Register values and event-log entries as compact rows: integer keys, epoch microseconds.

Why: 200,000 meters read four registers a day (800,000 rows); with a text meter id, a text
OBIS code and a 26-character text time stamp in the key, those rows were a large share of the
database. Here a row carries the meter's key (``interval_meters``, one key per meter for every
table), an OBIS key (``obis_codes``) and integer time stamps, and is written by multi-row
statements (SQLite) or arrays through ``unnest`` (PostgreSQL), insert-or-ignore on the
natural key so re-reads store nothing twice. Reads join the two dictionaries back and hand out
the public record types (:class:`~storage.records.RegisterRead`, :class:`~storage.records.Event`)
with aware UTC datetimes.

OBIS keys made by a write are remembered only once it commits (:class:`ObisKeys`), as the
meter keys of :class:`storage.interval_write.KeyCache` are.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, select, text

from storage import schema
from storage.interval_write import KeyCache, epoch_us, meter_key_map
from storage.records import Event, RegisterRead

#: Rows per multi-row statement (SQLite: 7 parameters a row, far under its 32,766).
_ROWS_PER_STATEMENT = 500
#: Rows per unnest statement (PostgreSQL).
_ROWS_PER_ARRAY = 20_000


@dataclass
class ObisKeys:
    """OBIS keys known to exist (committed), plus those made by the open write."""

    known: dict[str, int] = field(default_factory=dict)
    _new: dict[str, int] = field(default_factory=dict)

    def committed(self) -> None:
        """The open write committed: the keys it made exist."""
        self.known.update(self._new)
        self._new.clear()

    def rolled_back(self) -> None:
        """The open write was rolled back (or is done): forget the keys it made."""
        self._new.clear()


def obis_key_map(conn: Connection, cache: ObisKeys, codes: Iterable[str]) -> dict[str, int]:
    """OBIS code -> key, made where missing (inside the caller's write)."""
    o = schema.obis_codes
    wanted = [c for c in dict.fromkeys(codes) if c not in cache.known and c not in cache._new]
    if wanted:
        if conn.dialect.name == "postgresql":
            conn.execute(
                text(
                    "INSERT INTO obis_codes (obis) SELECT unnest(CAST(:codes AS text[])) "
                    "ON CONFLICT DO NOTHING"
                ),
                {"codes": wanted},
            )
        else:
            conn.exec_driver_sql(
                "INSERT INTO obis_codes (obis) VALUES (?) ON CONFLICT DO NOTHING",
                [(c,) for c in wanted],
            )
        for key, code in conn.execute(select(o.c.obis_key, o.c.obis).where(o.c.obis.in_(wanted))):
            cache._new[str(code)] = int(key)
    return {**cache.known, **cache._new}


def _us(ts: Any) -> int | None:
    return None if ts is None else epoch_us(ts)


REGISTER_COLUMNS = ("meter_key", "obis_key", "ts_us", "value", "scaler", "unit", "capture_us")
EVENT_COLUMNS = ("meter_key", "log_key", "ts_us", "code", "name")
_PG_TYPES = {
    "register_values": ("integer", "integer", "bigint", "bigint", "smallint", "smallint", "bigint"),
    "meter_events": ("integer", "integer", "bigint", "integer", "text"),
}


@functools.lru_cache(maxsize=32)
def _sqlite_insert(table: str, columns: tuple[str, ...], n: int) -> str:
    one = "(" + ",".join("?" * len(columns)) + ")"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {','.join([one] * n)} "
        "ON CONFLICT DO NOTHING"
    )


@functools.lru_cache(maxsize=4)
def _pg_insert(table: str, columns: tuple[str, ...]) -> Any:
    arrays = ", ".join(
        f"CAST(:{c} AS {t}[])" for c, t in zip(columns, _PG_TYPES[table], strict=True)
    )
    return text(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT DO NOTHING"
    )


def _insert(
    conn: Connection, table: str, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]
) -> int:
    """Insert-or-ignore ``rows`` in bulk; return how many were new."""
    new = 0
    if conn.dialect.name == "postgresql":
        stmt = _pg_insert(table, columns)
        for lo in range(0, len(rows), _ROWS_PER_ARRAY):
            chunk = rows[lo : lo + _ROWS_PER_ARRAY]
            arrays = {c: list(v) for c, v in zip(columns, zip(*chunk, strict=True), strict=True)}
            new += max(conn.execute(stmt, arrays).rowcount, 0)
        return new
    for lo in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[lo : lo + _ROWS_PER_STATEMENT]
        params = tuple(v for row in chunk for v in row)
        result = conn.exec_driver_sql(_sqlite_insert(table, columns, len(chunk)), params)
        new += max(result.rowcount, 0)
    return new


def store_registers(
    conn: Connection, keys: KeyCache, obis: ObisKeys, rows: Sequence[RegisterRead]
) -> int:
    """Insert-or-ignore register values on (meter, OBIS, ts); return how many were new."""
    if not rows:
        return 0
    mk = meter_key_map(conn, keys, (r[0] for r in rows))
    ok = obis_key_map(conn, obis, (r[1] for r in rows))
    out = [(mk[m], ok[o], epoch_us(ts), v, s, u, _us(c)) for m, o, ts, v, s, u, c in rows]
    return _insert(conn, "register_values", REGISTER_COLUMNS, out)


def store_events(conn: Connection, keys: KeyCache, obis: ObisKeys, rows: Sequence[Event]) -> int:
    """Insert-or-ignore event-log entries on (meter, log, ts, code); return how many were new."""
    if not rows:
        return 0
    mk = meter_key_map(conn, keys, (r[0] for r in rows))
    ok = obis_key_map(conn, obis, (r[1] for r in rows))
    out = [(mk[m], ok[log], epoch_us(ts), code, name) for m, log, ts, code, name in rows]
    return _insert(conn, "meter_events", EVENT_COLUMNS, out)


def register_select() -> Select[Any]:
    """Register values joined to their meter id and OBIS code, as :class:`RegisterRead`
    columns (narrow it with ``.where`` on ``interval_meters``, ``obis_codes`` and
    ``register_values`` columns)."""
    r, m, o = schema.register_values, schema.interval_meters, schema.obis_codes
    return (
        select(m.c.meter_id, o.c.obis, r.c.ts_us, r.c.value, r.c.scaler, r.c.unit, r.c.capture_us)
        .select_from(r)
        .join(m, m.c.meter_key == r.c.meter_key)
        .join(o, o.c.obis_key == r.c.obis_key)
    )


def event_select() -> Select[Any]:
    """Event-log entries joined to their meter id and log OBIS code, as :class:`Event`
    columns."""
    e, m, o = schema.meter_events, schema.interval_meters, schema.obis_codes
    return (
        select(m.c.meter_id, o.c.obis, e.c.ts_us, e.c.code, e.c.name)
        .select_from(e)
        .join(m, m.c.meter_key == e.c.meter_key)
        .join(o, o.c.obis_key == e.c.log_key)
    )
