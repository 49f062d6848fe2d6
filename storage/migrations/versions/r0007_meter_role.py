"""Version 7: meters.role, the meter's role in its transformer area (line loss).

Revision ID: 0007
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, String

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("meters", Column("role", String(16)))
