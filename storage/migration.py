"""Run the Alembic revisions of ``storage/migrations`` on the connection hes holds.

Revision ids are the schema version numbers, four digits (``0001`` .. ``0009``), so
:data:`SCHEMA_VERSION` is the head's number. A database written before Alembic has a
``schema_version`` table and no ``alembic_version``: it is stamped at the revision of its
version, then upgraded. After every upgrade ``schema_version`` holds the head's number
too, so a hes release from before Alembic refuses a database it does not know.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, delete, func, insert, inspect, select, text

from storage import schema
from storage.errors import StorageError

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

SCRIPT_LOCATION = Path(__file__).resolve().parent / "migrations"
#: A revision file's name: ``r`` and its four-digit revision id.
_REVISION_FILE = re.compile(r"r(\d{4})_\w+\.py")


@cache
def script_directory() -> ScriptDirectory:
    """The revisions (parsed once per process, and only when a database needs upgrading:
    Alembic and its revision files cost a command's start-up a good part of a second)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(SCRIPT_LOCATION))


def head() -> str:
    """The newest revision this hes knows."""
    rev = script_directory().get_current_head()
    assert rev is not None, f"no revisions in {SCRIPT_LOCATION}"
    return rev


def known_revisions() -> set[str]:
    """Every revision id this hes knows."""
    return {script.revision for script in script_directory().walk_revisions()}


def revision_of(version: int) -> str:
    """The revision id of schema version ``version``."""
    return f"{version:04d}"


def _newest_file_revision() -> int:
    """The highest revision number among the revision files (Alembic's head, as a test pins,
    read without loading Alembic)."""
    numbers = [
        int(m.group(1))
        for p in (SCRIPT_LOCATION / "versions").iterdir()
        if (m := _REVISION_FILE.fullmatch(p.name))
    ]
    assert numbers, f"no revisions in {SCRIPT_LOCATION}"
    return max(numbers)


SCHEMA_VERSION = _newest_file_revision()


def current_revision(conn: Connection) -> str | None:
    """The revision the database is stamped at (None: not stamped)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _legacy_version(conn: Connection) -> int:
    """The ``schema_version`` a database written before Alembic holds (0: none)."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.execute(select(func.max(schema.schema_version.c.version))).scalar() or 0)


def upgrade(conn: Connection, where: str) -> int:
    """Bring the database on ``conn`` to the head revision; return the schema version.

    Runs inside the caller's transaction (which holds the migration lock); ``where``
    names the database in errors. An unknown revision or a newer ``schema_version``
    means a newer hes wrote the database: refused, nothing changed.
    """
    current = current_revision(conn)
    if current == revision_of(SCHEMA_VERSION):
        return SCHEMA_VERSION
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    scripts = script_directory()
    newest = head()
    if current is None:
        legacy = _legacy_version(conn)
        if legacy > SCHEMA_VERSION:
            raise StorageError(
                f"database {where} has schema version {legacy}, newer than "
                f"this hes (version {SCHEMA_VERSION}): upgrade hes"
            )
        if legacy:
            MigrationContext.configure(conn).stamp(scripts, revision_of(legacy))
            current = revision_of(legacy)
    elif current not in known_revisions():
        raise StorageError(
            f"database {where} is at schema revision {current!r}, unknown to this hes "
            f"(newest {newest!r}): upgrade hes"
        )
    if current != newest:
        config = Config()
        # Config values are interpolated: a literal % in the install path is written %%.
        config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        conn.execute(delete(schema.schema_version))
        conn.execute(insert(schema.schema_version).values(version=SCHEMA_VERSION))
    return SCHEMA_VERSION
