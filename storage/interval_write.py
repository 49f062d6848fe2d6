"""Storing interval reads into day rows: group, merge with what is stored, pack, upsert.

Why a merge: a day row holds a meter channel's whole day, so a late, partial or repeated read
of that day is merged into the stored row: a slot already holding a value keeps it (the
insert-or-ignore rule the collector's idempotent re-reads rely on), new slots are added, the
``complete`` bitmap gains the ranges the meter answered in full. Writers are serialised (SQLite
``BEGIN IMMEDIATE``; on PostgreSQL a transaction-level advisory lock), so a row is never merged
from a stale copy. Everything is one transaction: a crash stores the whole batch or none of it.

The surrogate keys (``interval_meters``, ``interval_channels``) and PostgreSQL's monthly
partitions are looked up once per process and remembered only after the transaction that made
them commits (:class:`KeyCache`), so a rolled-back batch never leaves a key or partition the
cache believes in.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any

from sqlalchemy import Connection, Integer, String, Table, any_, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY

from storage import partitions, schema
from storage.interval_batch import (
    DAY_S,
    Columns,
    Grid,
    Key,
    NewRow,
    encode_new,
    epoch_us,
    grid_of,
    split_session,
    stamps_of,
)
from storage.interval_codec import bitmap_int, bits_of, pack_ints, row_columns, slots_of
from storage.records import Channel, Coverage, IntervalRead

DEFAULT_PERIOD_S = 900
#: Key of the PostgreSQL advisory lock interval writers hold (any fixed 64-bit number).
PG_INTERVAL_LOCK = 0x4E5_0002

#: Column order of an ``interval_days`` row as this module builds it.
DAY_COLUMNS = (
    "day",
    "meter_key",
    "channel_key",
    "period_s",
    "scaler",
    "missing",
    "n_values",
    "present",
    "complete",
    "vals",
    "nulls",
    "status",
)


def grid_period(period_s: int | None) -> int:
    """The period a day row can hold (divides a day, at least a minute); 0 when none can."""
    if period_s is None:
        return DEFAULT_PERIOD_S
    if period_s >= 60 and DAY_S % period_s == 0:
        return period_s
    return 0


@dataclass
class KeyCache:
    """Surrogate keys and partitions known to exist (committed), plus those of the open write."""

    meters: dict[str, int] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)
    partitions: set[str] = field(default_factory=set)
    #: (meter, channel) -> (unit, scaler, period) of ``channels`` rows this process wrote:
    #: a night's sessions repeat them, and an unchanged row is not written again.
    channel_rows: dict[tuple[str, str], tuple[int | None, int, int | None]] = field(
        default_factory=dict
    )
    _new_meters: dict[str, int] = field(default_factory=dict)
    _new_channels: dict[str, int] = field(default_factory=dict)
    _new_partitions: set[str] = field(default_factory=set)
    _new_channel_rows: dict[tuple[str, str], tuple[int | None, int, int | None]] = field(
        default_factory=dict
    )

    def committed(self) -> None:
        """The open write committed: what it made exists."""
        self.meters.update(self._new_meters)
        self.channels.update(self._new_channels)
        self.partitions.update(self._new_partitions)
        self.channel_rows.update(self._new_channel_rows)
        self.rolled_back()

    def rolled_back(self) -> None:
        """The open write was rolled back (or is done): forget what it made."""
        self._new_meters.clear()
        self._new_channels.clear()
        self._new_partitions.clear()
        self._new_channel_rows.clear()

    def changed_channels(self, rows: Iterable[Channel]) -> list[Channel]:
        """Those of ``rows`` not already written as they are (recorded as pending)."""
        out: dict[tuple[str, str], Channel] = {}
        for r in rows:
            key = (r.meter_id, r.channel)
            if self.channel_rows.get(key) != (r.unit, r.scaler, r.period_s):
                out[key] = r
        self._new_channel_rows.update({k: (r.unit, r.scaler, r.period_s) for k, r in out.items()})
        return list(out.values())


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@functools.lru_cache(maxsize=16)
def _sqlite_key_insert(table: str, name: str, key: str, n: int) -> str:
    values = ",".join(["(?)"] * n)
    return (
        f"INSERT INTO {table} ({name}) VALUES {values} ON CONFLICT DO NOTHING "
        f"RETURNING {key}, {name}"
    )


def _resolve(
    conn: Connection,
    table: Table,
    names: Iterable[str],
    known: dict[str, int],
    new: dict[str, int],
) -> dict[str, int]:
    """name -> key for ``names``, inserting the names no key exists for.

    The insert returns the keys it made (one statement for a night's new meters); only names
    it did not insert (made by another process, or before this one started) are selected.
    """
    name_col, key_col = table.c[table.c.keys()[1]], table.c[table.c.keys()[0]]
    wanted = [n for n in dict.fromkeys(names) if n not in known and n not in new]
    for chunk in _chunks(wanted, 500):
        if conn.dialect.name == "postgresql":
            made = conn.execute(
                text(
                    f"INSERT INTO {table.name} ({name_col.name}) SELECT unnest(CAST(:names AS "
                    f"text[])) ON CONFLICT DO NOTHING RETURNING {key_col.name}, {name_col.name}"
                ),
                {"names": list(chunk)},
            )
        else:
            made = conn.exec_driver_sql(
                _sqlite_key_insert(table.name, name_col.name, key_col.name, len(chunk)),
                tuple(chunk),
            )
        for key, name in made:
            new[str(name)] = int(key)
        rest = [n for n in chunk if n not in new]
        if rest:
            stmt = select(key_col, name_col).where(_among(conn, name_col, rest))
            for key, name in conn.execute(stmt):
                new[str(name)] = int(key)
    # the keys this write made are in new even when none is wanted now (a second call)
    return {**known, **new} if new else known


def meter_key_map(conn: Connection, cache: KeyCache, meter_ids: Iterable[str]) -> dict[str, int]:
    """meter id -> meter key, made where missing (inside the caller's write)."""
    return _resolve(conn, schema.interval_meters, meter_ids, cache.meters, cache._new_meters)


def channel_key_map(conn: Connection, cache: KeyCache, channels: Iterable[str]) -> dict[str, int]:
    """channel name -> channel key, made where missing (inside the caller's write)."""
    return _resolve(conn, schema.interval_channels, channels, cache.channels, cache._new_channels)


class _Day:
    """One day row being built: its grid and the entries by slot."""

    __slots__ = ("changed", "complete", "entries", "existing", "period", "scaler")

    def __init__(self, period: int, scaler: int | None) -> None:
        self.period = period
        self.scaler = scaler
        #: slot -> (value, scaler, status)
        self.entries: dict[int, tuple[int | None, int, int | None]] = {}
        self.complete = 0
        self.existing = False
        self.changed = False


def _decode_into(day: _Day, row: Any) -> None:
    """Put a stored row's entries and complete bitmap into ``day``."""
    slots = slots_of(row.present)
    values, statuses = row_columns(slots, row.vals, row.nulls, row.status)
    scaler = int(row.scaler)
    day.entries.update(
        zip(slots, ((v, scaler, st) for v, st in zip(values, statuses, strict=True)), strict=True)
    )
    day.complete = bitmap_int(row.complete)
    day.existing = True


def _encode(day_number: int, mk: int, ck: int, day: _Day) -> tuple[Any, ...]:
    """The ``interval_days`` row (DAY_COLUMNS order) of a built day."""
    entries = day.entries
    slots = sorted(entries)
    # a null-data entry has no value to scale: it reads back with the row's scaler
    scalers = {e[1] for e in entries.values() if e[0] is not None}
    if day.scaler is not None:
        scalers.add(day.scaler)
    target = min(scalers) if scalers else 0
    vals: list[int] = []
    sts: list[int] = []
    nulls = 0
    prev = 0
    for slot in slots:
        v, s, st = entries[slot]
        if v is None:
            nulls |= 1 << slot
            v = prev
        elif s != target:
            v *= 10 ** (s - target)
        prev = v
        vals.append(v)
        sts.append(-1 if st is None else st)
    n_slots = DAY_S // day.period
    present = bits_of(slots)
    nbytes = (n_slots + 7) // 8
    return (
        day_number,
        mk,
        ck,
        day.period,
        target,
        n_slots - (present | day.complete).bit_count(),
        len(slots),
        present.to_bytes(nbytes, "little"),
        day.complete.to_bytes(nbytes, "little"),
        pack_ints(vals, delta=True),
        nulls.to_bytes(nbytes, "little") if nulls else None,
        pack_ints(sts) if sts and max(sts) != -1 else None,
    )


def _stored_periods(
    conn: Connection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], int | None]:
    """The recorded capture period of meter channels without one given (``channels`` table)."""
    wanted = list(dict.fromkeys(keys))
    out: dict[tuple[str, str], int | None] = {}
    c = schema.channels
    for chunk in _chunks(wanted, 400):
        meters = list({m for m, _ in chunk})
        rows = conn.execute(
            select(c.c.meter_id, c.c.channel, c.c.period_s).where(c.c.meter_id.in_(meters))
        )
        for m, ch, p in rows:
            out[(m, ch)] = p
    return out


def _among(conn: Connection, column: Any, values: Sequence[Any]) -> Any:
    """``column IN values``; on PostgreSQL ``= ANY(array)``: one parameter, so the statement
    text stays the same and psycopg parses it once (an expanded IN of hundreds of
    parameters was parsed anew on every call: a fifth of a batch's time there)."""
    if conn.dialect.name == "postgresql":
        item = Integer() if isinstance(column.type, Integer) else String()
        return column == any_(bindparam("among", list(values), type_=ARRAY(item)))
    return column.in_(values)


def _existing_rows(conn: Connection, wanted: Mapping[int, set[tuple[int, int]]]) -> Iterable[Any]:
    """Stored rows of the (day -> {(meter key, channel key)}) wanted."""
    d = schema.interval_days
    size = 20_000 if conn.dialect.name == "postgresql" else 500
    for day_number, pairs in wanted.items():
        mks = sorted({mk for mk, _ in pairs})
        for chunk in _chunks(mks, size):
            stmt = select(d).where(d.c.day == day_number, _among(conn, d.c.meter_key, chunk))
            for row in conn.execute(stmt):
                if (row.meter_key, row.channel_key) in pairs:
                    yield row


#: Epoch microseconds of the stamps seen lately: every meter has the same 96 a day, and a
#: dict lookup costs a tenth of the arithmetic. Bounded; cleared when full.
_EPOCHS: dict[datetime, int] = {}
_EPOCHS_MAX = 200_000


def _epochs(stamps: list[datetime]) -> list[int]:
    """Epoch microseconds of ``stamps`` (C-speed when all are cached)."""
    try:
        return list(map(_EPOCHS.__getitem__, stamps))
    except KeyError:
        if len(_EPOCHS) > _EPOCHS_MAX:
            _EPOCHS.clear()
        for t in stamps:
            if t not in _EPOCHS:
                _EPOCHS[t] = epoch_us(t)
        return list(map(_EPOCHS.__getitem__, stamps))


#: One write's rows of a (day, meter key, channel key) bucket: the write's index, the rows,
#: and when they can take the fast path (:mod:`storage.interval_batch`), their columns and grid.
Segment = tuple[int, Sequence[IntervalRead], Columns | None, Grid | None]


def store_intervals(
    conn: Connection,
    cache: KeyCache,
    writes: Sequence[Sequence[IntervalRead]],
    coverage: Sequence[Coverage] = (),
    periods: Mapping[tuple[str, str], int | None] | None = None,
) -> list[int]:
    """Merge the reads of ``writes`` and ``coverage`` into the day rows; return, per write, how
    many of its values were new (a value given twice counts for the first write giving it).

    ``periods`` gives the capture period of meter channels (the Channel rows of the same
    write); a channel without one takes the ``channels`` table's, else 900 s. A day row keeps
    the period it was made with; an entry off that grid goes to ``interval_extra``.
    """
    counts = [0] * len(writes)
    if not any(writes) and not coverage:
        return counts
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(PG_INTERVAL_LOCK)))
    groups: dict[Key, list[tuple[int, Sequence[IntervalRead], Columns | None]]] = {}
    for w, rows in enumerate(writes):
        for key, part, cols in split_session(rows):
            group = groups.get(key)
            if group is None:
                groups[key] = [(w, part, cols)]
            else:
                group.append((w, part, cols))
    cov_groups: dict[Key, list[tuple[int, int]]] = {}
    for cov in coverage:
        cov_groups.setdefault((cov[0], cov[1]), []).append((epoch_us(cov[2]), epoch_us(cov[3])))
    keys = [*groups, *(k for k in cov_groups if k not in groups)]
    mkeys = meter_key_map(conn, cache, (k[0] for k in keys))
    ckeys = channel_key_map(conn, cache, (k[1] for k in keys))
    given = periods or {}
    unknown = [k for k in keys if given.get(k) is None]
    stored = _stored_periods(conn, unknown) if unknown else {}

    buckets: dict[tuple[int, int, int], list[Segment]] = {}
    wanted_cov: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    series_period: dict[tuple[int, int], int] = {}
    day_us = DAY_S * 1_000_000
    for key in keys:
        mk, ck = mkeys[key[0]], ckeys[key[1]]
        p = given.get(key)
        series_period[(mk, ck)] = grid_period(p if p is not None else stored.get(key))
        period = series_period[(mk, ck)]
        for w, part, cols in groups.get(key, ()):
            if period:
                grid = grid_of(period, cols[0] if cols is not None else stamps_of(part))
                if grid is not None:
                    fast = cols if grid[1] is not None else None
                    segment: Segment = (w, part, fast, grid)
                    bucket = buckets.get(bkey := (grid[0], mk, ck))
                    if bucket is None:
                        buckets[bkey] = [segment]
                    else:
                        bucket.append(segment)
                    continue
            by_day: dict[int, list[IntervalRead]] = {}
            for r, e in zip(part, _epochs([r[2] for r in part]), strict=True):
                by_day.setdefault(e // day_us, []).append(r)
            for day_number, rs in by_day.items():
                buckets.setdefault((day_number, mk, ck), []).append((w, rs, None, None))
        for first, last in cov_groups.get(key, ()):
            if last < first:
                continue
            for day_number in range(first // day_us, last // day_us + 1):
                wanted_cov.setdefault((day_number, mk, ck), []).append((first, last))

    wanted: dict[int, set[tuple[int, int]]] = {}
    for day_number, mk, ck in (*buckets, *wanted_cov):
        wanted.setdefault(day_number, set()).add((mk, ck))
    days: dict[tuple[int, int, int], _Day] = {}
    for row in _existing_rows(conn, wanted):
        stored_day = _Day(int(row.period_s), int(row.scaler))
        _decode_into(stored_day, row)
        days[(row.day, row.meter_key, row.channel_key)] = stored_day

    out: list[tuple[Any, ...]] = []
    new_rows: list[NewRow] = []
    extras: list[tuple[int, int, int, int | None, int, int | None, int]] = []
    built: _Day | None = None
    for bkey, segments in buckets.items():
        day_number, mk, ck = bkey
        built = days.get(bkey)
        period = built.period if built is not None else series_period[(mk, ck)]
        if built is None and len(segments) == 1 and segments[0][2] is not None:
            # a new row written whole by one write: packed with the batch's others
            w, part, fast, grid = segments[0]
            assert fast is not None and grid is not None and grid[1] is not None
            assert grid[2] is not None
            ranges = wanted_cov.pop(bkey, None)
            complete = _covered(day_number, period, tuple(ranges)) if ranges else 0
            n = len(part)
            new_rows.append((day_number, mk, ck, period, fast[2], n, grid[1], grid[2],
                             complete, fast[1], fast[3]))  # fmt: skip
            counts[w] += n
            continue
        base = day_number * day_us
        if built is None:
            if period == 0:
                extras.extend(
                    (mk, ck, e, r[3], r[4], r[5], w)
                    for w, part, *_ in segments
                    for r, e in zip(part, _epochs([r[2] for r in part]), strict=True)
                )
                continue
            built = days[bkey] = _Day(period, None)
        period_us = built.period * 1_000_000
        have = built.entries
        for w, part, *_ in segments:
            for r, e in zip(part, _epochs([r[2] for r in part]), strict=True):
                slot, off = divmod(e - base, period_us)
                if off:
                    extras.append((mk, ck, e, r[3], r[4], r[5], w))
                elif slot not in have:
                    have[slot] = (r[3], r[4], r[5])
                    counts[w] += 1
                    built.changed = True
    for ckey, ranges in wanted_cov.items():
        day_number, mk, ck = ckey
        built = days.get(ckey)
        if built is None:
            period = series_period[(mk, ck)]
            if period == 0:
                continue
            built = days[ckey] = _Day(period, None)
        complete = built.complete | _covered_bits(day_number, built.period, ranges)
        built.changed |= complete != built.complete
        built.complete = complete

    # a stored row nothing was added to is left as it is (a repeated read writes nothing)
    merged = [_encode(*k, d) for k, d in days.items() if d.changed and d.existing]
    out.extend(_encode(*k, d) for k, d in days.items() if not d.existing)
    if new_rows:
        out.extend(encode_new(new_rows))
    if out or merged:
        if conn.dialect.name == "postgresql":
            made = partitions.ensure_partitions(
                conn, {r[0] for r in (*out, *merged)}, cache.partitions
            )
            cache._new_partitions.update(made)
            # rows no stored row exists for (checked under the writers' lock) are copied in
            _pg_copy(conn, out)
            _pg_upsert(conn, merged)
        else:
            _sqlite_upsert(conn, [*out, *merged])
    if extras:
        _insert_extras(conn, extras, counts)
    return counts


@functools.lru_cache(maxsize=4096)
def _covered(day_number: int, period: int, ranges: tuple[tuple[int, int], ...]) -> int:
    """:func:`_covered_bits`, remembered: a night's sessions answer the same day's range."""
    return _covered_bits(day_number, period, ranges)


def _covered_bits(day_number: int, period: int, ranges: Iterable[tuple[int, int]]) -> int:
    """The slots of a day whose stamps lie inside the inclusive microsecond ``ranges``."""
    n_slots = DAY_S // period
    base = day_number * DAY_S * 1_000_000
    step = period * 1_000_000
    bits = 0
    for first, last in ranges:
        lo = max(0, -(-(first - base) // step))
        hi = min(n_slots - 1, (last - base) // step)
        if hi >= lo:
            bits |= ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)
    return bits


_ROWS_PER_STATEMENT = 500


@functools.lru_cache(maxsize=64)
def _sqlite_upsert_sql(n: int) -> str:
    cols = ", ".join(DAY_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in DAY_COLUMNS[3:])
    one = "(" + ",".join("?" * len(DAY_COLUMNS)) + ")"
    return (
        f"INSERT INTO interval_days ({cols}) VALUES {','.join([one] * n)} "
        f"ON CONFLICT (day, meter_key, channel_key) DO UPDATE SET {updates}"
    )


def _sqlite_upsert(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Multi-row upserts: one statement steps many rows (sqlite3 holds the GIL less)."""
    for chunk in _chunks(rows, _ROWS_PER_STATEMENT):
        conn.exec_driver_sql(_sqlite_upsert_sql(len(chunk)), tuple(chain.from_iterable(chunk)))


_PG_TYPES = ("integer",) * 4 + ("smallint",) * 3 + ("bytea",) * 5
_PG_UPSERT = text(
    f"INSERT INTO interval_days ({', '.join(DAY_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{c} AS {t}[])" for c, t in zip(DAY_COLUMNS, _PG_TYPES, strict=True))
    + ") ON CONFLICT (day, meter_key, channel_key) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in DAY_COLUMNS[3:])
).bindparams(*(bindparam(c) for c in DAY_COLUMNS))


def _pg_copy(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """New rows by ``COPY ... FROM STDIN (FORMAT BINARY)`` on the transaction's own connection:
    the fastest way into PostgreSQL, routed to the month's partition by the server."""
    if not rows:
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        with cur.copy(
            f"COPY interval_days ({', '.join(DAY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(list(_PG_TYPES))
            for row in rows:
                copy.write_row(row)


def _pg_upsert(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """One INSERT ... SELECT FROM unnest(arrays) ... ON CONFLICT DO UPDATE per chunk."""
    for chunk in _chunks(rows, 5000):
        cols = dict(zip(DAY_COLUMNS, (list(c) for c in zip(*chunk, strict=True)), strict=True))
        conn.execute(_PG_UPSERT, cols)


def _insert_extras(
    conn: Connection,
    rows: Sequence[tuple[int, int, int, int | None, int, int | None, int]],
    counts: list[int],
) -> None:
    """Insert-or-ignore off-grid entries, counting the new ones for their write."""
    sql = (
        "INSERT INTO interval_extra (meter_key, channel_key, ts_us, value, scaler, status) "
        "VALUES (%s) ON CONFLICT DO NOTHING"
    )
    pg = conn.dialect.name == "postgresql"
    stmt = text(sql % ", ".join(f":{c}" for c in ("m", "c", "t", "v", "s", "st")))
    for m, c, t, v, s, st, w in rows:
        if pg:
            result = conn.execute(stmt, {"m": m, "c": c, "t": t, "v": v, "s": s, "st": st})
        else:
            result = conn.exec_driver_sql(sql % ",".join("?" * 6), (m, c, t, v, s, st))
        counts[w] += max(result.rowcount, 0)


def forget_range(
    conn: Connection,
    meter_ids: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    values: bool = True,
    coverage: bool = True,
) -> int:
    """Remove the values (``values``) and answered-range marks (``coverage``) of ``meter_ids``
    with ``start <= ts < end``, so the collector reads that range again; the values removed.

    For an operator who knows a range is wrong (a meter replaced, a faulty profile) and for
    tests that leave storage as an interrupted night would have.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(PG_INTERVAL_LOCK)))
    lo, hi = epoch_us(start), epoch_us(end)
    if hi <= lo:
        return 0
    day_us = DAY_S * 1_000_000
    d, mk, x = schema.interval_days, schema.interval_meters, schema.interval_extra
    keys = [
        int(k) for (k,) in conn.execute(select(mk.c.meter_key).where(mk.c.meter_id.in_(meter_ids)))
    ]
    if not keys:
        return 0
    removed = 0
    rows = conn.execute(
        select(d).where(
            d.c.meter_key.in_(keys), d.c.day >= lo // day_us, d.c.day <= (hi - 1) // day_us
        )
    ).all()
    for row in rows:
        built = _Day(int(row.period_s), int(row.scaler))
        _decode_into(built, row)
        base = row.day * day_us
        step = built.period * 1_000_000
        inside = [s for s in range(DAY_S // built.period) if lo <= base + s * step < hi]
        if not inside:
            continue
        if values:
            for slot in inside:
                if built.entries.pop(slot, None) is not None:
                    removed += 1
        if coverage:
            built.complete &= ~bits_of(inside)
        where = (d.c.day == row.day, d.c.meter_key == row.meter_key,
                 d.c.channel_key == row.channel_key)  # fmt: skip
        conn.execute(d.delete().where(*where))
        if built.entries or built.complete:
            encoded = _encode(row.day, row.meter_key, row.channel_key, built)
            conn.execute(d.insert().values(dict(zip(DAY_COLUMNS, encoded, strict=True))))
    if values:
        removed += conn.execute(
            x.delete().where(x.c.meter_key.in_(keys), x.c.ts_us >= lo, x.c.ts_us < hi)
        ).rowcount
    return removed
