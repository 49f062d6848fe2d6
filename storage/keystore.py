"""Per-meter DLMS keys, encrypted at rest, and persisted client invocation counters.

Keys (EK, AK) are sealed with AES-256-GCM under a master key that never enters the
database: it comes from the environment (``HES_MASTER_KEY``: 64 hex digits or urlsafe
base64 of 32 bytes) or a key file (``HES_MASTER_KEY_FILE`` or an explicit path, same
format). Each sealed blob is bound to its meter id and key version (GCM associated data), so
rows cannot be swapped between meters. The database stores only a short master-key
identifier (an HMAC of the master key, not the key) so a wrong master key gives a clear
error instead of a decrypt failure.

LLS secrets (the management client's password, an inventory row's ``password_ref``) are
sealed the same way, in the same table under the reference name prefixed ``lls:`` and with an
associated-data label of their own, so a secret never opens as keys nor keys as a secret. A
key file row may carry suite-0 keys, an LLS secret (``lls_password``), or both.

Nothing here prints, logs or puts in an exception message a key, a secret or a key's hex:
messages name the meter, the line of the key file or the column, never the value.

Invocation counters: :class:`DatabaseCounterStore` is the ``protocols.security.CounterStore``
of one (meter, client system title): ``reserve(n)`` moves the stored next counter up by
``n`` in one committed transaction before the caller may use any of them, so neither a
crash nor a second process ever reuses a counter.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import ColumnElement

from protocols.security import (
    DEFAULT_CLIENT_SYSTEM_TITLE,
    Policy,
    SecurityContext,
    SecurityKeys,
)
from storage.handle import DatabaseHandle, insert_ignore
from storage.schema import UtcDateTime

__all__ = [
    "LLS_PREFIX",
    "MASTER_KEY_ENV",
    "MASTER_KEY_FILE_ENV",
    "DatabaseCounterStore",
    "ImportResult",
    "KeyStore",
    "KeyStoreError",
    "MasterKey",
    "StoredKeys",
    "create_security_tables",
    "load_master_key",
    "parse_key_file",
    "security_context",
]

MASTER_KEY_ENV = "HES_MASTER_KEY"
MASTER_KEY_FILE_ENV = "HES_MASTER_KEY_FILE"
#: meter_keys rows holding an LLS secret: ``lls:`` + the password reference.
LLS_PREFIX = "lls:"

#: Tables of the security layer, created by the Alembic revision 0002 (a metadata of their own).
security_metadata = MetaData()

meter_keys = Table(
    "meter_keys",
    security_metadata,
    Column("meter_id", String(64), primary_key=True),
    Column("key_version", Integer, nullable=False),
    # The meter's own system title (public), hex; None = learned from the AARE.
    Column("system_title", String(16)),
    # AES-256-GCM nonce (12) || ciphertext of EK || AK || tag (16).
    Column("sealed", LargeBinary, nullable=False),
    Column("master_key_id", String(16), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

invocation_counters = Table(
    "invocation_counters",
    security_metadata,
    Column("meter_id", String(64), nullable=False),
    Column("client_system_title", String(16), nullable=False),
    # Every counter below this one has been handed out.
    Column("next_counter", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("meter_id", "client_system_title", name="pk_invocation_counters"),
)


def create_security_tables(conn: Connection) -> None:
    """Migration step 2: the key store and invocation counter tables."""
    security_metadata.create_all(conn, checkfirst=True)


class KeyStoreError(Exception):
    """A key store problem, named without any key material."""


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The 32-byte key that seals meter keys; ``key_id`` identifies it without revealing it."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise KeyStoreError("master key must be 32 bytes (64 hex digits or base64)")

    def __repr__(self) -> str:
        return f"MasterKey(id={self.key_id})"

    @property
    def key_id(self) -> str:
        return hmac.new(self.key, b"hes-keystore-master-key-id", hashlib.sha256).hexdigest()[:16]


def _decode_master(text: str, source: str) -> MasterKey:
    value = text.strip()
    raw: bytes | None = None
    if re.fullmatch(r"[0-9A-Fa-f]{64}", value):
        raw = bytes.fromhex(value)
    else:
        try:
            raw = base64.urlsafe_b64decode(value.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raw = None
    if raw is None or len(raw) != 32:
        raise KeyStoreError(
            f"master key from {source} is not 32 bytes as 64 hex digits or urlsafe base64"
        )
    return MasterKey(raw)


def load_master_key(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> MasterKey:
    """The master key from ``path``, else $HES_MASTER_KEY, else the file $HES_MASTER_KEY_FILE."""
    environ = os.environ if env is None else env
    if path is None and environ.get(MASTER_KEY_ENV):
        return _decode_master(environ[MASTER_KEY_ENV], f"${MASTER_KEY_ENV}")
    file = path if path is not None else environ.get(MASTER_KEY_FILE_ENV) or None
    if file is None:
        raise KeyStoreError(
            f"no master key: set {MASTER_KEY_ENV} (64 hex digits) or {MASTER_KEY_FILE_ENV} "
            "(a file holding it), or pass --master-key-file"
        )
    try:
        text = Path(file).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyStoreError(
            f"master key file {file}: cannot read it ({type(exc).__name__})"
        ) from None
    return _decode_master(text, f"file {file}")


@dataclass(frozen=True, slots=True)
class StoredKeys:
    """One meter's keys as held by the store."""

    meter_id: str
    keys: SecurityKeys
    system_title: bytes | None
    version: int


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One parsed line of a key file: suite-0 keys, an LLS secret, or both."""

    meter_id: str
    keys: SecurityKeys | None
    system_title: bytes | None
    #: The management client's LLS password, stored under ``meter_id`` as its reference.
    lls_password: bytes | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"KeyRow({self.meter_id!r}, <keys redacted>)"


@dataclass(frozen=True, slots=True)
class ImportResult:
    path: str
    rows: int
    inserted: int
    rotated: int
    #: Rows that carried an LLS secret.
    lls_secrets: int = 0


_KEYS_LABEL = "hes-meter-keys"
_LLS_LABEL = "hes-lls-secret"
_KEY_COLUMNS = ("meter_id", "encryption_key", "authentication_key", "system_title", "lls_password")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")
#: A reference an LLS secret is stored under (room left for the ``lls:`` prefix).
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,59}")
_HEX32 = re.compile(r"[0-9A-Fa-f]{32}")
_HEX16 = re.compile(r"[0-9A-Fa-f]{16}")
#: An LLS secret in a key file: printable ASCII, no spaces at either end (a CSV field is
#: stripped), at most 64 characters.
_SECRET = re.compile(r"[!-~](?:[ -~]{0,62}[!-~])?")


def _parse_row(row: dict[str, str], seen: set[str]) -> tuple[KeyRow | None, list[str]]:
    """One key file line as a KeyRow, or what is wrong with it (never a value)."""
    meter_id = row["meter_id"]
    bad = []
    ek, ak = row.get("encryption_key", ""), row.get("authentication_key", "")
    title, secret = row.get("system_title", ""), row.get("lls_password", "")
    if not _ID.fullmatch(meter_id):
        bad.append("meter_id is not a valid meter id")
    elif secret and not _REF.fullmatch(meter_id):
        bad.append("meter_id of an lls_password is longer than 60 characters")
    if not (ek or ak or secret):
        bad.append("neither keys nor an lls_password")
    elif ek or ak:
        for col, value in (("encryption_key", ek), ("authentication_key", ak)):
            if not _HEX32.fullmatch(value):
                bad.append(f"{col} is not 32 hex digits (16 bytes)")
    if title and not _HEX16.fullmatch(title):
        bad.append("system_title is not 16 hex digits (8 bytes)")
    if title and not ek:
        bad.append("system_title without keys")
    if secret and not _SECRET.fullmatch(secret):
        bad.append("lls_password is not 1..64 printable ASCII characters")
    if not bad and meter_id in seen:
        bad.append(f"meter {meter_id} appears twice")
    if bad:
        return None, bad
    seen.add(meter_id)
    keys = SecurityKeys(bytes.fromhex(ek), bytes.fromhex(ak)) if ek else None
    return (
        KeyRow(
            meter_id,
            keys,
            bytes.fromhex(title) if title else None,
            secret.encode("ascii") if secret else None,
        ),
        [],
    )


def parse_key_file(path: str | os.PathLike[str]) -> list[KeyRow]:
    """Read a key CSV (meter_id, encryption_key, authentication_key[, system_title]
    [, lls_password]; keys hex). A row holds both keys, an LLS secret, or all of them.

    Every bad line is reported by line number and column, never by value; any bad line
    rejects the whole file.
    """
    name = str(path)
    problems: list[str] = []
    rows: list[KeyRow] = []
    seen: set[str] = set()
    try:
        fh = Path(path).open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise KeyStoreError(f"key file {name}: cannot open it ({type(exc).__name__})") from None
    with fh:
        reader = csv.reader(fh, strict=True)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise KeyStoreError(f"key file {name}: empty, no header line") from None
        except csv.Error:
            raise KeyStoreError(f"key file {name}: line 1 is not CSV") from None
        unknown = [h for h in header if h not in _KEY_COLUMNS]
        wanted = _KEY_COLUMNS[:3] if "lls_password" not in header else _KEY_COLUMNS[:1]
        missing = [h for h in wanted if h not in header]
        if ("encryption_key" in header) != ("authentication_key" in header):
            missing += [h for h in _KEY_COLUMNS[1:3] if h not in header]
        if unknown or missing or len(set(header)) != len(header):
            raise KeyStoreError(
                f"key file {name}: header must name meter_id, encryption_key, "
                f"authentication_key[, system_title][, lls_password] once each, or meter_id "
                f"and lls_password (unknown: {unknown}, missing: {missing})"
            )
        try:
            for fields in reader:
                line = reader.line_num
                if not any(f.strip() for f in fields):
                    continue
                if len(fields) != len(header):
                    problems.append(f"line {line}: {len(fields)} fields, header has {len(header)}")
                    continue
                parsed, bad = _parse_row(
                    {h: f.strip() for h, f in zip(header, fields, strict=True)}, seen
                )
                if parsed is None:
                    problems.append(f"line {line}: " + "; ".join(bad))
                    continue
                rows.append(parsed)
        except csv.Error:
            problems.append(f"line {reader.line_num}: not valid CSV")
    if problems:
        shown = "\n  ".join(problems[:50])
        raise KeyStoreError(
            f"key file {name}: {len(problems)} bad line(s), nothing imported:\n  {shown}"
        )
    if not rows:
        raise KeyStoreError(f"key file {name}: no keys in it")
    return rows


class KeyStore:
    """Meter keys in the hes database, sealed under a master key."""

    def __init__(self, db: DatabaseHandle, master: MasterKey) -> None:
        self.db = db
        self.master = master
        self._aead = AESGCM(master.key)

    def __repr__(self) -> str:
        return f"KeyStore({self.db.safe_url}, master={self.master.key_id})"

    def _seal(self, label: str, meter_id: str, version: int, plain: bytes) -> bytes:
        nonce = os.urandom(12)
        aad = f"{label}|{meter_id}|{version}".encode()
        return nonce + self._aead.encrypt(nonce, plain, aad)

    def _open(self, label: str, row: Row[Any]) -> bytes:
        """The plaintext of a sealed row; KeyStoreError naming the row, never its value."""
        if row.master_key_id != self.master.key_id:
            raise KeyStoreError(
                f"keys of meter {row.meter_id} are sealed under master key "
                f"{row.master_key_id}, not the one given ({self.master.key_id}): wrong master key"
            )
        sealed = bytes(row.sealed)
        aad = f"{label}|{row.meter_id}|{row.key_version}".encode()
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], aad)
        except InvalidTag:
            raise KeyStoreError(
                f"keys of meter {row.meter_id} do not decrypt: the stored row was altered"
            ) from None

    def put_many(self, rows: list[KeyRow]) -> tuple[int, int]:
        """Store (or rotate) keys and LLS secrets for many meters in one transaction;
        (inserted, rotated) counts every stored entry."""
        rotated = 0
        now = datetime.now(UTC)
        entries: list[tuple[str, str, bytes, bytes | None]] = []
        for row in rows:
            if row.keys is not None:
                plain = row.keys.encryption_key + row.keys.authentication_key
                entries.append((row.meter_id, _KEYS_LABEL, plain, row.system_title))
            if row.lls_password is not None:
                entries.append((LLS_PREFIX + row.meter_id, _LLS_LABEL, row.lls_password, None))
        with self.db.transaction() as conn:
            current = dict(
                conn.execute(select(meter_keys.c.meter_id, meter_keys.c.key_version)).all()
            )
            new: list[dict[str, object]] = []
            for stored_id, label, plain, title in entries:
                version = int(current.get(stored_id, 0)) + 1
                values = {
                    "key_version": version,
                    "system_title": title.hex() if title else None,
                    "sealed": self._seal(label, stored_id, version, plain),
                    "master_key_id": self.master.key_id,
                    "updated_at": now,
                }
                if stored_id in current:
                    conn.execute(
                        update(meter_keys).where(meter_keys.c.meter_id == stored_id), values
                    )
                    rotated += 1
                else:
                    new.append({"meter_id": stored_id, **values})
            if new:  # one executemany: a fleet's key file of tens of thousands of rows
                conn.execute(insert(meter_keys), new)
            inserted = len(new)
        return inserted, rotated

    def put(self, meter_id: str, keys: SecurityKeys, system_title: bytes | None = None) -> None:
        if not _ID.fullmatch(meter_id):
            raise KeyStoreError(f"meter id {meter_id!r} is not valid")
        self.put_many([KeyRow(meter_id, keys, system_title)])

    def import_file(self, path: str | os.PathLike[str]) -> ImportResult:
        """Validate the whole key file, then store it in one transaction."""
        rows = parse_key_file(path)
        inserted, rotated = self.put_many(rows)
        secrets = sum(1 for r in rows if r.lls_password is not None)
        return ImportResult(str(path), len(rows), inserted, rotated, secrets)

    def get(self, meter_id: str) -> StoredKeys:
        # a plain read: a write transaction here queued every secured session behind the
        # collector's batch commits for SQLite's write lock
        rows = self.db.execute_read(select(meter_keys).where(meter_keys.c.meter_id == meter_id))
        row = rows[0] if rows else None
        if row is None or meter_id.startswith(LLS_PREFIX):
            raise KeyStoreError(f"no keys stored for meter {meter_id}")
        plain = self._open(_KEYS_LABEL, row)
        return StoredKeys(
            meter_id,
            SecurityKeys(plain[:16], plain[16:32]),
            bytes.fromhex(row.system_title) if row.system_title else None,
            int(row.key_version),
        )

    def meter_ids(self) -> list[str]:
        """The meters with suite-0 keys (LLS secrets not included)."""
        stmt = (
            select(meter_keys.c.meter_id)
            .where(~meter_keys.c.meter_id.startswith(LLS_PREFIX))
            .order_by(meter_keys.c.meter_id)
        )
        return [r[0] for r in self.db.execute_read(stmt)]

    def lls_secrets(self, refs: Iterable[str]) -> dict[str, bytes]:
        """The LLS secrets stored under these references (those that have one), opened in
        one pass: a run asks once for every LLS meter it will talk to."""
        wanted = sorted({LLS_PREFIX + ref for ref in refs})
        out: dict[str, bytes] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            stmt = select(meter_keys).where(meter_keys.c.meter_id.in_(chunk))
            for row in self.db.execute_read(stmt):
                out[row.meter_id[len(LLS_PREFIX) :]] = self._open(_LLS_LABEL, row)
        return out


class DatabaseCounterStore:
    """The persisted client invocation counter of one meter and client system title."""

    def __init__(
        self,
        db: DatabaseHandle,
        meter_id: str,
        client_system_title: bytes = DEFAULT_CLIENT_SYSTEM_TITLE,
    ) -> None:
        self.db = db
        self.meter_id = meter_id
        self.title = client_system_title.hex()

    def _where(self) -> ColumnElement[bool]:
        return (invocation_counters.c.meter_id == self.meter_id) & (
            invocation_counters.c.client_system_title == self.title
        )

    def peek(self) -> int:
        """The next counter a reservation would start at (0 when none was ever used)."""
        with self.db.transaction() as conn:
            value = conn.execute(
                select(invocation_counters.c.next_counter).where(self._where())
            ).scalar()
        return int(value or 0)

    def advance_to(self, counter: int) -> int:
        """Recovery after a meter refused our counter: the next counter becomes at least
        ``counter`` (never lower, which would replay). Returns the next counter in force."""
        if not 0 <= counter < 1 << 32:
            raise ValueError(f"invocation counter {counter} is outside 0..4294967295")
        with self.db.transaction() as conn:
            start = self.reserve_in(conn, 1)
            target = max(start + 1, counter)
            conn.execute(
                update(invocation_counters).where(self._where()),
                {"next_counter": target, "updated_at": datetime.now(UTC)},
            )
        return target

    def reserve(self, count: int) -> int:
        """Commit ``next_counter += count`` and return the old value (first usable)."""
        with self.db.transaction() as conn:
            return self.reserve_in(conn, count)

    def reserve_in(self, conn: Connection, count: int) -> int:
        """``reserve`` inside the caller's transaction (usable once it commits)."""
        if count < 1:
            raise ValueError("reserve at least one counter")
        now = datetime.now(UTC)
        stmt = select(invocation_counters.c.next_counter).where(self._where())
        if self.db.dialect == "postgresql":
            stmt = stmt.with_for_update()
        current = conn.execute(stmt).scalar()
        if current is None:
            conn.execute(
                insert_ignore(self.db.dialect, invocation_counters),
                {
                    "meter_id": self.meter_id,
                    "client_system_title": self.title,
                    "next_counter": 0,
                    "updated_at": now,
                },
            )
            current = conn.execute(stmt).scalar() or 0
        start = int(current)
        conn.execute(
            update(invocation_counters).where(self._where()),
            {"next_counter": start + count, "updated_at": now},
        )
        return start


def counter_recovery(expected: int, meter_id: str = "METER_ID") -> str:
    """The step that gets a meter talking again after it refused our invocation counter
    (``DatabaseCounterStore.advance_to`` behind ``hes keys counter``)."""
    return (
        f"the meter expects client invocation counter {expected} or more: run "
        f"`hes keys counter {meter_id} --at-least {expected}` before the next ciphered session"
    )


def reserve_counter_blocks(
    db: DatabaseHandle, requests: Sequence[tuple[DatabaseCounterStore, int]]
) -> list[int]:
    """Reserve a block for each (store, count) in one committed transaction: one write for a
    batch of secured sessions instead of one each. Returns each block's first counter."""
    if not requests:
        return []
    with db.transaction() as conn:
        return [store.reserve_in(conn, count) for store, count in requests]


def security_context(
    store: KeyStore,
    meter_id: str,
    *,
    client_system_title: bytes = DEFAULT_CLIENT_SYSTEM_TITLE,
    policy: Policy = "authenticated-encrypted",
) -> SecurityContext:
    """The SecurityContext a collector passes to ``Session(security=...)`` for one meter."""
    stored = store.get(meter_id)
    return SecurityContext(
        stored.keys,
        counters=DatabaseCounterStore(store.db, meter_id, client_system_title),
        system_title=client_system_title,
        server_system_title=stored.system_title,
        policy=policy,
    )
