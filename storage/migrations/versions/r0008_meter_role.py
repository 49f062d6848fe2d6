"""Version 8: meters.role, the meter's role in its transformer area (line loss).

Revision ID: 0008
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, String

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("meters", Column("role", String(16)))
