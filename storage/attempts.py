"""Read attempts as compact rows: day number, meter and run keys, epoch microseconds.

Why: 200,000 meters make 200,000 attempts a night and more on a bad one; with a text meter
id, a text run id, a text day and two 26-character text stamps in every row, and a unique
index and a day index repeating them, the attempts outgrew the register values. Here an
attempt carries the meter's key (``interval_meters``, shared with every table), a run key
(``collection_runs``), the day as days since 1970-01-01 and integer stamps, keyed by
``(day, meter_key, started_us, run_key)``: the daily report's reads and retention's delete
are ranges of that key and no other index is kept. Written by multi-row statements (SQLite)
or arrays through ``unnest`` (PostgreSQL), insert-or-ignore on the key, so re-recording an
attempt stores nothing. Reads join the dictionaries back and hand out
:class:`~storage.records.Attempt` with aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import Connection, Select, select

from storage import schema
from storage.interval_write import KeyCache, epoch_us, meter_key_map
from storage.partitions import day_number, day_of
from storage.records import Attempt
from storage.register_events import DictionaryKeys, dictionary_key_map, insert_rows

ATTEMPT_COLUMNS = (
    "day",
    "meter_key",
    "started_us",
    "run_key",
    "finished_us",
    "outcome",
    "error_class",
    "error",
    "bytes_tx",
    "bytes_rx",
    "round_trips",
)
_PG_TYPES = ("integer", "integer", "bigint", "integer", "bigint", "smallint", "text", "text",
             "bigint", "bigint", "integer")  # fmt: skip


def check_outcomes(attempts: Sequence[Attempt]) -> None:
    """ValueError naming the first outcome that is not one of :data:`schema.OUTCOMES`."""
    for a in attempts:
        if a.outcome not in schema.OUTCOMES:
            raise ValueError(f"outcome must be one of {schema.OUTCOMES}, not {a.outcome!r}")


def store_attempts(
    conn: Connection, keys: KeyCache, runs: DictionaryKeys, attempts: Sequence[Attempt]
) -> int:
    """Insert-or-ignore attempts on (day, meter, start, run); return how many were new."""
    if not attempts:
        return 0
    check_outcomes(attempts)
    mk = meter_key_map(conn, keys, (a.meter_id for a in attempts))
    rk = dictionary_key_map(conn, runs, schema.collection_runs, (a.run_id for a in attempts))
    code = {o: i for i, o in enumerate(schema.OUTCOMES)}
    rows = [
        (
            day_number(a.day),
            mk[a.meter_id],
            epoch_us(a.started),
            rk[a.run_id],
            None if a.finished is None else epoch_us(a.finished),
            code[a.outcome],
            a.error_class,
            a.error,
            a.bytes_tx,
            a.bytes_rx,
            a.round_trips,
        )
        for a in attempts
    ]
    return insert_rows(conn, "read_attempts", ATTEMPT_COLUMNS, _PG_TYPES, rows)


def attempt_select() -> Select[Any]:
    """Attempts joined to their meter id and run id, as :class:`Attempt` columns (the day as
    its number: :func:`attempt_of` makes the record); narrow it with ``.where``."""
    a, m, r = schema.read_attempts, schema.interval_meters, schema.collection_runs
    return (
        select(
            m.c.meter_id,
            r.c.run_id,
            a.c.day,
            a.c.started_us,
            a.c.finished_us,
            a.c.outcome,
            a.c.error_class,
            a.c.error,
            a.c.bytes_tx,
            a.c.bytes_rx,
            a.c.round_trips,
        )
        .select_from(a)
        .join(m, m.c.meter_key == a.c.meter_key)
        .join(r, r.c.run_key == a.c.run_key)
    )


def attempt_of(row: Sequence[Any]) -> Attempt:
    """The :class:`Attempt` of a row of :func:`attempt_select`."""
    meter_id, run_id, day, *rest = row
    return Attempt(str(meter_id), str(run_id), day_of(int(day)), *rest)


def attempts(conn: Connection, day: date | None = None) -> list[Attempt]:
    """Every attempt (of ``day`` only, when given), by day, meter key, start and run."""
    a = schema.read_attempts
    stmt = attempt_select().order_by(a.c.day, a.c.meter_key, a.c.started_us, a.c.run_key)
    if day is not None:
        stmt = stmt.where(a.c.day == day_number(day))
    return [attempt_of(row) for row in conn.execute(stmt)]
