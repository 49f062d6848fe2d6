"""Version 6: the indexes of the API's queries (alarms across meters, meters by station).

Revision ID: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_log_ts", "events", ["log_obis", "ts"])
    op.create_index("ix_meters_station", "meters", ["station"])
