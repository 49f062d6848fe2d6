"""Version 3: command audit, clock corrections, outages (storage.operations).

Revision ID: 0003
"""

from __future__ import annotations

from alembic import op

from storage.operations import migrate as create_operations_tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_operations_tables(op.get_bind())
