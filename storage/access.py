"""API tokens (stored hashed, with a role) and the audit trail of every change made through
the service.

Why SHA-256 and not a password hash: a token is 256 random bits made by
:func:`create_token`, not a human secret, so there is nothing to guess and a slow hash would
only slow every request; the database holds the digest, so a copy of it gives no token. A
token is shown once, when it is made.

Roles: ``reader`` may read everything; ``operator`` may also change things (submit jobs,
send commands, import or enable meters). Every change is audited with the token's name.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from storage.handle import DatabaseHandle
from storage.schema import UtcDateTime

ROLES = ("reader", "operator")
#: Each role with the roles it includes.
GRANTS = {"reader": {"reader"}, "operator": {"reader", "operator"}}
TOKEN_PREFIX = "hes_"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

metadata = MetaData()

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
    CheckConstraint("role IN ('reader', 'operator')", name="ck_api_tokens_role"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(256)),
    Column("status", Integer),
    Column("detail", JSON),
    Column("error", Text),
)
Index("ix_audit_log_at", audit_log.c.at)


def migrate(conn: Connection) -> None:
    """Migration step: tokens and the audit trail."""
    metadata.create_all(conn, checkfirst=True)


class TokenError(ValueError):
    """A token that cannot be made or revoked; the message says why."""


@dataclass(frozen=True, slots=True)
class Token:
    """A stored token (never its secret)."""

    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None

    def may(self, role: str) -> bool:
        return self.revoked_at is None and role in GRANTS[self.role]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    status: int | None
    detail: Any
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "status": self.status,
            "detail": self.detail,
            "error": self.error,
        }


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(db: DatabaseHandle, name: str, role: str, now: datetime | None = None) -> str:
    """Make a token; returns its secret (shown once, stored only as a digest)."""
    if not _NAME.match(name):
        raise TokenError(f"token name {name!r}: 1-64 of letters, digits and _ . @ -")
    if role not in ROLES:
        raise TokenError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if db.execute_read(select(api_tokens.c.name).where(api_tokens.c.name == name)):
        raise TokenError(f"a token named {name!r} exists (revoke it first, or pick a name)")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.transaction() as conn:
        conn.execute(
            insert(api_tokens).values(
                name=name, role=role, token_sha256=digest(secret), created_at=now or _now()
            )
        )
    return secret


def revoke_token(db: DatabaseHandle, name: str, now: datetime | None = None) -> None:
    """Revoked tokens are kept (the audit trail names them) but authenticate nothing; the
    name is freed for a new token."""
    with db.transaction() as conn:
        row = conn.execute(
            select(api_tokens.c.revoked_at).where(api_tokens.c.name == name)
        ).one_or_none()
        if row is None:
            raise TokenError(f"no token named {name!r}")
        conn.execute(
            update(api_tokens)
            .where(api_tokens.c.name == name)
            .values(
                revoked_at=row[0] or now or _now(),
                name=f"{name}~revoked~{secrets.token_hex(4)}",
            )
        )


def authenticate(db: DatabaseHandle, secret: str) -> Token | None:
    """The live token whose secret this is, or None."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    t = api_tokens
    rows = db.execute_read(
        select(t.c.name, t.c.role, t.c.created_at, t.c.revoked_at).where(
            t.c.token_sha256 == digest(secret)
        )
    )
    if not rows or rows[0][3] is not None:
        return None
    return Token(*rows[0])


def tokens(db: DatabaseHandle) -> list[Token]:
    t = api_tokens
    return [
        Token(*r)
        for r in db.execute_read(
            select(t.c.name, t.c.role, t.c.created_at, t.c.revoked_at).order_by(t.c.created_at)
        )
    ]


def audit(
    db: DatabaseHandle,
    actor: str,
    action: str,
    *,
    target: str | None = None,
    status: int | None = None,
    detail: Any = None,
    error: str | None = None,
    now: datetime | None = None,
) -> None:
    """One change request, who made it and how it ended."""
    with db.transaction() as conn:
        conn.execute(
            insert(audit_log).values(
                at=now or _now(),
                actor=actor[:64],
                action=action[:64],
                target=target[:256] if target else None,
                status=status,
                detail=detail,
                error=error[:2000] if error else None,
            )
        )


def audit_entries(
    db: DatabaseHandle, *, actor: str | None = None, limit: int = 100, offset: int = 0
) -> list[AuditEntry]:
    """Newest first."""
    t = audit_log
    stmt = (
        select(t.c.id, t.c.at, t.c.actor, t.c.action, t.c.target, t.c.status, t.c.detail, t.c.error)
        .order_by(t.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if actor is not None:
        stmt = stmt.where(t.c.actor == actor)
    return [AuditEntry(*r) for r in db.execute_read(stmt)]


def _now() -> datetime:
    return datetime.now(UTC)
