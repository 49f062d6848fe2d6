"""Version 13: cluster mode (storage.cluster): job leases, link leases, nodes, the leader.

The job table gets the link a tick's job reads (one job per link and tick, so the unique
key becomes schedule, tick and link) and the lease of the node running it; three new
tables hold the nodes, the link leases of the buses and the leader's lease. SQLite gets
the same shape (its table is rebuilt to change the unique key), though only PostgreSQL
runs the cluster: the tables are frozen here, as revision 0001 froze version 1.

Revision ID: 0013
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import CheckConstraint, Column, Float, Integer, String

from storage.schema import UtcDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(Column("link", String(128), nullable=False, server_default=""))
        batch.add_column(Column("owner", String(128)))
        batch.add_column(Column("lease_until", UtcDateTime))
        batch.drop_constraint("uq_jobs_schedule_tick", type_="unique")
        batch.create_unique_constraint("uq_jobs_schedule_tick_link", ["schedule", "tick", "link"])
    op.create_table(
        "cluster_nodes",
        Column("name", String(128), primary_key=True),
        Column("host", String(255), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("http", String(255)),
        Column("lease_s", Float, nullable=False),
        Column("started_at", UtcDateTime, nullable=False),
        Column("heartbeat_at", UtcDateTime, nullable=False),
        Column("state", String(16), nullable=False),
        Column("jobs", Integer, nullable=False, server_default="0"),
        Column("links", Integer, nullable=False, server_default="0"),
        Column("sessions", Integer, nullable=False, server_default="0"),
        CheckConstraint("state IN ('running', 'draining', 'gone')", name="ck_cluster_nodes_state"),
    )
    op.create_table(
        "link_leases",
        Column("link", String(128), primary_key=True),
        Column("owner", String(128), nullable=False),
        Column("lease_until", UtcDateTime, nullable=False),
    )
    op.create_index("ix_link_leases_owner", "link_leases", ["owner"])
    op.create_table(
        "cluster_leader",
        Column("role", String(32), primary_key=True),
        Column("node", String(128), nullable=False),
        Column("since", UtcDateTime, nullable=False),
        Column("lease_until", UtcDateTime, nullable=False),
    )
