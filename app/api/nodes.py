"""``GET /api/nodes``: the nodes of the cluster this service is part of (``hes serve --node``).

The same list as ``hes nodes``, from the shared PostgreSQL (:mod:`storage.cluster`): each
node's state, whether it is alive and leads, its last heartbeat, the jobs and bus leases it
holds and its sessions. The embedded service (no cluster, or SQLite) answers
``{"cluster": false, "items": []}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.auth import Context, Reader
from storage import cluster
from storage.database import Database

router = APIRouter(prefix="/api/nodes", tags=["cluster"])


def nodes_of(db: Database) -> dict[str, Any]:
    """The live and draining nodes, or none outside a cluster."""
    if db.dialect != "postgresql":
        return {"cluster": False, "items": []}
    items = [n.as_dict() for n in cluster.list_nodes(db)]
    return {"cluster": bool(items), "leader": cluster.leader(db), "items": items}


@router.get("", name="nodes.list")
async def list_nodes(ctx: Context, _token: Reader) -> dict[str, Any]:
    """The cluster's nodes (the ones that stopped are left out)."""
    return await ctx.run(nodes_of, ctx.db)
