"""Meter inventory import from CSV: validate every row, then upsert all or nothing.

Columns (header required, order free): meter_id, transport (tcp | hdlc-tcp | serial),
host, port, device, physical_address, logical_address (default 1), client_sap
(default 16), authentication (none | lls | hls-gmac; default none), password (or
password_ref): the *name* of the LLS secret in the key store, never the secret, link_id
(required for hdlc-tcp and serial; a tcp meter is its own link by default), area, station,
security_profile (none | lls | hls-gmac-suite0; default from authentication):
hls-gmac-suite0 means HLS-GMAC authentication with suite-0 ciphering, its keys looked up by
meter id in the encrypted key store (``hes keys import``), installed_on (YYYY-MM-DD), role
(customer | transformer; default customer): the meter's role in its transformer area for the
line-loss report, where a transformer meter needs an area and an area has at most one,
profile: the name of the meter's profile (``collector.meter_profiles``, resolved when the
file is imported: an unknown name is a bad row), whose client SAP (public, or management for
lls), logical address and physical address fill the columns the row leaves blank.
Integers may be decimal or 0x-hex.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TextIO

from collector.meter_profiles import MeterProfile, ProfileLibrary, check_name
from contracts.meters import DEFAULT_TCP_PORT, REQUIRED_COLUMNS, ROLES, TRANSPORTS
from contracts.meters import INVENTORY_COLUMNS as COLUMNS
from storage.database import Database
from storage.records import MeterRecord

AUTHENTICATIONS = ("none", "lls", "hls-gmac")
PLAIN_AUTHENTICATIONS = ("none", "lls")
#: Security profile -> the authentication it implies.
SECURITY_PROFILES = {"none": "none", "lls": "lls", "hls-gmac-suite0": "hls-gmac"}
MAX_REPORTED = 50

# HDLC server addresses (IEC 62056-46): 0x00-0x0F reserved, 0x3FFE calling,
# 0x3FFF broadcast; client addresses are one byte, 0x7F being the broadcast.
PHYSICAL_RANGE = (16, 0x3FFD)
HDLC_LOGICAL_RANGE = (1, 0x3FFD)
WPORT_RANGE = (1, 0xFFFF)
CLIENT_SAP_RANGE = (1, 0x7E)
PORT_RANGE = (1, 65535)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")
_REF = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
_MAX_FIELD = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InventoryError(Exception):
    """The inventory file was rejected; ``problems`` lists ``(line, reason)`` pairs."""

    def __init__(
        self, path: str, problems: list[tuple[int, str]], total: int | None = None
    ) -> None:
        count = total if total is not None else len(problems)
        self.path = path
        self.problems = problems
        #: How many problems there were (``problems`` holds the first :data:`MAX_REPORTED`).
        self.total = count
        lines = [
            f"{path}:{line}: {reason}" if line else f"{path}: {reason}" for line, reason in problems
        ]
        if count > len(problems):
            lines.append(f"... and {count - len(problems)} more problems")
        plural = "s" if count != 1 else ""
        head = f"inventory {path} rejected ({count} problem{plural}), nothing imported"
        super().__init__(head + "\n" + "\n".join(lines))


@dataclass(slots=True, frozen=True)
class ImportResult:
    """What an import did."""

    path: str
    rows: int
    inserted: int
    updated: int
    seconds: float


class _RowError(Exception):
    pass


def _int(raw: str, name: str, lo: int, hi: int) -> int:
    try:
        value = int(raw, 0) if raw[:2].lower() == "0x" else int(raw, 10)
    except ValueError:
        raise _RowError(f"{name} {raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise _RowError(f"{name} {value} out of range {lo}..{hi}")
    return value


def _opt_int(raw: str, name: str, lo: int, hi: int, default: int | None) -> int | None:
    return _int(raw, name, lo, hi) if raw else default


def _meter_profile(row: dict[str, str], profiles: ProfileLibrary) -> MeterProfile | None:
    name = row.get("profile", "")
    if not name:
        return None
    try:
        return profiles.get(check_name(name))
    except ValueError as exc:  # MeterProfileError included: a missing or broken file
        raise _RowError(str(exc)) from None


def _parse_row(row: dict[str, str], profiles: ProfileLibrary) -> MeterRecord:
    """One CSV row (values stripped) to a MeterRecord, or _RowError naming the first fault;
    blanks the meter's profile covers take its values."""
    meter_id = row.get("meter_id", "")
    if not meter_id:
        raise _RowError("meter_id is empty")
    if not _ID.fullmatch(meter_id):
        raise _RowError(
            f"meter_id {meter_id!r} must be 1-64 characters of letters, digits and _.:/-"
        )
    transport = row.get("transport", "").lower()
    if transport not in TRANSPORTS:
        raise _RowError(
            f"transport {row.get('transport', '')!r} is not one of {', '.join(TRANSPORTS)}"
        )
    for name, value in row.items():
        if len(value) > _MAX_FIELD:
            raise _RowError(f"{name} longer than {_MAX_FIELD} characters")
        if _CONTROL.search(value):
            raise _RowError(f"{name} contains control characters (binary data?)")
    model = _meter_profile(row, profiles)
    host = row.get("host", "") or None
    device = row.get("device", "") or None
    link_id = row.get("link_id", "") or None
    port: int | None
    physical: int | None
    if transport == "serial":
        if not device:
            raise _RowError("device is required for transport serial")
        if host or row.get("port", ""):
            raise _RowError("host/port are not used with transport serial (use device)")
        port = None
    else:
        if not host:
            raise _RowError(f"host is required for transport {transport}")
        if device:
            raise _RowError(f"device is not used with transport {transport} (use host/port)")
        if transport == "tcp":
            port = _opt_int(row.get("port", ""), "port", *PORT_RANGE, DEFAULT_TCP_PORT)
        else:
            if not row.get("port", ""):
                raise _RowError("port is required for transport hdlc-tcp")
            port = _int(row["port"], "port", *PORT_RANGE)
    default_physical = model.physical_address if model is not None else None
    default_logical = model.logical_address if model is not None else 1
    if transport == "tcp":
        physical = _opt_int(
            row.get("physical_address", ""), "physical_address", *PHYSICAL_RANGE, None
        )
        logical = _opt_int(
            row.get("logical_address", ""), "logical_address", *WPORT_RANGE, default_logical
        )
        link_id = link_id or meter_id
    else:
        physical = _opt_int(
            row.get("physical_address", ""), "physical_address", *PHYSICAL_RANGE, default_physical
        )
        if physical is None:
            raise _RowError(f"physical_address is required for transport {transport}")
        logical = _opt_int(
            row.get("logical_address", ""), "logical_address", *HDLC_LOGICAL_RANGE, default_logical
        )
        if not link_id:
            raise _RowError(f"link_id is required for transport {transport} (the shared bus)")
    profile = row.get("security_profile", "").lower() or None
    if profile is not None and profile not in SECURITY_PROFILES:
        raise _RowError(
            f"security_profile {profile!r} is not one of {', '.join(SECURITY_PROFILES)}"
        )
    auth = row.get("authentication", "") or (SECURITY_PROFILES[profile] if profile else "none")
    auth = auth.lower()
    # hls-gmac needs suite-0 keys, so it comes only with the security profile that names them.
    allowed = AUTHENTICATIONS if profile == "hls-gmac-suite0" else PLAIN_AUTHENTICATIONS
    if auth not in allowed:
        raise _RowError(
            f"authentication {auth!r} is not one of {', '.join(allowed)}"
            + ("" if auth != "hls-gmac" else " (hls-gmac needs security_profile hls-gmac-suite0)")
        )
    if profile is None:
        profile = auth
    if SECURITY_PROFILES[profile] != auth:
        raise _RowError(f"authentication {auth} contradicts security_profile {profile}")
    ref_pw, ref_col = row.get("password", ""), row.get("password_ref", "")
    if ref_pw and ref_col and ref_pw != ref_col:
        raise _RowError("password and password_ref disagree (give one key-store reference)")
    ref = ref_col or ref_pw or None
    if ref is not None and not _REF.fullmatch(ref):
        raise _RowError(
            "password must be a key-store reference name (letters, digits, _.:/-), not a secret"
        )
    if auth == "lls" and ref is None:
        raise _RowError("authentication lls needs a password reference")
    default_sap = 16
    if model is not None:
        default_sap = model.public_client_sap if auth == "none" else model.management_client_sap
    client_sap = _opt_int(row.get("client_sap", ""), "client_sap", *CLIENT_SAP_RANGE, default_sap)
    installed_text = row.get("installed_on", "")
    try:
        installed = date.fromisoformat(installed_text) if installed_text else None
    except ValueError:
        raise _RowError(f"installed_on {installed_text!r} is not a date (YYYY-MM-DD)") from None
    role = row.get("role", "").lower() or "customer"
    if role not in ROLES:
        raise _RowError(f"role {row.get('role', '')!r} is not one of {', '.join(ROLES)}")
    area = row.get("area", "") or None
    if role == "transformer" and area is None:
        raise _RowError("role transformer needs an area (the transformer area it supplies)")
    assert logical is not None and client_sap is not None
    return MeterRecord(
        meter_id=meter_id,
        transport=transport,
        host=host,
        port=port,
        device=device,
        physical_address=physical,
        logical_address=logical,
        client_sap=client_sap,
        authentication=auth,
        link_id=link_id,
        area=area,
        station=row.get("station", "") or None,
        password_ref=ref,
        security_profile=profile,
        installed_on=installed,
        role=role,
        profile=model.name if model is not None else None,
    )


def _rows(stream: TextIO, problems: list[tuple[int, str]]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line, stripped row); header faults go to ``problems`` and stop the file."""
    reader = csv.reader(stream, strict=True)
    header: list[str] | None = None
    line = 1
    for fields in reader:
        if header is None:
            header = [h.strip().lower() for h in fields]
            unknown = [h for h in header if h not in COLUMNS]
            missing = [h for h in REQUIRED_COLUMNS if h not in header]
            dupes = sorted({h for h in header if header.count(h) > 1})
            if unknown:
                problems.append((1, f"unknown column(s) {', '.join(map(repr, unknown))}"))
            if missing:
                problems.append((1, f"missing column(s) {', '.join(missing)}"))
            if dupes:
                problems.append((1, f"duplicate column(s) {', '.join(dupes)}"))
            if unknown or missing or dupes:
                return
            line = reader.line_num + 1
            continue
        if not any(f.strip() for f in fields):
            line = reader.line_num + 1
            continue
        if len(fields) != len(header):
            problems.append((line, f"{len(fields)} fields, the header has {len(header)}"))
        else:
            yield line, {h: f.strip() for h, f in zip(header, fields, strict=True)}
        line = reader.line_num + 1
    if header is None:
        problems.append((0, "empty file: no header line"))


def parse_inventory(
    path: str | os.PathLike[str], profiles: ProfileLibrary | None = None
) -> list[MeterRecord]:
    """Read and validate the whole file; raise InventoryError listing every bad row.
    ``profiles``: where the ``profile`` column's names are found (default: the shipped)."""
    return _parse_file(path, profiles or ProfileLibrary())[0]


def _parse_file(
    path: str | os.PathLike[str], profiles: ProfileLibrary
) -> tuple[list[MeterRecord], list[int]]:
    name = str(path)
    try:
        with Path(path).open(encoding="utf-8-sig", newline="") as fh:
            return _parse(fh, name, profiles)
    except OSError as exc:
        raise InventoryError(name, [(0, f"cannot read: {exc.strerror or exc}")]) from exc


def _parse_upload(
    data: bytes | str, name: str, profiles: ProfileLibrary
) -> tuple[list[MeterRecord], list[int]]:
    if isinstance(data, str):
        return _parse(io.StringIO(data, newline=""), name, profiles)
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    return _parse(stream, name, profiles)


def _parse(
    stream: TextIO, name: str, profiles: ProfileLibrary
) -> tuple[list[MeterRecord], list[int]]:
    problems: list[tuple[int, str]] = []
    records: list[MeterRecord] = []
    lines: list[int] = []
    first_line: dict[str, int] = {}
    try:
        for line, row in _rows(stream, problems):
            try:
                rec = _parse_row(row, profiles)
            except _RowError as exc:
                problems.append((line, str(exc)))
                continue
            if rec.meter_id in first_line:
                problems.append(
                    (
                        line,
                        f"duplicate meter_id {rec.meter_id!r} "
                        f"(first on line {first_line[rec.meter_id]})",
                    )
                )
                continue
            first_line[rec.meter_id] = line
            records.append(rec)
            lines.append(line)
    except UnicodeDecodeError as exc:
        raise InventoryError(
            name,
            [*problems[:MAX_REPORTED], (0, f"not UTF-8 text ({exc.reason} at byte {exc.start})")],
        ) from exc
    except csv.Error as exc:
        raise InventoryError(
            name, [*problems[:MAX_REPORTED], (0, f"not valid CSV: {exc}")]
        ) from exc
    problems.extend(_link_problems(records, lines, {}))
    problems.extend(_transformer_problems(records, lines, {}))
    if problems:
        problems.sort(key=lambda pr: pr[0])
        raise InventoryError(name, problems[:MAX_REPORTED], len(problems))
    return records, lines


def _link_problems(
    records: list[MeterRecord],
    lines: list[int],
    existing: dict[str, MeterRecord],
) -> list[tuple[int, str]]:
    """Meters sharing a link must share its endpoint and have distinct HDLC addresses.

    ``existing`` holds meters already stored that this file does not mention.
    """
    problems: list[tuple[int, str]] = []
    endpoint: dict[str, tuple[tuple[str, str | None, int | None, str | None], str]] = {}
    owner: dict[tuple[str, int], str] = {}
    where = {r.meter_id: line for r, line in zip(records, lines, strict=True)}

    def place(meter_id: str) -> str:
        return f"line {where[meter_id]}" if meter_id in where else "already stored"

    for rec in [*existing.values(), *records]:
        line = where.get(rec.meter_id, 0)
        ep = (rec.transport, rec.host, rec.port, rec.device)
        seen = endpoint.get(rec.link_id)
        if seen is None:
            endpoint[rec.link_id] = (ep, rec.meter_id)
        elif seen[0] != ep and rec.transport != "tcp":
            problems.append(
                (
                    line,
                    f"link {rec.link_id!r} of meter {rec.meter_id!r} is {_ep(ep)}, but meter "
                    f"{seen[1]!r} ({place(seen[1])}) has it as {_ep(seen[0])}",
                )
            )
        if rec.transport == "tcp" or rec.physical_address is None:
            continue
        key = (rec.link_id, rec.physical_address)
        other = owner.get(key)
        if other is None:
            owner[key] = rec.meter_id
        else:
            problems.append(
                (
                    line,
                    f"meter {rec.meter_id!r} has physical_address {rec.physical_address} on link "
                    f"{rec.link_id!r}, already used by meter {other!r} ({place(other)})",
                )
            )
    return problems


def _transformer_problems(
    records: list[MeterRecord],
    lines: list[int],
    existing: dict[str, MeterRecord],
) -> list[tuple[int, str]]:
    """An area has one transformer meter: its supply cannot be read off two.

    ``existing`` holds meters already stored that this file does not mention.
    """
    problems: list[tuple[int, str]] = []
    where = {r.meter_id: line for r, line in zip(records, lines, strict=True)}
    owner: dict[str, str] = {}
    for rec in [*existing.values(), *records]:
        if rec.role != "transformer" or rec.area is None:
            continue
        other = owner.get(rec.area)
        if other is None:
            owner[rec.area] = rec.meter_id
            continue
        place = f"line {where[other]}" if other in where else "already stored"
        problems.append(
            (
                where.get(rec.meter_id, 0),
                f"meter {rec.meter_id!r} is a second transformer of area {rec.area!r} "
                f"(the first is {other!r}, {place})",
            )
        )
    return problems


def _ep(ep: tuple[str, str | None, int | None, str | None]) -> str:
    transport, host, port, device = ep
    return f"{transport} {device}" if transport == "serial" else f"{transport} {host}:{port}"


def import_inventory(
    db: Database, path: str | os.PathLike[str], profiles: ProfileLibrary | None = None
) -> ImportResult:
    """Validate ``path`` and upsert its meters in one transaction.

    Raises InventoryError (nothing written) when any row is bad, including a clash
    with a meter already stored that this file does not update. ``profiles``: where the
    ``profile`` column's names are found (default: the shipped profiles).
    """
    started = time.perf_counter()
    return _store(db, *_parse_file(path, profiles or ProfileLibrary()), str(path), started)


def import_inventory_text(
    db: Database,
    data: bytes | str,
    name: str = "upload",
    profiles: ProfileLibrary | None = None,
) -> ImportResult:
    """:func:`import_inventory` of a file's content (the API's upload)."""
    started = time.perf_counter()
    parsed = _parse_upload(data, name, profiles or ProfileLibrary())
    return _store(db, *parsed, name, started)


def _store(
    db: Database, records: list[MeterRecord], lines: list[int], name: str, started: float
) -> ImportResult:
    ids = {r.meter_id for r in records}
    with db.transaction() as conn:
        existing = {m.meter_id: m for m in db.meters(conn) if m.meter_id not in ids}
        if existing:
            # The file is consistent in itself, so whatever is found now clashes with
            # a stored meter the file leaves alone.
            clashes = [
                pr
                for pr in (
                    *_link_problems(records, lines, existing),
                    *_transformer_problems(records, lines, existing),
                )
                if pr[0]
            ]
            if clashes:
                raise InventoryError(name, clashes[:MAX_REPORTED], len(clashes))
        inserted, updated = db.upsert_meters(records, conn=conn)
    return ImportResult(
        path=name,
        rows=len(records),
        inserted=inserted,
        updated=updated,
        seconds=time.perf_counter() - started,
    )
