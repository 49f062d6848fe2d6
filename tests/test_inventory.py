"""Inventory import: every validation rule, broken files, all-or-nothing, upsert, size."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from collector.inventory import InventoryError, import_inventory, parse_inventory
from storage.database import Database, open_database

HEADER = (
    "meter_id,transport,host,port,device,physical_address,logical_address,client_sap,"
    "authentication,password,link_id,area,station"
)
GOOD = [
    "T1,tcp,10.0.0.1,,,,,,,,,north,S1",
    "T2,tcp,10.0.0.2,4060,,,1,16,lls,keys/t2,,north,S1",
    "H1,hdlc-tcp,ts1.example,10001,,17,1,16,none,,bus-a,south,S2",
    "H2,hdlc-tcp,ts1.example,10001,,0x12,,,,,bus-a,south,S2",
    "S1,serial,,,/dev/ttyUSB0,17,,1,,,rs485-1,,",
    "S2,serial,,,/dev/ttyUSB0,16381,,,,,rs485-1,,",
]


def write(tmp_path: Path, lines: list[str], header: str = HEADER, name: str = "m.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = open_database(tmp_path / "hes.db")
    else:
        database = open_database(request.getfixturevalue("pg_url"))
    try:
        yield database
    finally:
        database.close()


def test_good_file_imported_with_defaults(db: Database, tmp_path: Path) -> None:
    result = import_inventory(db, write(tmp_path, GOOD))
    assert (result.rows, result.inserted, result.updated) == (6, 6, 0)
    t1 = db.get_meter("T1")
    assert t1 is not None
    assert (t1.port, t1.logical_address, t1.client_sap, t1.authentication) == (4059, 1, 16, "none")
    assert t1.link_id == "T1" and t1.area == "north" and t1.station == "S1"
    t2 = db.get_meter("T2")
    assert t2 is not None and t2.password_ref == "keys/t2" and t2.port == 4060
    h2 = db.get_meter("H2")
    assert h2 is not None and h2.physical_address == 0x12 and h2.link_id == "bus-a"
    s2 = db.get_meter("S2")
    assert s2 is not None and s2.device == "/dev/ttyUSB0" and s2.physical_address == 16381
    assert s2.host is None and s2.port is None and s2.area is None


def test_reimport_updates(db: Database, tmp_path: Path) -> None:
    import_inventory(db, write(tmp_path, GOOD))
    changed = [line.replace("north", "east") for line in GOOD[:2]] + ["N1,tcp,10.1.1.1,,,,,,,,,,"]
    result = import_inventory(db, write(tmp_path, changed, name="b.csv"))
    assert (result.inserted, result.updated) == (1, 2)
    t1 = db.get_meter("T1")
    assert t1 is not None and t1.area == "east"
    assert len(db.meters()) == 7


def test_columns_in_any_order_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("\ufefftransport,Meter_ID,host\ntcp,X1,h\n\n", encoding="utf-8")
    (rec,) = parse_inventory(path)
    assert rec.meter_id == "X1" and rec.host == "h"


BAD_ROWS = [
    (",tcp,h,,,,,,,,,,", "meter_id is empty"),
    ("bad id,tcp,h,,,,,,,,,,", "meter_id 'bad id'"),
    ("X,udp,h,,,,,,,,,,", "transport 'udp' is not one of"),
    ("X,tcp,,,,,,,,,,,", "host is required for transport tcp"),
    ("X,tcp,h,0,,,,,,,,,", "port 0 out of range 1..65535"),
    ("X,tcp,h,65536,,,,,,,,,", "port 65536 out of range"),
    ("X,tcp,h,12ab,,,,,,,,,", "port '12ab' is not an integer"),
    ("X,tcp,h,,/dev/x,,,,,,,,", "device is not used with transport tcp"),
    ("X,hdlc-tcp,h,,,17,,,,,bus,,", "port is required for transport hdlc-tcp"),
    ("X,hdlc-tcp,h,5,,,,,,,bus,,", "physical_address is required for transport hdlc-tcp"),
    ("X,hdlc-tcp,h,5,,17,,,,,,,", "link_id is required for transport hdlc-tcp"),
    ("X,hdlc-tcp,h,5,,15,,,,,bus,,", "physical_address 15 out of range 16..16381"),
    ("X,hdlc-tcp,h,5,,0x3FFE,,,,,bus,,", "physical_address 16382 out of range"),
    ("X,hdlc-tcp,h,5,,17,0,,,,bus,,", "logical_address 0 out of range"),
    ("X,serial,,,,17,,,,,bus,,", "device is required for transport serial"),
    ("X,serial,h,,/dev/x,17,,,,,bus,,", "host/port are not used with transport serial"),
    ("X,serial,,,/dev/x,17,,,,,,,", "link_id is required for transport serial"),
    ("X,tcp,h,,,,,0,,,,,", "client_sap 0 out of range 1..126"),
    ("X,tcp,h,,,,,128,,,,,", "client_sap 128 out of range"),
    ("X,tcp,h,,,,,,hls-gmac,,,,", "authentication 'hls-gmac' is not one of none, lls"),
    ("X,tcp,h,,,,,,lls,,,,", "authentication lls needs a password reference"),
    ("X,tcp,h,,,,,,lls,pa ss w0rd!,,,", "must be a key-store reference name"),
    ("X,tcp,h,,,,,,,,,,,", "14 fields, the header has 13"),
    ("X,tcp,h", "3 fields, the header has 13"),
    ("X,tcp,h,,,,,,,,," + "a" * 300 + ",", "area longer than 255 characters"),
    ("X,tcp,h\x00x,,,,,,,,,,", "host contains control characters"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_ROWS)
def test_each_rule(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path, [*GOOD[:2], line])
    with pytest.raises(InventoryError) as info:
        parse_inventory(path)
    assert info.value.problems[0][0] == 4
    assert reason in info.value.problems[0][1]
    assert f"{path}:4: " in str(info.value)


def test_duplicates_and_link_clashes(tmp_path: Path) -> None:
    lines = [
        *GOOD,
        "T1,tcp,10.0.0.9,,,,,,,,,,",  # line 8: duplicate id
        "H3,hdlc-tcp,ts1.example,10001,,17,,,,,bus-a,,",  # line 9: address 17 taken on bus-a
        "H4,hdlc-tcp,ts2.example,10001,,20,,,,,bus-a,,",  # line 10: bus-a is another endpoint
        "S3,serial,,,/dev/ttyUSB1,99,,,,,rs485-1,,",  # line 11: rs485-1 is /dev/ttyUSB0
        "H5,hdlc-tcp,ts1.example,10001,,17,,,,,bus-b,,",  # same address, other link: fine
    ]
    with pytest.raises(InventoryError) as info:
        parse_inventory(write(tmp_path, lines))
    probs = info.value.problems
    assert [line for line, _ in probs] == [8, 9, 10, 11]
    assert "duplicate meter_id 'T1' (first on line 2)" in probs[0][1]
    assert "physical_address 17 on link 'bus-a', already used by meter 'H1' (line 4)" in probs[1][1]
    assert "link 'bus-a' of meter 'H4' is hdlc-tcp ts2.example:10001" in probs[2][1]
    assert "serial /dev/ttyUSB1" in probs[3][1]


def test_bad_file_imports_nothing(db: Database, tmp_path: Path) -> None:
    path = write(tmp_path, [*GOOD, "X,tcp,,,,,,,,,,,"])
    with pytest.raises(InventoryError, match="nothing imported"):
        import_inventory(db, path)
    assert db.meters() == []


def test_clash_with_stored_meter(db: Database, tmp_path: Path) -> None:
    import_inventory(db, write(tmp_path, GOOD))
    path = write(tmp_path, ["H9,hdlc-tcp,ts1.example,10001,,17,,,,,bus-a,,"], name="n.csv")
    with pytest.raises(InventoryError) as info:
        import_inventory(db, path)
    assert info.value.problems[0][0] == 2
    assert "already used by meter 'H1' (already stored)" in info.value.problems[0][1]
    assert db.get_meter("H9") is None
    # Moving H1 away in the same file is fine: the file's rows win over stored ones.
    moved = [
        "H9,hdlc-tcp,ts1.example,10001,,17,,,,,bus-a,,",
        "H1,hdlc-tcp,ts1.example,10001,,30,,,,,bus-a,,",
    ]
    import_inventory(db, write(tmp_path, moved, name="m2.csv"))
    h1 = db.get_meter("H1")
    assert h1 is not None and h1.physical_address == 30


def test_many_problems_are_capped(tmp_path: Path) -> None:
    path = write(tmp_path, [f"X{i},tcp,,,,,,,,,,," for i in range(120)])
    with pytest.raises(InventoryError) as info:
        parse_inventory(path)
    assert len(info.value.problems) == 50
    assert "... and 70 more problems" in str(info.value)
    assert "(120 problems)" in str(info.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file: no header line"),
        (b"id,kind\nX,tcp\n", "unknown column(s) 'id', 'kind'"),
        (b"meter_id,host\nX,h\n", "missing column(s) transport"),
        (b"meter_id,transport,host,host\nX,tcp,h,h\n", "duplicate column(s) host"),
        (b"meter_id,transport,host\nX,tcp,\xff\xfe\x00junk\n", "not UTF-8 text"),
        (b"meter_id,transport,host\nX,tcp,h\x00\x01\x02\n", "contains control characters"),
        (b'meter_id,transport,host\nX,tcp,"h\n', "not valid CSV"),
        (bytes(range(256)) * 4, "not UTF-8 text"),
    ],
)
def test_broken_files(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    with pytest.raises(InventoryError) as info:
        parse_inventory(path)
    assert reason in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read"):
        parse_inventory(tmp_path / "nope.csv")


def test_large_import(db: Database, tmp_path: Path) -> None:
    n = 5000
    lines = [
        f"M{i:06d},hdlc-tcp,ts{i // 100}.example,{10000 + i // 100},,{16 + i % 100},,,,,"
        f"bus{i // 100},area{i % 7},st{i % 30}"
        for i in range(n)
    ]
    path = write(tmp_path, lines)
    started = time.perf_counter()
    result = import_inventory(db, path)
    elapsed = time.perf_counter() - started
    assert (result.rows, result.inserted) == (n, n)
    assert len(db.meters()) == n
    assert elapsed < 10
    again = import_inventory(db, path)
    assert (again.inserted, again.updated) == (0, n)


def test_installed_on_column(tmp_path: Path) -> None:
    path = tmp_path / "i.csv"
    path.write_text("meter_id,transport,host,installed_on\nA,tcp,h,2024-03-05\nB,tcp,h,\n")
    a, b = parse_inventory(path)
    assert a.installed_on == date(2024, 3, 5) and b.installed_on is None
    path.write_text("meter_id,transport,host,installed_on\nA,tcp,h,5.3.2024\n")
    with pytest.raises(InventoryError, match=r"installed_on '5.3.2024' is not a date"):
        parse_inventory(path)
