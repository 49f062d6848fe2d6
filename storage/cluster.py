"""Cluster mode in the shared PostgreSQL: job leases, link leases, the nodes, the leader.

Why the database and no broker: several hosts need a shared store anyway, and the job
table already is the service's queue (docs/scale-out.md measured the choice). What this
adds, as plain SQL on PostgreSQL (SQLite has the tables but runs no cluster):

* **job leases** (``jobs.owner``, ``jobs.lease_until``): a node claims the most urgent
  queued job, or a running one whose lease ran out (its node died or hung), with
  ``SELECT … FOR UPDATE SKIP LOCKED``, so two nodes never win the same job and a claim never
  waits on another's lock. The node renews the leases of what it runs; finishing, requeueing
  and progress only touch a job the node still owns with a lease not yet run out
  (fencing): a node that lost a job cannot end it (:class:`LeaseLost`);
* **link leases** (``link_leases``): a bus or terminal-server port carries one session at
  a time across the cluster. A node takes (or confirms) the lease of a shared line before
  each session on it, and renews it while it uses the line;
* **the nodes** (``cluster_nodes``): each node's heartbeat, load and state (``running``,
  ``draining``: finishes what it holds and claims nothing new, ``gone``);
* **the leader** (``cluster_leader``): one row with a lease; the node holding it runs the
  ticker. A leader row and not an advisory lock: a hung leader keeps its session (and a
  session lock) open, but its lease runs out.

Every lease is counted by the database's clock (``clock_timestamp()``), never a node's: the
nodes' clocks may disagree, the database's is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    func,
    select,
    text,
)

from storage.errors import StorageError
from storage.handle import DatabaseHandle, insert_ignore
from storage.jobs import COLUMNS, JobRecord, JobRequest, jobs, row_values, to_record
from storage.schema import UtcDateTime

NODE_STATES = ("running", "draining", "gone")
#: The leader role whose holder runs the ticker.
TICKER = "ticker"

metadata = MetaData()

cluster_nodes = Table(
    "cluster_nodes",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("http", String(255)),
    Column("lease_s", Float, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("heartbeat_at", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("jobs", Integer, nullable=False, server_default="0"),
    Column("links", Integer, nullable=False, server_default="0"),
    Column("sessions", Integer, nullable=False, server_default="0"),
    CheckConstraint("state IN ('running', 'draining', 'gone')", name="ck_cluster_nodes_state"),
)

link_leases = Table(
    "link_leases",
    metadata,
    Column("link", String(128), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("lease_until", UtcDateTime, nullable=False),
)
Index("ix_link_leases_owner", link_leases.c.owner)

cluster_leader = Table(
    "cluster_leader",
    metadata,
    Column("role", String(32), primary_key=True),
    Column("node", String(128), nullable=False),
    Column("since", UtcDateTime, nullable=False),
    Column("lease_until", UtcDateTime, nullable=False),
)


class LeaseLost(StorageError):
    """The node no longer owns the job (its lease ran out and another node may hold it)."""


class NodeNameTaken(StorageError):
    """Another live process already runs as this node."""


def require_postgres(db: DatabaseHandle) -> None:
    """Cluster mode shares its database between hosts: PostgreSQL only."""
    if db.dialect != "postgresql":
        raise StorageError(
            f"cluster mode needs a PostgreSQL database (postgresql+psycopg://...), not "
            f"{db.safe_url}: a SQLite file cannot be shared between hosts"
        )


def _rows(db: DatabaseHandle, sql: str, **params: Any) -> list[Any]:
    with db.transaction() as conn:
        result = conn.execute(text(sql), params)
        return list(result) if result.returns_rows else []


_LEASE = "clock_timestamp() + make_interval(secs => :lease_s)"

# -- nodes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node as ``hes nodes`` shows it."""

    name: str
    host: str
    pid: int
    http: str | None
    state: str
    alive: bool
    leader: bool
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_s: float
    lease_s: float
    jobs: list[int]
    links: list[str]
    sessions: int

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


def register_node(
    db: DatabaseHandle, name: str, host: str, pid: int, lease_s: float, http: str | None = None
) -> list[int]:
    """The node starts (again): its row says ``running``; returns the ids of jobs a previous
    process of this name left running, which go back to the queue at once.

    Refused (:class:`NodeNameTaken`) while another live process (a heartbeat within its
    lease) runs under the same name: two processes of one name would share its leases.
    """
    require_postgres(db)
    with db.transaction() as conn:
        other = conn.execute(
            text(
                "SELECT host, pid, extract(epoch FROM clock_timestamp() - heartbeat_at) "
                "FROM cluster_nodes WHERE name = :name AND state <> 'gone' "
                "AND heartbeat_at + make_interval(secs => lease_s) > clock_timestamp() "
                "FOR UPDATE"
            ),
            {"name": name},
        ).first()
        if other is not None and (other[0], other[1]) != (host, pid):
            raise NodeNameTaken(
                f"node {name!r} is alive as pid {other[1]} on {other[0]} (heartbeat "
                f"{float(other[2]):.1f} s ago): stop it, wait for its lease ({lease_s:g} s) "
                "to run out, or start this one under another name"
            )
        conn.execute(
            text(
                "INSERT INTO cluster_nodes (name, host, pid, http, lease_s, started_at, "
                "heartbeat_at, state, jobs, links, sessions) VALUES (:name, :host, :pid, "
                ":http, :lease_s, clock_timestamp(), clock_timestamp(), 'running', 0, 0, 0) "
                "ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
                "http = excluded.http, lease_s = excluded.lease_s, "
                "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
                "state = 'running', jobs = 0, links = 0, sessions = 0"
            ),
            {"name": name, "host": host, "pid": pid, "http": http, "lease_s": lease_s},
        )
        ids = [
            int(r[0])
            for r in conn.execute(
                text(
                    "UPDATE jobs SET state = 'queued', owner = NULL, lease_until = NULL "
                    "WHERE owner = :name AND state = 'running' RETURNING id"
                ),
                {"name": name},
            )
        ]
        conn.execute(text("DELETE FROM link_leases WHERE owner = :name"), {"name": name})
    return sorted(ids)


def heartbeat(
    db: DatabaseHandle,
    name: str,
    *,
    jobs_held: int,
    links_held: int,
    sessions: int,
    http: str | None = None,
) -> str | None:
    """The node is alive, with this load; returns its state (``draining`` when an operator
    asked it to drain), None when its row is gone."""
    rows = _rows(
        db,
        "UPDATE cluster_nodes SET heartbeat_at = clock_timestamp(), jobs = :jobs, "
        "links = :links, sessions = :sessions, http = coalesce(:http, http) "
        "WHERE name = :name RETURNING state",
        name=name,
        http=http,
        jobs=jobs_held,
        links=links_held,
        sessions=sessions,
    )
    return str(rows[0][0]) if rows else None


def set_state(db: DatabaseHandle, name: str, state: str) -> bool:
    """Set a node's state (drain it, or mark it gone); False when there is no such node."""
    if state not in NODE_STATES:
        raise ValueError(f"a node's state is one of {', '.join(NODE_STATES)}, not {state!r}")
    require_postgres(db)
    rows = _rows(
        db,
        "UPDATE cluster_nodes SET state = :state WHERE name = :name RETURNING name",
        name=name,
        state=state,
    )
    return bool(rows)


def list_nodes(db: DatabaseHandle, *, include_gone: bool = False) -> list[NodeRecord]:
    """Every node (the gone ones only with ``include_gone``), with its jobs and links."""
    require_postgres(db)
    with db.reading() as conn:
        rows = list(
            conn.execute(
                text(
                    "SELECT n.name, n.host, n.pid, n.http, n.state, "
                    "n.state <> 'gone' AND n.heartbeat_at + make_interval(secs => n.lease_s) "
                    "> clock_timestamp(), "
                    "coalesce(l.node = n.name AND l.lease_until > clock_timestamp(), false), "
                    "n.started_at, n.heartbeat_at, "
                    "extract(epoch FROM clock_timestamp() - n.heartbeat_at), n.lease_s, "
                    "n.sessions FROM cluster_nodes n "
                    "LEFT JOIN cluster_leader l ON l.role = :role ORDER BY n.name"
                ),
                {"role": TICKER},
            )
        )
        held: dict[str, list[int]] = {}
        for owner, job_id in conn.execute(
            text(
                "SELECT owner, id FROM jobs WHERE state = 'running' AND owner IS NOT NULL "
                "AND lease_until > clock_timestamp() ORDER BY id"
            )
        ):
            held.setdefault(owner, []).append(int(job_id))
        links: dict[str, list[str]] = {}
        for owner, link in conn.execute(
            text(
                "SELECT owner, link FROM link_leases WHERE lease_until > clock_timestamp() "
                "ORDER BY link"
            )
        ):
            links.setdefault(owner, []).append(str(link))
    out = []
    for r in rows:
        if r[4] == "gone" and not include_gone:
            continue
        out.append(
            NodeRecord(
                name=r[0],
                host=r[1],
                pid=int(r[2]),
                http=r[3],
                state=r[4],
                alive=bool(r[5]),
                leader=bool(r[6]),
                started_at=r[7],
                heartbeat_at=r[8],
                heartbeat_age_s=round(float(r[9]), 3),
                lease_s=float(r[10]),
                jobs=held.get(r[0], []),
                links=links.get(r[0], []),
                sessions=int(r[11]),
            )
        )
    return out


# -- the leader ----------------------------------------------------------------------------


def lead(db: DatabaseHandle, node: str, lease_s: float, role: str = TICKER) -> bool:
    """Take or keep the role for ``lease_s``: True when ``node`` holds it now.

    The row is taken over only once its lease has run out, so a leader that hangs is
    replaced one lease after its last renewal, and a live one is never displaced."""
    rows = _rows(
        db,
        "INSERT INTO cluster_leader (role, node, since, lease_until) VALUES (:role, :node, "
        f"clock_timestamp(), {_LEASE}) ON CONFLICT (role) DO UPDATE SET "
        "node = excluded.node, lease_until = excluded.lease_until, since = CASE WHEN "
        "cluster_leader.node = excluded.node THEN cluster_leader.since ELSE excluded.since END "
        "WHERE cluster_leader.node = excluded.node "
        "OR cluster_leader.lease_until < clock_timestamp() RETURNING node",
        role=role,
        node=node,
        lease_s=lease_s,
    )
    return bool(rows)


def resign(db: DatabaseHandle, node: str, role: str = TICKER) -> None:
    """Give the role up (a node that stops): another node takes it at its next try."""
    _rows(
        db, "DELETE FROM cluster_leader WHERE role = :role AND node = :node", role=role, node=node
    )


def leader(db: DatabaseHandle, role: str = TICKER) -> str | None:
    """The node holding the role now (None: nobody, or its lease ran out)."""
    rows = _rows(
        db,
        "SELECT node FROM cluster_leader WHERE role = :role AND lease_until > clock_timestamp()",
        role=role,
    )
    return str(rows[0][0]) if rows else None


# -- job leases ----------------------------------------------------------------------------


def submit_tick(
    db: DatabaseHandle, requests: Sequence[JobRequest], now: datetime
) -> tuple[list[JobRecord], bool]:
    """Store the link jobs of one schedule tick at once; returns ``(jobs, created)``.

    All the requests name the same schedule and tick. A transaction lock on the schedule
    serialises two leaders enqueueing the same tick (one that lost its lease and has not
    noticed yet): the second finds the tick's jobs and adds none, even if it split the
    fleet otherwise (an inventory change between the two)."""
    require_postgres(db)
    if not requests:
        return [], False
    schedule, tick = requests[0].schedule, requests[0].tick
    if (
        schedule is None
        or tick is None
        or any((r.schedule, r.tick) != (schedule, tick) for r in requests)
    ):
        raise ValueError("a tick's jobs all name the same schedule and tick")
    for req in requests:
        req.check()
    same_tick = and_(jobs.c.schedule == schedule, jobs.c.tick == tick)
    with db.transaction() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schedule})
        in_order = select(*COLUMNS).where(same_tick).order_by(jobs.c.id)
        existing = [to_record(r) for r in conn.execute(in_order)]
        if existing:
            return existing, False
        conn.execute(insert_ignore(db.dialect, jobs), [row_values(r, now) for r in requests])
        stored = [to_record(r) for r in conn.execute(in_order)]
    return stored, True


def claim(
    db: DatabaseHandle, node: str, lease_s: float, *, max_priority: int | None = None
) -> JobRecord | None:
    """The most urgent job that may start, leased to ``node`` (None: none).

    A queued job whose ``not_before`` has come, or a running one whose lease ran out (its
    node died or hung: redelivery); lowest priority number first, then oldest. Jobs that
    another node is claiming at this moment are skipped, not waited for."""
    urgent = "" if max_priority is None else "AND priority <= :max_priority "
    rows = _rows(
        db,
        "UPDATE jobs j SET state = 'running', started_at = clock_timestamp(), "
        f"attempts = j.attempts + 1, owner = :node, lease_until = {_LEASE} FROM ("
        "SELECT id FROM jobs WHERE state IN ('queued', 'running') AND ((state = 'queued' "
        "AND (not_before IS NULL OR "
        "not_before <= clock_timestamp())) OR (state = 'running' AND lease_until < "
        f"clock_timestamp())) {urgent}ORDER BY priority, id LIMIT 1 FOR UPDATE SKIP LOCKED"
        ") c WHERE j.id = c.id RETURNING j.id",
        node=node,
        lease_s=lease_s,
        max_priority=max_priority,
    )
    if not rows:
        return None
    found = db.execute_read(select(*COLUMNS).where(jobs.c.id == rows[0][0]))
    return to_record(found[0])


def renew_jobs(db: DatabaseHandle, node: str, job_ids: Sequence[int], lease_s: float) -> set[int]:
    """Extend the leases of ``job_ids`` that ``node`` still holds; returns those ids (a
    missing one was lost: its lease ran out, and another node may run it now)."""
    if not job_ids:
        return set()
    rows = _rows(
        db,
        f"UPDATE jobs SET lease_until = {_LEASE} WHERE id = ANY(:ids) AND owner = :node "
        "AND state = 'running' AND lease_until >= clock_timestamp() RETURNING id",
        ids=list(job_ids),
        node=node,
        lease_s=lease_s,
    )
    return {int(r[0]) for r in rows}


_OWNED = "id = :id AND owner = :node AND state = 'running' AND lease_until >= clock_timestamp()"


def finish(
    db: DatabaseHandle,
    node: str,
    job_id: int,
    state: str,
    *,
    result: Any = None,
    error: str | None = None,
) -> JobRecord:
    """End a job ``node`` holds; :class:`LeaseLost` (nothing changed) when it does not."""
    if state not in ("done", "failed", "cancelled"):
        raise ValueError(f"a job finishes as done, failed or cancelled, not {state!r}")
    with db.transaction() as conn:
        won = conn.execute(
            jobs.update()
            .where(
                jobs.c.id == job_id,
                jobs.c.owner == node,
                jobs.c.state == "running",
                jobs.c.lease_until >= func.clock_timestamp(),
            )
            .values(
                state=state,
                result=result,
                error=error[:4000] if error else None,
                lease_until=None,
                finished_at=func.clock_timestamp(),
            )
        ).rowcount
        if not won:
            raise LeaseLost(f"node {node!r} no longer holds job {job_id}: not finished")
        return to_record(conn.execute(select(*COLUMNS).where(jobs.c.id == job_id)).one())


def requeue(db: DatabaseHandle, node: str, job_id: int) -> bool:
    """A job ``node`` stopped goes back to the queue, for any node; False when ``node`` no
    longer held it (another node may run it: nothing changed)."""
    rows = _rows(
        db,
        "UPDATE jobs SET state = 'queued', owner = NULL, lease_until = NULL "
        "WHERE id = :id AND owner = :node AND state = 'running' RETURNING id",
        id=job_id,
        node=node,
    )
    return bool(rows)


def progress(db: DatabaseHandle, node: str, job_id: int, done: int, total: int) -> None:
    """The progress of a job ``node`` holds (a node that lost it writes nothing)."""
    _rows(
        db,
        f"UPDATE jobs SET progress_done = :done, progress_total = :total WHERE {_OWNED}",
        id=job_id,
        node=node,
        done=done,
        total=total,
    )


# -- link leases ---------------------------------------------------------------------------


def take_link(db: DatabaseHandle, node: str, link: str, lease_s: float) -> bool:
    """Take (or renew) the lease of a shared line for ``lease_s``: True when ``node`` holds
    it now. Another node's lease is taken over only once it has run out."""
    rows = _rows(
        db,
        f"INSERT INTO link_leases (link, owner, lease_until) VALUES (:link, :node, {_LEASE}) "
        "ON CONFLICT (link) DO UPDATE SET owner = excluded.owner, "
        "lease_until = excluded.lease_until WHERE link_leases.owner = excluded.owner "
        "OR link_leases.lease_until < clock_timestamp() RETURNING link",
        link=link,
        node=node,
        lease_s=lease_s,
    )
    return bool(rows)


def renew_links(db: DatabaseHandle, node: str, links: Sequence[str], lease_s: float) -> set[str]:
    """Extend the leases of ``links`` that ``node`` still holds; returns those links."""
    if not links:
        return set()
    rows = _rows(
        db,
        f"UPDATE link_leases SET lease_until = {_LEASE} WHERE link = ANY(:links) "
        "AND owner = :node AND lease_until >= clock_timestamp() RETURNING link",
        links=list(links),
        node=node,
        lease_s=lease_s,
    )
    return {str(r[0]) for r in rows}


def release_links(db: DatabaseHandle, node: str, links: Sequence[str] | None = None) -> None:
    """Give up ``node``'s leases of ``links`` (None: all of them)."""
    if links is None:
        _rows(db, "DELETE FROM link_leases WHERE owner = :node", node=node)
    elif links:
        _rows(
            db,
            "DELETE FROM link_leases WHERE owner = :node AND link = ANY(:links)",
            node=node,
            links=list(links),
        )
