"""The encrypted key store, ``hes keys import`` and the persisted invocation counters."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from protocols.security import SecurityKeys
from storage.database import open_database
from storage.keystore import (
    DatabaseCounterStore,
    KeyStore,
    KeyStoreError,
    MasterKey,
    load_master_key,
    parse_key_file,
    reserve_counter_blocks,
)
from storage.records import IntervalRead

ROOT = Path(__file__).resolve().parents[1]
MASTER_HEX = "11" * 32
OTHER_HEX = "22" * 32
EK1, AK1 = "00112233445566778899AABBCCDDEEFF", "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF"
EK2, AK2 = "0F0E0D0C0B0A09080706050403020100", "F0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF"
EK3, AK3 = "5555555555555555AAAAAAAAAAAAAAAA", "C3C3C3C3C3C3C3C33C3C3C3C3C3C3C3C"


def hes(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HES_")}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **env},
        check=False,
    )


def key_file(path: Path, rows: list[str]) -> Path:
    path.write_text(
        "meter_id,encryption_key,authentication_key,system_title\n" + "\n".join(rows) + "\n"
    )
    return path


def all_hex() -> list[str]:
    return [EK1, AK1, EK2, AK2, EK3, AK3]


def assert_no_key(text: str | bytes) -> None:
    for h in all_hex():
        if isinstance(text, bytes):
            assert h.encode() not in text and h.lower().encode() not in text
            assert bytes.fromhex(h) not in text
        else:
            assert h not in text and h.lower() not in text


def test_import_rotate_and_encrypted_at_rest(tmp_path: Path) -> None:
    db_file = tmp_path / "hes.db"
    env = {"HES_MASTER_KEY": MASTER_HEX}
    first = key_file(tmp_path / "k1.csv", [f"M1,{EK1},{AK1},53494D0000000001", f"M2,{EK2},{AK2},"])
    run = hes("keys", "import", str(first), "--db", str(db_file), env=env)
    assert run.returncode == 0, run.stderr
    assert '"inserted": 2' in run.stdout and '"rotated": 0' in run.stdout
    assert_no_key(run.stdout + run.stderr)
    # some collected data for M1 that rotation must not touch
    db = open_database(str(db_file))
    ts = datetime(2026, 3, 1, tzinfo=UTC)
    db.insert_interval_reads([IntervalRead("M1", "1.0.1.8.0.255:2", ts, 42, 0, 0)], [])
    db.close()
    second = key_file(tmp_path / "k2.csv", [f"M1,{EK3},{AK3},53494D0000000001"])
    run = hes("keys", "import", str(second), "--db", str(db_file), env=env)
    assert run.returncode == 0, run.stderr
    assert '"inserted": 0' in run.stdout and '"rotated": 1' in run.stdout
    db = open_database(str(db_file))
    store = KeyStore(db, load_master_key(env={"HES_MASTER_KEY": MASTER_HEX}))
    m1, m2 = store.get("M1"), store.get("M2")
    assert m1.keys == SecurityKeys(bytes.fromhex(EK3), bytes.fromhex(AK3)) and m1.version == 2
    assert m1.system_title == bytes.fromhex("53494D0000000001")
    assert m2.keys == SecurityKeys(bytes.fromhex(EK2), bytes.fromhex(AK2))
    assert m2.system_title is None
    assert db.count_interval_values() == 1
    db.close()
    assert_no_key(db_file.read_bytes())
    for wal in tmp_path.glob("hes.db-*"):
        assert_no_key(wal.read_bytes())


def test_missing_and_wrong_master_key(tmp_path: Path) -> None:
    db_file = tmp_path / "hes.db"
    file = key_file(tmp_path / "k.csv", [f"M1,{EK1},{AK1},"])
    run = hes("keys", "import", str(file), "--db", str(db_file), env={})
    assert run.returncode == 2 and "no master key: set HES_MASTER_KEY" in run.stderr
    run = hes(
        "keys", "import", str(file), "--db", str(db_file), env={"HES_MASTER_KEY": "not-a-key"}
    )
    assert run.returncode == 2 and "not 32 bytes" in run.stderr
    key_path = tmp_path / "master.key"
    key_path.write_text(MASTER_HEX + "\n")
    run = hes(
        "keys",
        "import",
        str(file),
        "--db",
        str(db_file),
        "--master-key-file",
        str(key_path),
        env={},
    )
    assert run.returncode == 0, run.stderr
    db = open_database(str(db_file))
    with pytest.raises(KeyStoreError, match="wrong master key") as info:
        KeyStore(db, MasterKey(bytes.fromhex(OTHER_HEX))).get("M1")
    assert_no_key(str(info.value))
    with pytest.raises(KeyStoreError, match="no keys stored for meter M9"):
        KeyStore(db, MasterKey(bytes.fromhex(MASTER_HEX))).get("M9")
    db.close()
    # a row altered in the database does not decrypt (and says so)
    con = sqlite3.connect(db_file)
    sealed = con.execute("SELECT sealed FROM meter_keys").fetchone()[0]
    con.execute("UPDATE meter_keys SET sealed = ?", (sealed[:-1] + bytes((sealed[-1] ^ 1,)),))
    con.commit()
    con.close()
    db = open_database(str(db_file))
    with pytest.raises(KeyStoreError, match="altered"):
        KeyStore(db, MasterKey(bytes.fromhex(MASTER_HEX))).get("M1")
    db.close()


def test_bad_key_file_names_line_and_column_never_the_value(tmp_path: Path) -> None:
    file = key_file(
        tmp_path / "k.csv",
        [
            f"M1,{EK1},{AK1},",
            f"M2,{EK2[:-2]},{AK2},",
            f"M3,{EK3},{AK3},XYZ",
            f"M1,{EK3},{AK3},",
        ],
    )
    with pytest.raises(KeyStoreError) as info:
        parse_key_file(file)
    text = str(info.value)
    assert "3 bad line(s), nothing imported" in text
    assert "line 3: encryption_key is not 32 hex digits" in text
    assert "line 4: system_title is not 16 hex digits" in text
    assert "line 5: meter M1 appears twice" in text
    assert_no_key(text)
    assert EK2[:-2] not in text and EK2[:-2].lower() not in text
    db_file = tmp_path / "hes.db"
    run = hes("keys", "import", str(file), "--db", str(db_file), env={"HES_MASTER_KEY": MASTER_HEX})
    assert run.returncode == 1 and "nothing imported" in run.stderr
    assert EK2[:-2] not in run.stderr
    db = open_database(str(db_file))
    assert KeyStore(db, MasterKey(bytes.fromhex(MASTER_HEX))).meter_ids() == []
    db.close()


def test_counter_store_reserves_before_use(tmp_path: Path) -> None:
    db = open_database(str(tmp_path / "hes.db"))
    store = DatabaseCounterStore(db, "M1")
    assert store.peek() == 0
    assert store.reserve(64) == 0
    assert store.reserve(64) == 64
    assert store.peek() == 128
    other_title = DatabaseCounterStore(db, "M1", b"HES\x00\x00\x00\x00\x02")
    assert other_title.reserve(10) == 0
    db.close()
    again = open_database(str(tmp_path / "hes.db"))
    assert DatabaseCounterStore(again, "M1").reserve(1) == 128
    again.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_counter_blocks_of_many_meters_in_one_transaction(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = str(tmp_path / "hes.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    db = open_database(url)
    try:
        a, b = DatabaseCounterStore(db, "B1"), DatabaseCounterStore(db, "B2")
        assert a.reserve(64) == 0
        # the same meter twice in one batch still gets two disjoint blocks
        assert reserve_counter_blocks(db, [(a, 64), (b, 64), (a, 10)]) == [64, 0, 128]
        assert (a.peek(), b.peek()) == (138, 64)
        assert reserve_counter_blocks(db, []) == []
        with pytest.raises(ValueError, match="at least one"):
            reserve_counter_blocks(db, [(b, 5), (a, 0)])
        assert (a.peek(), b.peek()) == (138, 64)  # all or nothing
    finally:
        db.close()


def test_counter_store_on_postgres(pg_url: str) -> None:
    db = open_database(pg_url)
    try:
        a, b = DatabaseCounterStore(db, "P1"), DatabaseCounterStore(db, "P1")
        starts = [a.reserve(5), b.reserve(5), a.reserve(5)]
        assert starts == [0, 5, 10]
    finally:
        db.close()


LLS_HEADER = "meter_id,encryption_key,authentication_key,system_title,lls_password\n"


def test_lls_secrets_import_sealed_apart_from_keys(tmp_path: Path) -> None:
    """A row holds keys, an LLS secret or both; the secret is sealed at rest under its own
    label, never opens as keys, and is read back by reference in one call."""
    file = tmp_path / "k.csv"
    file.write_text(
        LLS_HEADER
        + f"M1,{EK1},{AK1},,\n"
        + "M2,,,,pass-word 2\n"
        + f"M3,{EK3},{AK3},0102030405060708,S3cret!\n"
    )
    db_file = tmp_path / "hes.db"
    run = hes("keys", "import", str(file), "--db", str(db_file), env={"HES_MASTER_KEY": MASTER_HEX})
    assert run.returncode == 0, run.stderr
    assert '"rows": 3, "inserted": 4, "rotated": 0, "lls_secrets": 2' in run.stdout
    assert b"pass-word" not in db_file.read_bytes() and b"S3cret" not in db_file.read_bytes()
    db = open_database(str(db_file))
    try:
        store = KeyStore(db, MasterKey(bytes.fromhex(MASTER_HEX)))
        assert store.meter_ids() == ["M1", "M3"]
        assert store.lls_secrets(["M2", "M3", "M1", "nobody"]) == {
            "M2": b"pass-word 2",
            "M3": b"S3cret!",
        }
        assert store.get("M3").keys == SecurityKeys(bytes.fromhex(EK3), bytes.fromhex(AK3))
        for asked in ("M2", "lls:M2"):
            with pytest.raises(KeyStoreError, match="no keys stored"):
                store.get(asked)
        with pytest.raises(KeyStoreError, match="wrong master key"):
            KeyStore(db, MasterKey(bytes.fromhex(OTHER_HEX))).lls_secrets(["M2"])
    finally:
        db.close()
    # a secret row's label is its own: swapped into a keys row it does not open
    con = sqlite3.connect(db_file)
    sealed = con.execute("SELECT sealed FROM meter_keys WHERE meter_id = 'lls:M3'").fetchone()[0]
    con.execute(
        "UPDATE meter_keys SET sealed = ?, key_version = 1 WHERE meter_id = 'M1'", (sealed,)
    )
    con.commit()
    con.close()
    db = open_database(str(db_file))
    try:
        with pytest.raises(KeyStoreError, match="altered"):
            KeyStore(db, MasterKey(bytes.fromhex(MASTER_HEX))).get("M1")
    finally:
        db.close()


def test_bad_lls_rows_name_line_and_column_never_the_secret(tmp_path: Path) -> None:
    file = tmp_path / "k.csv"
    file.write_text(
        LLS_HEADER
        + "M1,,,,\n"
        + "M2,,,0102030405060708,ok\n"
        + f"M3,{EK1},,,ok\n"
        + "M4,,,,tab\tsecret\n"
        + "M"
        + "5" * 61
        + ",,,,fine\n"
    )
    with pytest.raises(KeyStoreError) as info:
        parse_key_file(file)
    text = str(info.value)
    assert "line 2: neither keys nor an lls_password" in text
    assert "line 3: system_title without keys" in text
    assert "line 4: authentication_key is not 32 hex digits" in text
    assert "line 5: lls_password is not 1..64 printable ASCII characters" in text
    assert "line 6: meter_id of an lls_password is longer than 60 characters" in text
    assert "secret" not in text and EK1 not in text
    only = tmp_path / "lls.csv"
    only.write_text("meter_id,lls_password\nM1,abc\n")
    (row,) = parse_key_file(only)
    assert (row.keys, row.lls_password) == (None, b"abc")
    half = tmp_path / "half.csv"
    half.write_text("meter_id,encryption_key,lls_password\nM1,,abc\n")
    with pytest.raises(KeyStoreError, match="missing: \\['authentication_key'\\]"):
        parse_key_file(half)


_JUNK = st.text(st.characters(codec="ascii", exclude_characters='\r\n,"'), max_size=70)


@st.composite
def key_files(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    """A header of some columns, rows that are mostly well-formed (keys, an LLS secret or
    both), some fields junk, now and then a column missing from the header or a short line."""
    keyed, secret, titled = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    header = ["meter_id"] if draw(st.integers(0, 7)) else []
    header += ["encryption_key", "authentication_key"] if keyed or not secret else []
    header += ["system_title"] if titled else []
    header += ["lls_password"] if secret else []
    header = draw(st.permutations(header))
    rows = []
    for number in range(draw(st.integers(0, 4))):
        with_keys = keyed and (not secret or draw(st.booleans()))
        good = {
            "meter_id": f"M{number}",
            "encryption_key": draw(st.sampled_from([EK1, EK3.lower()])) if with_keys else "",
            "authentication_key": AK2 if with_keys else "",
            "system_title": draw(st.sampled_from(["", "0102030405060708"])) if with_keys else "",
            "lls_password": draw(st.sampled_from(["pw", "p w!", "x" * 64]))
            if secret and (not with_keys or draw(st.booleans()))
            else "",
        }
        rows.append([draw(_JUNK) if draw(st.integers(0, 15)) == 0 else good[c] for c in header])
    if draw(st.integers(0, 7)) == 0 and rows:
        rows[0] = rows[0][:-1]  # a short line
    return header, rows


@settings(max_examples=200, deadline=None)
@given(file=key_files())
def test_any_key_file_is_rows_or_one_error_that_shows_no_value(
    tmp_path_factory: pytest.TempPathFactory, file: tuple[list[str], list[list[str]]]
) -> None:
    """Whatever the file holds, the parser returns rows that say what the file says or
    raises KeyStoreError alone, and its message holds no field's value."""
    header, rows = file
    path = tmp_path_factory.mktemp("kf") / "k.csv"
    path.write_text(",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    try:
        parsed = parse_key_file(path)
    except KeyStoreError as exc:
        text = str(exc)
        for row in rows:
            for value in row:
                if len(value.strip()) >= 12 and value.strip() not in path.name:
                    assert value.strip() not in text
        return
    event("parsed")
    assert 1 <= len(parsed) <= len(rows)
    for row in parsed:
        assert row.keys is not None or row.lls_password is not None
        source = next(r for r in rows if r and r[header.index("meter_id")].strip() == row.meter_id)
        fields = dict(zip(header, (f.strip() for f in source), strict=False))
        if row.lls_password is not None:
            assert row.lls_password.decode() == fields["lls_password"]
        if row.keys is not None:
            assert row.keys.encryption_key.hex() == fields["encryption_key"].lower()
