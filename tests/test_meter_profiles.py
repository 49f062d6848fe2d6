"""Meter profiles (collector/meter_profiles.py): every key read and checked, errors naming
file and key, lookup by name, the clock deviation convention, and a profile selected per
meter by the inventory and applied by the collector."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_collector_fleet import plan_text

from collector.inventory import InventoryError, import_inventory
from collector.meter_profiles import (
    SHIPPED_DIR,
    ChannelMap,
    MeterProfile,
    MeterProfileError,
    ProfileLibrary,
    blue_book_clock,
    load_profile,
    parse_profile,
)
from collector.plan import PlanError, load_plan
from collector.service import session_options, target_of
from protocols.cosem import CosemDateTime
from storage.database import open_database
from storage.records import MeterRecord

FULL = """
[meter]
manufacturer = "ACME"
model = "X1"

[association]
public_client_sap = 32
management_client_sap = 2
logical_address = 17
max_pdu_size = 1024
gbt_window = 4

[hdlc]
address_size = 4
physical_address = 0x100
max_info_tx = 64
max_info_rx = 256
window_size = 2

[startup]
mode = "iec62056-21"
device_address = "none"

[clock]
deviation = "inverted"

[accept]
trailing_bytes = false

[channels]
profile = "1-0:99.1.0.255"
status_column = 1
registers = ["1.0.1.8.0.255"]

[channels.columns]
3 = "1.0.2.8.0.255"
2 = "1.0.1.8.0.255"
"""


def test_every_key_is_read() -> None:
    profile = parse_profile(FULL, "acme-x1.toml")
    assert profile == MeterProfile(
        name="acme-x1",
        source="acme-x1.toml",
        manufacturer="ACME",
        model="X1",
        public_client_sap=32,
        management_client_sap=2,
        logical_address=17,
        max_pdu_size=1024,
        gbt_window=4,
        address_size=4,
        physical_address=256,
        max_info_tx=64,
        max_info_rx=256,
        window_size=2,
        startup="iec62056-21",
        device_address="none",
        clock_deviation="inverted",
        accept_trailing_bytes=False,
        channels=ChannelMap(
            "1.0.99.1.0.255", {2: "1.0.1.8.0.255", 3: "1.0.2.8.0.255"}, 1, ("1.0.1.8.0.255",)
        ),
    )


def test_an_empty_file_is_a_meter_that_needs_nothing() -> None:
    assert parse_profile("", "plain.toml") == MeterProfile("plain", "plain.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[meter]\nvendor = 'x'\n",
            "f.toml: meter.vendor: unknown key (known: manufacturer, model)",
        ),
        ("[radio]\n", "f.toml: radio: unknown key"),
        ("hdlc = 3\n", "f.toml: hdlc: expected a table, got an integer"),
        ("[hdlc]\nwindow_size = true\n", "hdlc.window_size: expected an integer, got a boolean"),
        ("[hdlc]\nmax_info_tx = 4000\n", "hdlc.max_info_tx: 4000 outside 1..2030"),
        ("[hdlc]\naddress_size = 3\n", "hdlc.address_size: 3: use 0"),
        ("[hdlc]\nphysical_address = 3\n", "hdlc.physical_address: 3 outside 16.."),
        ("[association]\nmax_pdu_size = 11\n", "association.max_pdu_size: 11 outside 12..65535"),
        ("[association]\ngbt_window = 64\n", "association.gbt_window: 64 outside 0..63"),
        (
            "[association]\nreferencing = 'sn'\ngbt_window = 2\n",
            "association.gbt_window: general-block-transfer is for LN referencing only",
        ),
        ("[accept]\ntrailing_bytes = 1\n", "accept.trailing_bytes: expected a boolean, got an"),
        ("[startup]\nmode = 'c'\n", "startup.mode: 'c': use one of hdlc, iec62056-21"),
        ("[channels]\nstatus_column = 1\n", "channels.columns: missing table"),
        ("[channels.columns]\nx = '1.0.1.8.0.255'\n", "channels.columns.x: expected a capture"),
        ("[channels.columns]\n2 = 5\n", "channels.columns.2: expected a channel OBIS string"),
        (
            "[channels]\nstatus_column = 2\n[channels.columns]\n2 = '1.0.1.8.0.255'\n",
            "channels.columns.2: this column is the status_column",
        ),
        (
            "[channels.columns]\n2 = '1.0.1.8.0.255'\n3 = '1-0:1.8.0.255'\n",
            "channels.columns.3: channel 1.0.1.8.0.255 mapped twice",
        ),
        ("[channels]\nregisters = [1]\n", "channels.registers[0]: expected an OBIS string"),
        ("[meter\n", "f.toml: not valid TOML"),
    ],
)
def test_bad_files_are_refused_naming_file_and_key(text: str, message: str) -> None:
    with pytest.raises(MeterProfileError) as info:
        parse_profile(text, "f.toml")
    assert message in str(info.value)


def test_library_looks_in_the_given_directories_first(tmp_path: Path) -> None:
    (tmp_path / "sim-standard.toml").write_text("[meter]\nmodel = 'local copy'\n")
    (tmp_path / "acme.toml").write_text("[association]\npublic_client_sap = 32\n")
    library = ProfileLibrary([tmp_path])
    assert library.get("sim-standard").model == "local copy"
    assert library.get("acme").public_client_sap == 32
    assert ProfileLibrary().get("sim-standard").model == "SIM standard"
    assert {"acme", "sim-standard", "sim-mode-e"} <= set(library.names())
    with pytest.raises(MeterProfileError, match=r"no meter profile 'nope'.*known: acme"):
        library.get("nope")
    with pytest.raises(ValueError, match="must be 1-64 letters"):
        library.get("../etc/passwd")


def test_every_shipped_profile_loads() -> None:
    paths = sorted(SHIPPED_DIR.glob("*.toml"))
    assert len(paths) >= 3
    for path in paths:
        assert load_profile(path).name == path.stem
    assert load_profile(SHIPPED_DIR / "sim-mode-e.toml").startup == "iec62056-21"


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MeterProfileError, match=r"missing\.toml: cannot read"):
        load_profile(tmp_path / "missing.toml")


def test_inverted_deviation_reads_the_same_clock_the_other_way() -> None:
    """CET 12:00 local: the Blue Book sends -60, an inverted meter +60; both are 11:00 UTC."""
    inverted = MeterProfile("b", "b", clock_deviation="inverted")
    assert inverted.inverted_deviation and not MeterProfile("a", "a").inverted_deviation
    blue = CosemDateTime(2026, 1, 5, 1, 12, 0, 0, 0, deviation=-60, clock_status=0)
    other = CosemDateTime(2026, 1, 5, 1, 12, 0, 0, 0, deviation=60, clock_status=0)
    utc = datetime(2026, 1, 5, 11, 0, tzinfo=UTC)
    assert blue_book_clock(blue, False).to_datetime() == utc
    assert blue_book_clock(other, True) == blue
    assert blue_book_clock(other, True).to_datetime() == utc
    assert other.to_datetime() != utc  # read without the profile, an hour off the other way


# ------------------------------------------------------------ selected per meter: inventory

ACME = """
[meter]
manufacturer = "ACME"
model = "X1"
[association]
public_client_sap = 32
management_client_sap = 2
logical_address = 17
max_pdu_size = 512
gbt_window = 3
[hdlc]
address_size = 4
physical_address = 0x100
max_info_tx = 64
max_info_rx = 200
[clock]
deviation = "inverted"
[accept]
trailing_bytes = false
[channels]
profile = "0.0.99.1.0.255"
status_column = 1
registers = ["1.0.1.8.0.255"]
[channels.columns]
2 = "1.0.1.8.0.255"
3 = "1.0.2.8.0.255"
"""

INVENTORY = """meter_id,transport,host,port,physical_address,logical_address,client_sap,\
authentication,password,link_id,profile
A,hdlc-tcp,ts,10001,,,,,,bus,acme
B,hdlc-tcp,ts,10001,300,5,40,,,bus,acme
C,tcp,10.0.0.3,,,,,lls,keys/c,,acme
D,tcp,10.0.0.4,,,,,,,,
"""


@pytest.fixture
def profile_dir(tmp_path: Path) -> Path:
    where = tmp_path / "profiles"
    where.mkdir()
    (where / "acme.toml").write_text(ACME)
    return where


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_inventory_profile_fills_blanks_and_explicit_values_win(
    request: pytest.FixtureRequest, tmp_path: Path, profile_dir: Path, backend: str
) -> None:
    path = tmp_path / "m.csv"
    path.write_text(INVENTORY)
    url = tmp_path / "hes.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    with open_database(url) as db:
        import_inventory(db, path, ProfileLibrary([profile_dir]))
        meters = {m.meter_id: m for m in db.meters()}
    got = {
        k: (m.physical_address, m.logical_address, m.client_sap, m.profile)
        for k, m in meters.items()
    }
    assert got == {
        "A": (0x100, 17, 32, "acme"),  # all from the profile
        "B": (300, 5, 40, "acme"),  # the row's own values win
        "C": (None, 17, 2, "acme"),  # lls: the profile's management client
        "D": (None, 1, 16, None),  # no profile: the defaults as before
    }


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ("nope", "m.csv:2: no meter profile 'nope'"),
        ("bad", "m.csv:2: " + "{dir}/bad.toml: hdlc.window_size: expected an integer, got a str"),
        ("../acme", "m.csv:2: profile '../acme' must be 1-64 letters"),
    ],
)
def test_inventory_names_a_missing_or_broken_profile(
    tmp_path: Path, profile_dir: Path, profile: str, message: str
) -> None:
    (profile_dir / "bad.toml").write_text("[hdlc]\nwindow_size = 'two'\n")
    path = tmp_path / "m.csv"
    path.write_text(f"meter_id,transport,host,profile\nA,tcp,10.0.0.1,{profile}\n")
    with open_database(tmp_path / "hes.db") as db:
        with pytest.raises(InventoryError) as info:
            import_inventory(db, path, ProfileLibrary([profile_dir]))
        assert db.meters() == []
    assert message.format(dir=profile_dir) in str(info.value)


# ------------------------------------------------------ selected per meter: the collector


def _record(profile: str | None, transport: str = "hdlc-tcp") -> MeterRecord:
    return MeterRecord(
        "A", transport, "ts", 10001, None, 0x100, 17, 32, "none", "bus", profile=profile
    )


def test_collector_takes_frames_clock_and_channels_from_the_meter_profile(
    tmp_path: Path, profile_dir: Path
) -> None:
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(
        plan_text().replace("[collector]\n", '[collector]\nprofile_dir = "profiles"\n', 1)
    )
    plan = load_plan(plan_path)
    plain = plan.meter_group(_record(None))
    assert plain is not None and plain == plan.groups[0]
    group = plan.meter_group(_record("acme"))
    assert group is not None and group.name == plain.name
    assert group.profile.obis == "0.0.99.1.0.255"
    assert group.profile.channels == {2: "1.0.1.8.0.255", 3: "1.0.2.8.0.255"}
    assert group.profile.status_column == 1 and group.registers == ("1.0.1.8.0.255",)
    assert group.profile.period_s == plain.profile.period_s and group.window == plain.window
    target = target_of(_record("acme"), plan)
    assert (target.max_info_length, target.max_info_rx, target.address_size) == (64, 200, 4)
    assert (target.max_pdu_size, target.client_sap, target.logical_address) == (512, 32, 17)
    assert target_of(_record(None), plan).max_info_length == 128
    assert target.gbt_window == 3
    assert session_options(_record("acme"), plan) == {
        "max_pdu_size": 512,
        "gbt_window": 3,
        "referencing": "ln",
        "accept_trailing": False,
        "inverted_deviation": True,
        "range_deviation": True,
    }
    assert session_options(_record(None), plan) == {}
    with pytest.raises(ValueError, match="no meter profile 'gone'"):
        target_of(_record("gone"), plan)


def test_a_mode_e_profile_on_a_tcp_meter_is_refused() -> None:
    plan = load_plan(None)
    with pytest.raises(ValueError, match="profile 'sim-mode-e' has startup 'iec62056-21'"):
        target_of(_record("sim-mode-e", "tcp"), plan)


def test_plan_profile_dir_must_be_a_directory(tmp_path: Path) -> None:
    text = plan_text()
    text = text.replace("[collector]\n", '[collector]\nprofile_dir = "nowhere"\n', 1)
    path = tmp_path / "plan.toml"
    path.write_text(text)
    with pytest.raises(PlanError, match=r"collector.profile_dir: .*nowhere' is not a directory"):
        load_plan(path)


def test_referencing_is_ln_or_sn() -> None:
    assert parse_profile("[association]\nreferencing = 'sn'\n", "x.toml").referencing == "sn"
    assert parse_profile("", "x.toml").referencing == "ln"
    with pytest.raises(MeterProfileError, match=r"x\.toml: association\.referencing: 'short'"):
        parse_profile("[association]\nreferencing = 'short'\n", "x.toml")
