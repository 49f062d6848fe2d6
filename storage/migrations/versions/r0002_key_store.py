"""Version 2: the key store and persisted invocation counters (storage.keystore).

Revision ID: 0002
"""

from __future__ import annotations

from alembic import op

from storage.keystore import create_security_tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_security_tables(op.get_bind())
