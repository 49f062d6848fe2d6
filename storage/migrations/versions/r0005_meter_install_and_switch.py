"""Version 5: meters.installed_on (inventory) and meters.enabled (the operator's switch).

Revision ID: 0005
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Boolean, Column, Date, true

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("meters", Column("installed_on", Date))
    op.add_column("meters", Column("enabled", Boolean, nullable=False, server_default=true()))
