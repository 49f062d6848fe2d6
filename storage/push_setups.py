"""The push setups (Blue Book class 40) read from or configured on each meter.

One row per (meter, push setup logical name): the object list, destination, windows and
retry settings as last read back from the meter, and when. The push listener decodes a
Data-Notification that carries only values by the object list stored here. The table lives
in a MetaData of its own, created by Alembic revision 0012 (``storage/migrations/versions``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    insert,
    select,
)

from protocols import push_setup as ps
from storage.handle import DatabaseHandle
from storage.schema import UtcDateTime

metadata = MetaData()

push_setups = Table(
    "push_setups",
    metadata,
    Column("meter_id", String(64), nullable=False),
    # Dotted OBIS text of the push setup, '0.0.25.9.0.255'.
    Column("logical_name", String(32), nullable=False),
    # [[class_id, 'a.b.c.d.e.f', attribute_index, data_index], ...]
    Column("objects", JSON, nullable=False),
    Column("transport", Integer, nullable=False),
    Column("destination", LargeBinary, nullable=False),
    Column("message", Integer, nullable=False),
    # [['start date-time hex', 'end date-time hex'], ...]
    Column("windows", JSON, nullable=False),
    Column("randomisation_start_interval", Integer),
    Column("number_of_retries", Integer),
    Column("repetition_delay", Integer),
    Column("read_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("meter_id", "logical_name", name="pk_push_setups"),
)


def migrate(conn: Connection) -> None:
    """Create the push setups table."""
    metadata.create_all(conn, checkfirst=True)


def obis_bytes(text: str) -> bytes:
    """'0.0.25.9.0.255' -> 6 bytes; ValueError says what is wrong."""
    parts = text.split(".")
    if len(parts) != 6 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(f"{text!r} is not an OBIS code a.b.c.d.e.f (0..255 each)")
    return bytes(int(p) for p in parts)


@dataclass(slots=True, frozen=True)
class PushSetupRecord:
    """One meter's push setup as read back."""

    meter_id: str
    logical_name: bytes
    objects: tuple[ps.PushObject, ...]
    destination: ps.SendDestination
    windows: tuple[ps.Window, ...]
    read_at: datetime
    randomisation_start_interval: int | None = None
    number_of_retries: int | None = None
    repetition_delay: int | None = None

    @property
    def obis(self) -> str:
        return ".".join(str(b) for b in self.logical_name)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (the CLI's): the destination as text when it is ASCII."""
        dest = self.destination.destination
        try:
            text: str | None = dest.decode("ascii")
        except UnicodeDecodeError:
            text = None
        return {
            "meter_id": self.meter_id,
            "push_setup": self.obis,
            "objects": [o.as_dict() for o in self.objects],
            "transport": self.destination.transport,
            "destination": text if text is not None else dest.hex(),
            "message": self.destination.message,
            "windows": [{"start": w.start.hex(), "end": w.end.hex()} for w in self.windows],
            "randomisation_start_interval": self.randomisation_start_interval,
            "number_of_retries": self.number_of_retries,
            "repetition_delay": self.repetition_delay,
            "read_at": self.read_at.isoformat(),
        }


def save_push_setups(db: DatabaseHandle, records: Iterable[PushSetupRecord]) -> int:
    """Store (replace) each meter's push setup; the rows written."""
    rows = [
        {
            "meter_id": r.meter_id,
            "logical_name": r.obis,
            "objects": [[o.class_id, o.obis, o.attribute_index, o.data_index] for o in r.objects],
            "transport": r.destination.transport,
            "destination": r.destination.destination,
            "message": r.destination.message,
            "windows": [[w.start.hex(), w.end.hex()] for w in r.windows],
            "randomisation_start_interval": r.randomisation_start_interval,
            "number_of_retries": r.number_of_retries,
            "repetition_delay": r.repetition_delay,
            "read_at": r.read_at,
        }
        for r in records
    ]
    if not rows:
        return 0
    with db.transaction() as conn:
        for row in rows:
            conn.execute(
                delete(push_setups).where(
                    push_setups.c.meter_id == row["meter_id"],
                    push_setups.c.logical_name == row["logical_name"],
                )
            )
        conn.execute(insert(push_setups), rows)
    return len(rows)


def _record(row: Any) -> PushSetupRecord:
    return PushSetupRecord(
        meter_id=row.meter_id,
        logical_name=obis_bytes(row.logical_name),
        objects=tuple(ps.PushObject(c, obis_bytes(o), a, d) for c, o, a, d in row.objects),
        destination=ps.SendDestination(row.transport, bytes(row.destination), row.message),
        windows=tuple(ps.Window(bytes.fromhex(s), bytes.fromhex(e)) for s, e in row.windows),
        read_at=row.read_at,
        randomisation_start_interval=row.randomisation_start_interval,
        number_of_retries=row.number_of_retries,
        repetition_delay=row.repetition_delay,
    )


def load_push_setups(
    db: DatabaseHandle, meter_ids: Iterable[str] | None = None
) -> list[PushSetupRecord]:
    """The stored push setups (of ``meter_ids``, else all), by meter and logical name."""
    stmt = select(push_setups).order_by(push_setups.c.meter_id, push_setups.c.logical_name)
    if meter_ids is not None:
        stmt = stmt.where(push_setups.c.meter_id.in_(list(meter_ids)))
    return [_record(row) for row in db.execute_read(stmt)]
