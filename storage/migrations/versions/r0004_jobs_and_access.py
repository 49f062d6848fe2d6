"""Version 4: the service's jobs (storage.jobs), API tokens and audit (storage.access).

Revision ID: 0004
"""

from __future__ import annotations

from alembic import op

from storage.access import migrate as create_access_tables
from storage.jobs import migrate as create_job_tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    create_job_tables(conn)
    create_access_tables(conn)
