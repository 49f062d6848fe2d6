"""A meter whose profile range reads only work with bounds of deviation "not specified"
(``--quirk range-without-deviation``): with bounds in UTC it matches nothing, with the meter
profile's ``clock.range_bounds = "unspecified"`` it gives the same rows as a meter without the
quirk — over the TCP wrapper and a real pty, and through ``hes collect`` to the ground truth."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_e2e_read import _Loop, hes
from test_security_collect import stored_vs_truth
from test_sim_quirks import NOW, powered, pty, wrapper
from test_sn_collect import METERS, SEED, collect_quirky_fleet

from collector.meter_profiles import SHIPPED_DIR, MeterProfileError, load_profile, parse_profile
from collector.profile_reader import read_profile
from collector.session import Session
from protocols.cosem import CosemDateTime
from simulator.meter import SimulatedMeter
from simulator.quirks import NO_QUIRKS, Quirks, named
from simulator.server import WrapperServer
from storage.database import open_database

PROFILE = "1.0.99.1.0.255"
QUIRK = Quirks(range_without_deviation=True)


def _hours() -> tuple[datetime, datetime]:
    end = datetime.fromtimestamp(NOW, UTC).replace(minute=0, second=0) - timedelta(hours=1)
    return end - timedelta(hours=3), end


async def _rows(link: Any, range_deviation: bool) -> list[Any]:
    start, end = _hours()
    async with Session(link, range_deviation=range_deviation) as session:
        return (await read_profile(session, PROFILE, start, end)).rows


@pytest.mark.parametrize("bus", [wrapper, pty], ids=["tcp", "pty"])
async def test_bounds_without_a_deviation_read_what_utc_bounds_miss(
    bus: Callable[..., Any],
) -> None:
    plain = powered(NO_QUIRKS)
    async with bus(plain) as transport:
        expected = await _rows(transport(), range_deviation=True)
    assert len(expected) == 13  # 3 hours of 15-minute entries, both bounds included
    quirky = SimulatedMeter(plain.meter_id, plain.seed, quirks=QUIRK)
    async with bus(quirky) as transport:
        assert await _rows(transport(), range_deviation=True) == []
        assert await _rows(transport(), range_deviation=False) == expected


def test_the_shipped_profile_and_the_key() -> None:
    shipped = load_profile(SHIPPED_DIR / "sim-range-without-deviation.toml")
    assert shipped.range_bounds == "unspecified" and not shipped.range_deviation
    assert load_profile(SHIPPED_DIR / "sim-standard.toml").range_deviation
    with pytest.raises(MeterProfileError, match=r"x.toml: clock.range_bounds: 'local': use one"):
        parse_profile('[clock]\nrange_bounds = "local"\n', "x.toml")


def test_the_quirk_looks_only_at_range_bounds() -> None:
    """Bounds of "not specified" deviation pass; a date-time with one does not."""
    utc = CosemDateTime.from_datetime(datetime(2026, 3, 20, 9, tzinfo=UTC))
    assert utc.deviation == 0
    naive = CosemDateTime.from_datetime(datetime(2026, 3, 20, 9))
    assert naive.deviation is None and naive.to_bytes()[9:11] == b"\x80\x00"
    assert named(["range-without-deviation"]) == QUIRK


@pytest.mark.parametrize("profile", ["sim-range-without-deviation", None])
async def test_collect_through_the_profile_reaches_the_ground_truth(
    tmp_path: Path, profile: str | None
) -> None:
    summary, db_path, first, day = await collect_quirky_fleet(tmp_path, QUIRK, profile, "range")
    database = open_database(db_path)
    try:
        if profile is None:  # the meter answers every range, with no entry: nothing stored
            assert summary.stats.intervals_stored == 0
            assert stored_vs_truth(database, first, SEED, day) != []
            return
        assert summary.stats.complete == METERS, summary.incomplete
        for number in range(first, first + METERS):
            assert stored_vs_truth(database, number, SEED, day) == []
    finally:
        database.close()


@pytest.fixture(scope="module")
def quirky_port() -> Iterator[int]:
    """A range-without-deviation meter behind the TCP wrapper, on the host's clock."""
    background = _Loop()
    now = time.time()
    meter = SimulatedMeter(
        next(n for n in range(1, 1000) if SimulatedMeter(n, SEED).online(now)), SEED, quirks=QUIRK
    )
    server = WrapperServer(lambda _ip, _port: meter, "127.0.0.1", 0, clock=time.time)
    background.run(server.start())
    try:
        yield server.port
    finally:
        background.run(server.close())
        background.stop()


def _hes_read(port: int, *args: str) -> dict[str, Any]:
    day = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    result = hes(
        "read", "--tcp", f"127.0.0.1:{port}", "--profile", PROFILE,
        "--from", day.strftime("%Y-%m-%dT%H:%M"),
        "--to", (day + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"), *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (profile,) = json.loads(result.stdout)["profiles"]
    return dict(profile)


def test_hes_read_says_when_bounds_without_a_deviation_would_match(quirky_port: int) -> None:
    empty = _hes_read(quirky_port)
    assert empty["rows"] == []
    assert 'clock.range_bounds is "unspecified"' in empty["empty"], empty["empty"]
    read = _hes_read(quirky_port, "--meter-profile", "sim-range-without-deviation")
    assert len(read["rows"]) == 9 and "empty" not in read
