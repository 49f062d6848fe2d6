"""Monthly partitions of ``interval_days`` on PostgreSQL, and retention by dropping them.

Why monthly: a month of a 200,000-meter fleet is about 24 million day rows (a few GB), small
enough to drop at once and to vacuum, large enough that a year is a dozen partitions. The
partition key is the row's day (days since 1970-01-01, UTC). A partition is made the first time
a row of its month is written (in the writer's transaction, so a rolled-back write leaves no
partition behind); retention drops every partition that ends on or before the first kept day.
SQLite has no partitions: there retention deletes the rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from sqlalchemy import Connection, text

EPOCH_DAY = date(1970, 1, 1)
PARENT = "interval_days"


def day_number(day: date) -> int:
    """Days since 1970-01-01 (the ``day`` column)."""
    return (day - EPOCH_DAY).days


def day_of(number: int) -> date:
    """The date of a ``day`` column value."""
    return EPOCH_DAY + timedelta(days=number)


def month_partition(number: int) -> tuple[str, int, int]:
    """(name, first day, first day after) of the monthly partition holding day ``number``."""
    first = day_of(number).replace(day=1)
    after = (first + timedelta(days=32)).replace(day=1)
    return f"{PARENT}_{first:%Y%m}", day_number(first), day_number(after)


def ensure_partitions(conn: Connection, days: Iterable[int], known: set[str]) -> set[str]:
    """Create the partitions the ``days`` fall into that ``known`` does not hold; return the
    names of the partitions made or found here (for the caller to remember after commit)."""
    made: set[str] = set()
    for number in sorted(set(days)):
        name, low, high = month_partition(number)
        if name in known or name in made:
            continue
        conn.execute(
            text(
                f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF {PARENT} '
                f"FOR VALUES FROM ({low}) TO ({high})"
            )
        )
        made.add(name)
    return made


def partitions(conn: Connection) -> list[tuple[str, int, int]]:
    """(name, first day, first day after) of every monthly partition, oldest first."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :parent "
            "AND pg_catalog.pg_table_is_visible(p.oid)"
        ),
        {"parent": PARENT},
    )
    out = []
    for (name,) in rows:
        stamp = str(name)[len(PARENT) + 1 :]
        if len(stamp) == 6 and stamp.isdigit():
            first = date(int(stamp[:4]), int(stamp[4:]), 1)
            _name, low, high = month_partition(day_number(first))
            out.append((str(name), low, high))
    return sorted(out, key=lambda p: p[1])


def drop_partitions_before(conn: Connection, first_kept: int) -> list[str]:
    """Drop the partitions wholly before day ``first_kept``; return their names."""
    dropped = []
    for name, _low, high in partitions(conn):
        if high <= first_kept:
            conn.execute(text(f'DROP TABLE "{name}"'))
            dropped.append(name)
    return dropped
