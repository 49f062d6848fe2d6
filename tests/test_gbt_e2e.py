"""``hes read`` of a load profile in general block transfer and with HDLC windows above 1:
the real CLI in a subprocess against simulated meters, over TCP and over a pty, values
compared with the simulator's ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from test_e2e_read import (
    PHYSICAL,
    SEED,
    _check_read,
    _clock,
    _json,
    _Loop,
    _quiet_meter,
    _read_args,
    _window,
    hes,
)

from protocols.hdlc_link import HdlcSettings
from simulator import model
from simulator.bus_server import HdlcBus, HdlcTcpServer, PtyBus
from simulator.meter import SimulatedMeter
from simulator.quirks import Quirks
from simulator.server import ServerStats, WrapperServer

#: The client PDU that makes the 4-hour profile range come in several GBT blocks.
SMALL_PDU = "128"


@dataclass
class GbtSims:
    tcp_port: int
    tcp_meter: SimulatedMeter
    plain_port: int
    plain_meter: SimulatedMeter
    pty_device: str
    pty_meter: SimulatedMeter
    pty_stats: ServerStats
    hdlc_port: int
    hdlc_meter: SimulatedMeter
    hdlc_stats: ServerStats
    bus_gbt_meter: SimulatedMeter


@pytest.fixture(scope="module")
def sims() -> Iterator[GbtSims]:
    background = _Loop()
    first = _quiet_meter(40)
    tcp_meter = SimulatedMeter(first.meter_id, SEED, quirks=Quirks(gbt_window=4))
    plain_meter = _quiet_meter(tcp_meter.meter_id + 1)
    pty_id = _quiet_meter(plain_meter.meter_id + 1).meter_id
    pty_meter = SimulatedMeter(pty_id, SEED, quirks=Quirks(gbt_window=2))
    hdlc_meter = _quiet_meter(pty_id + 1)
    bus_gbt_id = _quiet_meter(hdlc_meter.meter_id + 1).meter_id
    bus_gbt_meter = SimulatedMeter(bus_gbt_id, SEED, quirks=Quirks(gbt_window=2))
    windows = HdlcSettings(window_tx=7, window_rx=7)
    closers: list[Any] = []

    async def start() -> GbtSims:
        wrapper = WrapperServer(lambda ip, port: tcp_meter, "127.0.0.1", 0, clock=_clock)
        plain = WrapperServer(lambda ip, port: plain_meter, "127.0.0.1", 0, clock=_clock)
        pty_bus = HdlcBus({PHYSICAL: pty_meter}, windows)
        pty = PtyBus(pty_bus, clock=_clock)
        hdlc_bus = HdlcBus({PHYSICAL: hdlc_meter, PHYSICAL + 1: bus_gbt_meter}, windows)
        hdlc = HdlcTcpServer(hdlc_bus, "127.0.0.1", 0, clock=_clock)
        for server in (wrapper, plain, pty, hdlc):
            await server.start()
            closers.append(server.close)
        return GbtSims(
            wrapper.port,
            tcp_meter,
            plain.port,
            plain_meter,
            pty.device,
            pty_meter,
            pty_bus.stats,
            hdlc.port,
            hdlc_meter,
            hdlc_bus.stats,
            bus_gbt_meter,
        )

    try:
        yield background.run(start())
    finally:
        for close in closers:
            background.run(close())
        background.stop()


def _read(*args: str) -> dict[str, Any]:
    result = hes("read", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return _json(result)


def _tcp(sims: GbtSims, *args: str) -> dict[str, Any]:
    meter = sims.tcp_meter
    return _read("--tcp", f"127.0.0.1:{sims.tcp_port}", *args, *_read_args(meter))


@pytest.mark.parametrize("window", ["1", "5"])
def test_read_in_gbt_over_tcp(sims: GbtSims, window: str) -> None:
    out = _tcp(sims, "--gbt-window", window, "--max-pdu-size", SMALL_PDU)
    negotiated = out["negotiated"]
    assert negotiated["general_block_transfer"] is True
    assert negotiated["gbt_window"] == int(window)
    _check_read(out, sims.tcp_meter, *_window(sims.tcp_meter))


def test_a_wider_gbt_window_takes_fewer_round_trips(sims: GbtSims) -> None:
    one = _tcp(sims, "--gbt-window", "1", "--max-pdu-size", SMALL_PDU)
    five = _tcp(sims, "--gbt-window", "5", "--max-pdu-size", SMALL_PDU)
    assert one["profiles"] == five["profiles"]
    # The profile range is ~9 blocks: one acknowledgement per block, or one per window.
    assert five["link"]["round_trips"] + 5 <= one["link"]["round_trips"]


def test_gbt_proposed_to_a_meter_without_it_falls_back_to_get_blocks(sims: GbtSims) -> None:
    meter = sims.plain_meter
    out = _read(
        "--tcp", f"127.0.0.1:{sims.plain_port}", "--gbt-window", "3",
        "--max-pdu-size", SMALL_PDU, *_read_args(meter),
    )  # fmt: skip
    assert out["negotiated"]["general_block_transfer"] is False
    _check_read(out, meter, *_window(meter))


@pytest.mark.parametrize("gbt_window", ["1", "3"])
def test_read_in_gbt_over_a_pty_with_hdlc_windows_and_segments(
    sims: GbtSims, gbt_window: str
) -> None:
    """GBT window 1 or 3 to a meter that takes 2, HDLC window 4 of 32-byte segments."""
    meter = sims.pty_meter
    before = sims.pty_stats.segments_rx
    out = _read(
        "--serial", sims.pty_device, "--physical-address", str(PHYSICAL),
        "--gbt-window", gbt_window, "--window", "4", "--max-info-field", "32",
        "--max-pdu-size", SMALL_PDU, *_read_args(meter),
    )  # fmt: skip
    negotiated = out["negotiated"]
    assert negotiated["general_block_transfer"] is True
    assert (negotiated["window_tx"], negotiated["window_rx"]) == (4, 4)
    assert negotiated["max_info_tx"] == negotiated["max_info_rx"] == 32
    assert sims.pty_stats.segments_rx > before
    _check_read(out, meter, *_window(meter))


def test_hdlc_window_above_one_takes_fewer_round_trips(sims: GbtSims) -> None:
    """32-byte segments: window 1 waits for an RR after each, window 7 after every seventh."""
    meter = sims.hdlc_meter
    args = [
        "--hdlc-tcp", f"127.0.0.1:{sims.hdlc_port}", "--physical-address", str(PHYSICAL),
        "--max-info-field", "32", *_read_args(meter),
    ]  # fmt: skip
    one = _read(*args, "--window", "1")
    seven = _read(*args, "--window", "7")
    assert (one["negotiated"]["window_tx"], seven["negotiated"]["window_tx"]) == (1, 7)
    assert seven["negotiated"]["window_rx"] == 7
    assert one["profiles"] == seven["profiles"]
    _check_read(seven, meter, *_window(meter))
    assert seven["link"]["round_trips"] * 2 < one["link"]["round_trips"]


def test_the_shipped_gbt_profile_reads_its_channels(sims: GbtSims) -> None:
    """``--meter-profile sim-gbt``: GBT window 4 and HDLC window 7 without any option."""
    meter = sims.bus_gbt_meter
    out = _read(
        "--hdlc-tcp", f"127.0.0.1:{sims.hdlc_port}", "--physical-address", str(PHYSICAL + 1),
        "--meter-profile", "sim-gbt", "--timeout", "5",
    )  # fmt: skip
    negotiated = out["negotiated"]
    assert negotiated["general_block_transfer"] is True and negotiated["gbt_window"] == 4
    assert negotiated["window_tx"] == 7 and negotiated["client_max_pdu_size"] == 1024
    (profile,) = out["profiles"]
    start = datetime.fromisoformat(profile["range"]["from"]).timestamp()
    end = datetime.fromisoformat(profile["range"]["to"]).timestamp()
    rows = [
        (int(datetime.fromisoformat(r["timestamp"]).timestamp()), *r["raw"][1:])
        for r in profile["rows"]
    ]
    assert rows == model.ground_truth(meter.meter_id, SEED, start, end + 1).load_profile
    assert len(rows) >= 96  # the last day (a meter without outages)


def test_gbt_windows_over_hdlc_windows_repeat_nothing(sims: GbtSims) -> None:
    """GBT window 6 in HDLC windows of 7: the meter's blocks share HDLC windows and the
    client polls once per transmission, so not one frame comes twice (same bytes received
    as in GBT window 1) and the round trips drop."""
    meter = sims.bus_gbt_meter
    args = [
        "--hdlc-tcp", f"127.0.0.1:{sims.hdlc_port}", "--physical-address", str(PHYSICAL + 1),
        "--max-info-field", "64", "--window", "7", "--max-pdu-size", SMALL_PDU,
        *_read_args(meter),
    ]  # fmt: skip
    one = _read(*args, "--gbt-window", "1")
    six = _read(*args, "--gbt-window", "6")
    _check_read(six, meter, *_window(meter))
    assert one["profiles"] == six["profiles"]
    assert six["negotiated"]["general_block_transfer"] is True
    assert six["link"]["bytes_rx"] == one["link"]["bytes_rx"]
    assert six["link"]["round_trips"] < one["link"]["round_trips"]
