"""A timed-out ``hes read`` over HDLC says why: the real CLI against buses on real ptys.

Each bus is wrong in one way a bench meets: no meter at all, a meter answering at another
baud rate (``PtyBus(answer_baudrate=...)``, bits resampled as a UART would), a meter that
answers from another physical address, a terminal server whose line carries only noise.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_e2e_read import ROOT, _json, _Loop, _quiet_meter, hes

from collector.link_stats import LinkStats, diagnose
from protocols.hdlc import FrameDecoder, FrameKind, HdlcAddress, HdlcFrame
from simulator.bus_server import HdlcBus, PtyBus
from simulator.meter import SimulatedMeter
from simulator.server import corrupt_hdlc
from simulator.uart import resample

PHYSICAL = 17
FAST = ["--frame-timeout", "0.2", "--retries", "1", "--timeout", "2"]
#: What the noisy line answers: bytes of no frame, and a UA whose FCS is damaged.
NOISE = bytes.fromhex("f8 00 80 f8 00 00 98 00 f8 fe 80 00") + corrupt_hdlc(
    HdlcFrame(FrameKind.UA, HdlcAddress(16), HdlcAddress(1, 17)).encode()
)


@pytest.fixture(scope="module")
def background() -> Iterator[_Loop]:
    loop = _Loop()
    try:
        yield loop
    finally:
        loop.stop()


@pytest.fixture
def pty_bus(background: _Loop) -> Iterator[Any]:
    """Start a PtyBus on the background loop: ``pty_bus(meters, **options)`` -> device."""
    started: list[PtyBus] = []

    def start(meters: dict[int, Any], answer_any_address: int | None = None, **options: Any) -> str:
        async def go() -> PtyBus:
            bus = PtyBus(HdlcBus(meters, answer_any_address=answer_any_address), **options)
            await bus.start()
            return bus

        bus = background.run(go())
        started.append(bus)
        return bus.device

    yield start
    for bus in started:
        background.run(bus.close())


def _timeout(result: Any) -> dict[str, Any]:
    assert result.returncode == 1, result.stderr
    out = _json(result)
    assert out["error"] == "timeout", out
    return out


def test_no_meter_on_the_bus_is_nothing_arrived(pty_bus: Any) -> None:
    device = pty_bus({})
    out = _timeout(hes("read", "--serial", device, "--physical-address", "17", *FAST))
    assert out["diagnosis"] == "nothing_arrived"
    assert "no byte came back" in out["hint"] and "hes scan" in out["hint"]
    assert "no byte came back" in out["detail"]
    link = out["link"]
    assert link["bytes_rx"] == 0 and link["bytes_tx"] > 0 and link["retransmissions"] == 1


def test_meter_at_another_baud_rate_is_no_valid_frame(pty_bus: Any) -> None:
    device = pty_bus({PHYSICAL: _quiet_meter(0)}, answer_baudrate=19200)
    out = _timeout(
        hes("read", "--serial", device, "--baud", "9600", "--physical-address", "17", *FAST)
    )
    assert out["diagnosis"] == "no_valid_frame"
    assert "check the baud rate and the parity" in out["hint"]
    link = out["link"]
    assert link["bytes_rx"] > 0 and link["frames_rx"] == 0
    assert link["noise_bytes"] == link["bytes_rx"]


def test_same_bus_at_the_meters_rate_reads(pty_bus: Any) -> None:
    """The control: the same bus read at the rate the meter answers at works."""
    device = pty_bus({PHYSICAL: _quiet_meter(0)}, answer_baudrate=19200)
    result = hes("read", "--serial", device, "--baud", "19200", "--physical-address", "17")
    assert result.returncode == 0, result.stderr
    link = _json(result)["link"]
    assert link["noise_bytes"] == 0 and link["frames_bad"] == 0
    assert link["frames_from_meter"] == link["frames_rx"] > 0


def test_meter_at_another_physical_address_says_which_answered(pty_bus: Any) -> None:
    device = pty_bus({PHYSICAL: _quiet_meter(0)}, answer_any_address=PHYSICAL)
    out = _timeout(hes("read", "--serial", device, "--physical-address", "20", *FAST))
    assert out["diagnosis"] == "other_address"
    assert out["answered"] == {"logical_address": 1, "physical_address": PHYSICAL}
    assert "try --physical-address 17" in out["hint"]
    link = out["link"]
    assert link["frames_other_address"] >= 1 and link["frames_from_meter"] == 0
    assert link["other_address"] == out["answered"]


@pytest.fixture(scope="module")
def noisy_port(background: _Loop) -> Iterator[int]:
    """A terminal-server port whose line answers every request with noise."""

    async def noisy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            writer.write(NOISE)
            await writer.drain()
        writer.close()

    async def start() -> asyncio.Server:
        return await asyncio.start_server(noisy, "127.0.0.1", 0)

    server = background.run(start())
    try:
        yield server.sockets[0].getsockname()[1]
    finally:

        async def stop() -> None:
            server.close()

        background.run(stop())


def test_noise_over_hdlc_tcp_is_no_valid_frame(noisy_port: int) -> None:
    out = _timeout(
        hes("read", "--hdlc-tcp", f"127.0.0.1:{noisy_port}", "--physical-address", "17", *FAST)
    )
    assert out["diagnosis"] == "no_valid_frame"
    assert "2 failed their checksum" in out["hint"]
    link = out["link"]
    assert link["bytes_rx"] == 2 * len(NOISE)  # to the SNRM, then to its retransmission
    assert link["noise_bytes"] == link["bytes_rx"] - 1  # the last flag may yet open a frame
    assert link["frames_bad"] == 2 and link["frames_rx"] == 0


# ------------------------------------------------------------------- the parts, sans-IO


def _ua() -> bytes:
    return HdlcFrame(FrameKind.UA, HdlcAddress(16), HdlcAddress(1, 17)).encode()


def test_decoder_counts_noise_but_not_a_shared_closing_flag() -> None:
    decoder = FrameDecoder()
    ua = _ua()
    # Two frames sharing a flag, then one with flags of its own: the extra flag is no noise.
    items = decoder.feed_raw(b"\x01\x02" + ua + ua[1:] + ua + b"\x33")
    assert [(f.kind if f else None, raw) for f, raw in items] == [
        (None, b"\x01\x02"),
        (FrameKind.UA, ua),
        (FrameKind.UA, ua),
        (FrameKind.UA, ua),
        (None, b"\x33"),
    ]
    assert decoder.discarded_bytes == 3
    bad = bytearray(ua)
    bad[-2] ^= 1
    assert decoder.feed_raw(bytes(bad)) == [(None, bytes(bad[:-1]))]
    assert decoder.dropped_frames == 1


def test_diagnosis_order() -> None:
    meter = HdlcAddress(1, 17)
    stats = LinkStats()
    assert diagnose(stats, meter).code == "nothing_arrived"
    stats.bytes_rx = stats.noise_bytes = 40
    assert diagnose(stats, meter).code == "no_valid_frame"
    stats.frames_rx = 2
    assert diagnose(stats, meter).code == "frames_for_other_stations"
    stats.frames_from_meter = 1
    assert diagnose(stats, meter).code == "answer_incomplete"
    stats.frames_other_address, stats.other_address = 1, HdlcAddress(1, 33)
    found = diagnose(stats, meter)
    assert found.code == "other_address" and found.answered == HdlcAddress(1, 33)


def test_uart_resampling() -> None:
    frame = _ua()
    assert resample(frame, 9600, 9650) == frame  # within a UART's tolerance
    garbled = resample(frame, 19200, 9600)
    assert garbled and FrameDecoder().feed(garbled) == []
    assert resample(frame, 9600, 19200) != frame


def test_hes_simulate_answer_baud_gives_a_bench_the_wrong_rate() -> None:
    """``hes simulate --pty --answer-baud 19200``: a read at 9600 sees noise, at 19200 reads."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "simulate", "--pty", "--buses", "1", "--meters-per-bus",
         "4", "--baud", "0", "--answer-baud", "19200", "--duration", "60", "--seed", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        (bus,) = json.loads(proc.stdout.readline())["buses"]
        assert bus["answer_baud"] == 19200
        # Meter n of the fleet is at physical address 15 + n; one not in a simulated outage.
        number = next(n for n in range(1, 5) if SimulatedMeter(n, 1).online(time.time()))
        address = str(15 + number)
        wrong = _timeout(
            hes("read", "--serial", bus["device"], "--physical-address", address, *FAST)
        )
        assert wrong["diagnosis"] == "no_valid_frame"
        right = hes(
            "read", "--serial", bus["device"], "--baud", "19200", "--physical-address", address
        )
        assert right.returncode == 0, right.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


def test_answer_baud_needs_pty_buses() -> None:
    result = hes("simulate", "--buses", "1", "--meters-per-bus", "1", "--answer-baud", "19200")
    assert result.returncode != 0
    assert "--answer-baud needs --pty" in result.stderr
