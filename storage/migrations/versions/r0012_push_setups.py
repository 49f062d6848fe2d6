"""Version 12: push_setups, each meter's push setup (class 40) as read back (storage.push_setups).

Revision ID: 0012
"""

from __future__ import annotations

from alembic import op

from storage.push_setups import migrate as create_push_setups_table

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_push_setups_table(op.get_bind())
