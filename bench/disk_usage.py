"""Bytes a database holds, per table with its indexes, naming no table (scenario 5).

The storage bench measures whatever schema is in place, so these iterate the tables that
exist: SQLite's ``dbstat`` (every table and index, after folding the WAL into the file),
PostgreSQL's sizes of every table of the current schema with its partitions. ``growth`` turns
two measures into the bytes an ingest added, per value and per table.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.harness import _r
from storage.database import Database


def sqlite_sizes(path: Path) -> dict[str, Any]:
    """File bytes after folding the WAL in, and bytes per table (its indexes included) and per
    object from ``dbstat`` when this SQLite has it."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master"))
        try:
            per_object = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
        except sqlite3.OperationalError:
            per_object = None
    finally:
        conn.close()
    return {"file_bytes": path.stat().st_size, "page_size": page, "free_pages": free,
            "objects": per_object, "owner": owner}  # fmt: skip


#: Every table of the bench's schema, partitions under the partitioned table they belong to
#: (``pg_partition_tree``), with its heap (TOAST and maps included) and index bytes.
_PG_SIZES = """
WITH top AS (
    SELECT c.oid, c.relname, c.relkind FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition
), leaves AS (
    SELECT top.relname, t.relid FROM top CROSS JOIN LATERAL pg_partition_tree(top.oid) t
    WHERE top.relkind = 'p' AND t.isleaf
    UNION ALL SELECT relname, oid FROM top WHERE relkind <> 'p'
)
SELECT relname, COUNT(*), SUM(pg_table_size(relid)), SUM(pg_indexes_size(relid))
FROM leaves GROUP BY relname
"""


def pg_sizes(db: Database) -> dict[str, Any]:
    """Bytes of every table of the schema (``pg_table_size`` + ``pg_indexes_size``, which
    make ``pg_total_relation_size``), partitions summed into their partitioned table."""
    objects: dict[str, int] = {}
    owner: dict[str, str] = {}
    partitions: dict[str, int] = {}
    for name, leaves, heap, indexes in db.execute_read(text(_PG_SIZES)):
        objects[name], objects[f"{name} (indexes)"] = int(heap), int(indexes)
        owner[name] = owner[f"{name} (indexes)"] = name
        partitions[name] = int(leaves)
    return {"total_bytes": sum(objects.values()), "objects": objects, "owner": owner,
            "relations": partitions}  # fmt: skip


def growth(before: dict[str, Any], after: dict[str, Any], values: int) -> dict[str, Any]:
    """Bytes the ingest added, per value, and which tables (indexes folded in) hold them."""
    total_key = "file_bytes" if "file_bytes" in after else "total_bytes"
    added = after[total_key] - before[total_key]
    out: dict[str, Any] = {
        "bytes_added": added,
        "bytes_per_value": _r(added / values, 2) if values else None,
    }
    if after["objects"] is None:
        out["by_table"] = None
        out["note"] = "this SQLite has no dbstat: file size only"
        return out
    by_table: dict[str, dict[str, Any]] = {}
    old = before["objects"] or {}
    for name, size in after["objects"].items():
        delta = int(size) - int(old.get(name, 0))
        if delta == 0:
            continue
        table = after["owner"].get(name, name)
        entry = by_table.setdefault(table, {"bytes": 0, "objects": {}})
        entry["bytes"] += delta
        entry["objects"][name] = delta
    for entry in by_table.values():
        entry["bytes_per_value"] = _r(entry["bytes"] / values, 2) if values else None
    out["by_table"] = dict(sorted(by_table.items(), key=lambda kv: -kv[1]["bytes"]))
    if "free_pages" in after:
        out["free_pages"] = after["free_pages"]
    if "relations" in after:
        for table, entry in out["by_table"].items():
            entry["relations"] = after["relations"].get(table, 1)
    return out
