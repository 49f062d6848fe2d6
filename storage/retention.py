"""Retention: readings older than the policy's horizon leave the database.

Why by day number and partitions: interval data is most of the database, and on PostgreSQL a
month of it is one partition, so expiring a month drops a table instead of deleting 24 million
rows (no vacuum debt, no bloat); only the partition that straddles the horizon has its old rows
deleted. SQLite deletes by the leading ``day`` of the key (a range, not a scan). Register reads
and read attempts follow the same horizon (register values are keyed by meter first, so their
delete is one scan a day rather than a time index on every row; attempts lead their key with
the day, a range again); events and the command audit are kept (they are the meter's and the
operators' record, and small).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import delete, func, select

from storage import partitions, schema
from storage.handle import DatabaseHandle
from storage.interval_write import DAY_S, PG_INTERVAL_LOCK


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What one application of the policy removed (or would remove, for a dry run)."""

    first_kept: date
    partitions_dropped: tuple[str, ...]
    interval_rows: int
    interval_values: int
    register_reads: int
    read_attempts: int
    dry_run: bool

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "first_kept": self.first_kept.isoformat(),
            "partitions_dropped": list(self.partitions_dropped),
            "interval_rows": self.interval_rows,
            "interval_values": self.interval_values,
            "register_reads": self.register_reads,
            "read_attempts": self.read_attempts,
            "dry_run": self.dry_run,
        }


def apply_retention(
    db: DatabaseHandle, keep_days: int, *, today: date | None = None, dry_run: bool = False
) -> RetentionResult:
    """Remove readings of days before ``today - keep_days`` (UTC days); ``keep_days`` >= 1.

    One transaction: interrupted, it removes nothing.
    """
    if keep_days < 1:
        raise ValueError(f"keep_days must be at least 1, not {keep_days}")
    first_kept = (today or datetime.now(UTC).date()) - timedelta(days=keep_days)
    cutoff_day = partitions.day_number(first_kept)
    cutoff = datetime.combine(first_kept, time(0), UTC)
    d, x = schema.interval_days, schema.interval_extra
    regs, att = schema.register_values, schema.read_attempts
    with db.transaction() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(select(func.pg_advisory_xact_lock(PG_INTERVAL_LOCK)))
        old_days = d.c.day < cutoff_day
        rows, values = conn.execute(
            select(func.count(), func.coalesce(func.sum(d.c.n_values), 0)).where(old_days)
        ).one()
        extra_values = conn.execute(
            select(func.count()).select_from(x).where(x.c.ts_us < cutoff_day * DAY_S * 1_000_000)
        ).scalar_one()
        old_regs = conn.execute(
            select(func.count()).select_from(regs).where(regs.c.ts_us < cutoff)
        ).scalar_one()
        old_attempts = conn.execute(
            select(func.count()).select_from(att).where(att.c.day < cutoff_day)
        ).scalar_one()
        dropped: list[str] = []
        if postgres:
            dropped = [
                name for name, _lo, high in partitions.partitions(conn) if high <= cutoff_day
            ]
        if not dry_run:
            if postgres:
                partitions.drop_partitions_before(conn, cutoff_day)
            conn.execute(delete(d).where(old_days))
            conn.execute(delete(x).where(x.c.ts_us < cutoff_day * DAY_S * 1_000_000))
            conn.execute(delete(regs).where(regs.c.ts_us < cutoff))
            conn.execute(delete(att).where(att.c.day < cutoff_day))
    return RetentionResult(
        first_kept,
        tuple(dropped),
        int(rows),
        int(values) + int(extra_values),
        int(old_regs),
        int(old_attempts),
        dry_run,
    )
