"""Alembic revisions ``0001``, ``0002``, ...: revision N brings the schema to version N."""
