"""Register values and event-log entries as compact rows: integer keys, epoch microseconds.

Why: 200,000 meters read four registers a day (800,000 rows); with a text meter id, a text
OBIS code and a 26-character text time stamp in the key, those rows were a large share of the
database. Here a row carries the meter's key (``interval_meters``, one key per meter for every
table), an OBIS key (``obis_codes``) and integer time stamps, and is written by multi-row
statements (SQLite) or arrays through ``unnest`` (PostgreSQL), insert-or-ignore on the
natural key so re-reads store nothing twice. Reads join the two dictionaries back and hand out
the public record types (:class:`~storage.records.RegisterRead`, :class:`~storage.records.Event`)
with aware UTC datetimes.

OBIS keys made by a write are remembered only once it commits (:class:`DictionaryKeys`), as the
meter keys of :class:`storage.interval_write.KeyCache` are.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, Table, select, text

from storage import schema
from storage.interval_write import KeyCache, epoch_us, meter_key_map
from storage.records import Event, RegisterRead

#: Rows per multi-row statement (SQLite), within its 32,766 parameters a statement.
_ROWS_PER_STATEMENT = 500
_SQLITE_PARAMETERS = 32_766
#: Rows per unnest statement (PostgreSQL).
_ROWS_PER_ARRAY = 20_000


@dataclass
class DictionaryKeys:
    """Keys of a dictionary table (OBIS codes, collection runs) known to exist (committed),
    plus those made by the open write."""

    known: dict[str, int] = field(default_factory=dict)
    _new: dict[str, int] = field(default_factory=dict)

    def committed(self) -> None:
        """The open write committed: the keys it made exist."""
        self.known.update(self._new)
        self._new.clear()

    def rolled_back(self) -> None:
        """The open write was rolled back (or is done): forget the keys it made."""
        self._new.clear()


def dictionary_key_map(
    conn: Connection, cache: DictionaryKeys, table: Table, names: Iterable[str]
) -> dict[str, int]:
    """name -> key of a ``(key, name)`` dictionary table, made where missing (inside the
    caller's write)."""
    key_col, name_col = table.c[table.c.keys()[0]], table.c[table.c.keys()[1]]
    wanted = [n for n in dict.fromkeys(names) if n not in cache.known and n not in cache._new]
    if wanted:
        if conn.dialect.name == "postgresql":
            conn.execute(
                text(
                    f"INSERT INTO {table.name} ({name_col.name}) "
                    "SELECT unnest(CAST(:names AS text[])) ON CONFLICT DO NOTHING"
                ),
                {"names": wanted},
            )
        else:
            conn.exec_driver_sql(
                f"INSERT INTO {table.name} ({name_col.name}) VALUES (?) ON CONFLICT DO NOTHING",
                [(n,) for n in wanted],
            )
        for key, name in conn.execute(select(key_col, name_col).where(name_col.in_(wanted))):
            cache._new[str(name)] = int(key)
    return {**cache.known, **cache._new}


def obis_key_map(conn: Connection, cache: DictionaryKeys, codes: Iterable[str]) -> dict[str, int]:
    """OBIS code -> key, made where missing (inside the caller's write)."""
    return dictionary_key_map(conn, cache, schema.obis_codes, codes)


def _us(ts: Any) -> int | None:
    return None if ts is None else epoch_us(ts)


REGISTER_COLUMNS = ("meter_key", "obis_key", "ts_us", "value", "scaler", "unit", "capture_us")
EVENT_COLUMNS = ("meter_key", "log_key", "ts_us", "code", "name")
_REGISTER_TYPES = ("integer", "integer", "bigint", "bigint", "smallint", "smallint", "bigint")
_EVENT_TYPES = ("integer", "integer", "bigint", "integer", "text")


@functools.lru_cache(maxsize=32)
def _sqlite_insert(table: str, columns: tuple[str, ...], n: int) -> str:
    one = "(" + ",".join("?" * len(columns)) + ")"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {','.join([one] * n)} "
        "ON CONFLICT DO NOTHING"
    )


@functools.lru_cache(maxsize=8)
def _pg_insert(table: str, columns: tuple[str, ...], types: tuple[str, ...]) -> Any:
    arrays = ", ".join(f"CAST(:{c} AS {t}[])" for c, t in zip(columns, types, strict=True))
    return text(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT DO NOTHING"
    )


def insert_rows(
    conn: Connection,
    table: str,
    columns: tuple[str, ...],
    pg_types: tuple[str, ...],
    rows: Sequence[tuple[Any, ...]],
) -> int:
    """Insert-or-ignore ``rows`` (driver values, ``columns`` order) in bulk: multi-row
    statements on SQLite, arrays of ``pg_types`` through unnest on PostgreSQL; return how
    many were new."""
    new = 0
    if conn.dialect.name == "postgresql":
        stmt = _pg_insert(table, columns, pg_types)
        for lo in range(0, len(rows), _ROWS_PER_ARRAY):
            chunk = rows[lo : lo + _ROWS_PER_ARRAY]
            arrays = {c: list(v) for c, v in zip(columns, zip(*chunk, strict=True), strict=True)}
            new += max(conn.execute(stmt, arrays).rowcount, 0)
        return new
    per_statement = min(_ROWS_PER_STATEMENT, _SQLITE_PARAMETERS // len(columns))
    for lo in range(0, len(rows), per_statement):
        chunk = rows[lo : lo + per_statement]
        params = tuple(v for row in chunk for v in row)
        result = conn.exec_driver_sql(_sqlite_insert(table, columns, len(chunk)), params)
        new += max(result.rowcount, 0)
    return new


def store_registers(
    conn: Connection, keys: KeyCache, obis: DictionaryKeys, rows: Sequence[RegisterRead]
) -> int:
    """Insert-or-ignore register values on (meter, OBIS, ts); return how many were new."""
    if not rows:
        return 0
    mk = meter_key_map(conn, keys, (r[0] for r in rows))
    ok = obis_key_map(conn, obis, (r[1] for r in rows))
    out = [(mk[m], ok[o], epoch_us(ts), v, s, u, _us(c)) for m, o, ts, v, s, u, c in rows]
    return insert_rows(conn, "register_values", REGISTER_COLUMNS, _REGISTER_TYPES, out)


def store_events(
    conn: Connection, keys: KeyCache, obis: DictionaryKeys, rows: Sequence[Event]
) -> int:
    """Insert-or-ignore event-log entries on (meter, log, ts, code); return how many were new."""
    if not rows:
        return 0
    mk = meter_key_map(conn, keys, (r[0] for r in rows))
    ok = obis_key_map(conn, obis, (r[1] for r in rows))
    out = [(mk[m], ok[log], epoch_us(ts), code, name) for m, log, ts, code, name in rows]
    return insert_rows(conn, "meter_events", EVENT_COLUMNS, _EVENT_TYPES, out)


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
