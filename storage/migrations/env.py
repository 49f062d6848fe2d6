"""Alembic's environment script: run the revisions on the connection hes hands over.

:func:`storage.migration.upgrade` puts its open connection (inside the transaction that
holds the migration lock) in ``config.attributes["connection"]``; the revisions run in
that transaction, so a failed upgrade leaves the database as it was. There is no
alembic.ini and no URL of its own: ``open_database`` (or ``Database.migrate``) migrates.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("hes migrations run from storage.migration.upgrade with a connection")
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
