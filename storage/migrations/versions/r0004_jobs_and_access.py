"""Version 4: the service's jobs (storage.jobs), API tokens and audit (storage.access).

The job table as version 4 defined it, frozen here rather than taken from
``storage.jobs`` (which holds the newest shape): revision 0013 adds the cluster columns
and must meet the version-4 table.

Revision ID: 0004
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from storage.access import migrate as create_access_tables
from storage.schema import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _version_4_jobs() -> MetaData:
    metadata = MetaData()
    jobs = Table(
        "jobs",
        metadata,
        Column(
            "id",
            BigInteger().with_variant(Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("kind", String(32), nullable=False),
        Column("state", String(16), nullable=False),
        Column("priority", SmallInteger, nullable=False),
        Column("origin", String(16), nullable=False),
        Column("requested_by", String(128), nullable=False),
        Column("params", JSON, nullable=False),
        Column("meters", JSON),
        Column("idempotency_key", String(128)),
        Column("schedule", String(128)),
        Column("tick", UtcDateTime),
        Column("created_at", UtcDateTime, nullable=False),
        Column("not_before", UtcDateTime),
        Column("deadline", UtcDateTime),
        Column("started_at", UtcDateTime),
        Column("finished_at", UtcDateTime),
        Column("attempts", Integer, nullable=False, default=0),
        Column("progress_done", Integer, nullable=False, default=0),
        Column("progress_total", Integer, nullable=False, default=0),
        Column("cancel_requested", Boolean, nullable=False, default=False),
        Column("result", JSON),
        Column("error", Text),
        CheckConstraint(
            "state IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="ck_jobs_state"
        ),
        UniqueConstraint("idempotency_key", name="uq_jobs_idempotency_key"),
        UniqueConstraint("schedule", "tick", name="uq_jobs_schedule_tick"),
    )
    Index("ix_jobs_queue", jobs.c.state, jobs.c.priority, jobs.c.id)
    return metadata


def upgrade() -> None:
    conn = op.get_bind()
    _version_4_jobs().create_all(conn, checkfirst=True)
    create_access_tables(conn)
