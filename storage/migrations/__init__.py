"""The Alembic environment of the hes database (``env.py`` and ``versions/``), run by
:mod:`storage.migration` from ``Database.migrate``; no alembic.ini is needed."""
