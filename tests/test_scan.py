"""``hes scan`` end to end: the real CLI against simulated buses of meters (pty, TCP)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from test_e2e_read import _json, _Loop, _quiet_meter, hes

from simulator.bus_server import HdlcBus, HdlcTcpServer, PtyBus

ADDRESSES = (17, 23, 40)


@dataclass
class Buses:
    pty: PtyBus
    pty_bus: HdlcBus
    tcp_port: int
    tcp_bus: HdlcBus
    empty_pty: str


@pytest.fixture(scope="module")
def buses() -> Iterator[Buses]:
    background = _Loop()
    meters = {a: _quiet_meter(k * 10) for k, a in enumerate(ADDRESSES)}
    closers: list[Any] = []

    async def start() -> Buses:
        pty_bus = HdlcBus(meters)
        pty = PtyBus(pty_bus)
        await pty.start()
        tcp_bus = HdlcBus(dict(meters))
        tcp = HdlcTcpServer(tcp_bus, "127.0.0.1", 0)
        await tcp.start()
        empty = PtyBus(HdlcBus({}))
        await empty.start()
        closers.extend([pty.close, tcp.close, empty.close])
        return Buses(pty, pty_bus, tcp.port, tcp_bus, empty.device)

    try:
        yield background.run(start())
    finally:
        for close in closers:
            background.run(close())
        background.stop()


def _check_found(out: dict[str, Any], tried: int) -> None:
    assert out["addresses"]["tried"] == tried
    assert [a["physical_address"] for a in out["answered"]] == list(ADDRESSES)
    for answer in out["answered"]:
        assert answer["answer"] == "UA" and answer["logical_address"] == 1
        assert answer["disconnected"] is True and "late" not in answer
        assert answer["ua_parameters"] == {
            "max_info_tx": 128, "max_info_rx": 128, "window_tx": 1, "window_rx": 1,
        }  # fmt: skip
    assert out["link"]["frames_bad"] == out["link"]["noise_bytes"] == 0


def test_scan_finds_the_three_meters_of_a_pty_bus(buses: Buses) -> None:
    result = hes("scan", "--serial", buses.pty.device, "--from", "16", "--to", "45",
                 "--timeout", "0.1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = _json(result)
    _check_found(out, 30)
    assert out["transport"] == f"serial://{buses.pty.device}@9600"
    assert buses.pty_bus.open_links == 0  # every UA was followed by DISC
    # The meters are free for a read at once.
    read = hes("read", "--serial", buses.pty.device, "--physical-address", "23")
    assert read.returncode == 0, read.stderr


def test_scan_over_a_terminal_server(buses: Buses) -> None:
    result = hes("scan", "--hdlc-tcp", f"127.0.0.1:{buses.tcp_port}", "--from", "17",
                 "--to", "40", "--timeout", "0.1", "--trace")  # fmt: skip
    assert result.returncode == 0, result.stderr
    _check_found(_json(result), 24)
    assert buses.tcp_bus.open_links == 0
    trace = result.stderr.splitlines()
    assert trace[0].endswith("| HDLC SNRM to 1/17 from 16 P/F")
    assert trace[1].split("| ")[1].startswith("HDLC UA to 16 from 1/17")
    assert trace[2].endswith("| HDLC DISC to 1/17 from 16 P/F")
    assert sum("SNRM" in line for line in trace) == 24


def test_scan_of_a_silent_bus_exits_1_and_says_nothing_arrived(buses: Buses) -> None:
    result = hes("scan", "--serial", buses.empty_pty, "--from", "16", "--to", "18",
                 "--timeout", "0.05")  # fmt: skip
    assert result.returncode == 1
    out = _json(result)
    assert out["answered"] == [] and out["error"] == "no_answer"
    assert out["diagnosis"] == "nothing_arrived" and out["addresses"]["tried"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of --hdlc-tcp, --serial"),
        (["--serial", "/dev/null", "--from", "50", "--to", "20"], "give 0 <= FROM <= TO <= 16381"),
        (["--serial", "/dev/null", "--to", "200", "--address-size", "2"], "TO <= 125"),
        (["--serial", "/dev/null", "--from", "0", "--to", "5000"], "at most 2000 addresses"),
        (["--serial", "/dev/null", "--timeout", "0"], "--timeout 0: give seconds above 0"),
        (["--hdlc-tcp", "127.0.0.1"], "give HOST:PORT"),
        (["--serial", "/dev/null", "--address-size", "3"], "--address-size 3: use 0, 2 or 4"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    result = hes("scan", *args)
    assert result.returncode == 2
    assert message in result.stderr and message in _json(result)["detail"]
