"""Version 11: meters.profile, the name of the meter's profile (collector/meter_profiles.py).

Revision ID: 0011
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, String

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("meters", Column("profile", String(64)))
