"""Errors of the storage layer.

Kept apart from ``protocols.errors``: a database failure is not a DLMS failure and
the collector treats it differently (it stops writing, it does not retry the meter).
"""

from __future__ import annotations


class StorageError(Exception):
    """The database could not be opened, migrated, read or written.

    The message names the database by its URL with any password masked.
    ``transient`` is True when the cause is the connection (server gone, file locked),
    so trying again later may succeed; False for a bad URL or a schema problem.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
