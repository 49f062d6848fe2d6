"""``hes read`` end to end: the real CLI in a subprocess against simulator servers in this process.

The servers (TCP wrapper, HDLC terminal server, HDLC on a pty) run on their own event loop in a
background thread with a frozen clock, so the JSON the CLI prints is compared with the
simulator's ground truth value for value. Error paths check the exit code and the error class.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from simulator import model
from simulator.bus_server import HdlcBus, HdlcTcpServer, PtyBus
from simulator.meter import SimulatedMeter
from simulator.quirks import Quirks
from simulator.server import ServerStats, WrapperServer

ROOT = Path(__file__).resolve().parents[1]
SEED = 5
NOW = 1772409600 + 10 * model.DAY + 13 * 3600 + 17.5
PHYSICAL = 17
A_PLUS = "1.0.1.8.0.255"
VOLTAGE_L1 = "1.0.32.7.0.255"
UNKNOWN = "1.0.99.99.99.255"
LOAD_PROFILE = "1.0.99.1.0.255"
#: The load profile's columns as hes read names them: (name, unit, scaler).
COLUMNS = [
    ("clock", None, None),
    ("status", None, None),
    ("active energy import (+A)", "Wh", 0),
    ("active energy export (-A)", "Wh", 0),
    ("reactive energy import (+R)", "varh", 0),
    ("reactive energy export (-R)", "varh", 0),
]
#: Generous bound on one CLI run, so a hang fails instead of stalling the suite.
RUN_TIMEOUT_S = 60

T = TypeVar("T")


def _clock() -> float:
    return NOW


def _quiet_meter(start_id: int) -> SimulatedMeter:
    """A three-phase meter with no outage in the last week: its profile days are complete."""
    today = (int(NOW) - model.EPOCH) // model.DAY
    meter_id = start_id
    while True:
        spec = model.meter_spec(meter_id, SEED)
        if spec.phases == 3 and all(model.outage(spec, today - k) is None for k in range(8)):
            return SimulatedMeter(meter_id, SEED)
        meter_id += 1


@dataclass
class Simulators:
    """Endpoints the CLI can reach, each with the meter behind it."""

    tcp_port: int
    tcp_meter: SimulatedMeter
    hdlc_port: int
    hdlc_meter: SimulatedMeter
    pty_device: str
    pty_meter: SimulatedMeter
    silent_port: int
    pty_stats: ServerStats
    sn_port: int
    sn_meter: SimulatedMeter
    sn_pty_device: str
    sn_pty_meter: SimulatedMeter


class _Loop:
    """An event loop in a daemon thread, for servers that must outlive one test's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def sims() -> Iterator[Simulators]:
    background = _Loop()
    tcp_meter = _quiet_meter(0)
    hdlc_meter = _quiet_meter(tcp_meter.meter_id + 1)
    pty_meter = _quiet_meter(hdlc_meter.meter_id + 1)
    sn = Quirks(short_names=True)
    sn_meter = SimulatedMeter(_quiet_meter(pty_meter.meter_id + 1).meter_id, SEED, quirks=sn)
    sn_pty_meter = SimulatedMeter(_quiet_meter(sn_meter.meter_id + 1).meter_id, SEED, quirks=sn)
    closers: list[Any] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            pass
        writer.close()

    async def start() -> Simulators:
        wrapper = WrapperServer(lambda ip, port: tcp_meter, "127.0.0.1", 0, clock=_clock)
        await wrapper.start()
        bus = HdlcBus({PHYSICAL: hdlc_meter, PHYSICAL + 1: _quiet_meter(500)})
        hdlc = HdlcTcpServer(bus, "127.0.0.1", 0, clock=_clock)
        await hdlc.start()
        pty_bus = HdlcBus({PHYSICAL: pty_meter})
        pty = PtyBus(pty_bus, clock=_clock)
        await pty.start()
        dead = await asyncio.start_server(silent, "127.0.0.1", 0)
        sn_wrapper = WrapperServer(lambda ip, port: sn_meter, "127.0.0.1", 0, clock=_clock)
        await sn_wrapper.start()
        sn_pty = PtyBus(HdlcBus({PHYSICAL: sn_pty_meter}), clock=_clock)
        await sn_pty.start()
        closers.extend([wrapper.close, hdlc.close, pty.close, sn_wrapper.close, sn_pty.close])
        closers.append(lambda: _close_server(dead))
        return Simulators(
            wrapper.port,
            tcp_meter,
            hdlc.port,
            hdlc_meter,
            pty.device,
            pty_meter,
            dead.sockets[0].getsockname()[1],
            pty_bus.stats,
            sn_wrapper.port,
            sn_meter,
            sn_pty.device,
            sn_pty_meter,
        )

    try:
        yield background.run(start())
    finally:
        for close in closers:
            background.run(close())
        background.stop()


async def _close_server(server: asyncio.Server) -> None:
    server.close()


def hes(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cli`` from the repository root, as a user would run ``hes``."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _window(meter: SimulatedMeter) -> tuple[int, int]:
    """Four hours of yesterday, meter time."""
    day = int(meter.meter_time(NOW)) // model.DAY - 1
    start = day * model.DAY + 10 * 3600
    return start, start + 4 * 3600


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M")


def _check_read(out: dict[str, Any], meter: SimulatedMeter, start: int, end: int) -> None:
    mt = meter.meter_time(NOW)
    clock = out["clock"]
    assert datetime.fromisoformat(clock["datetime"]).timestamp() == pytest.approx(mt, abs=0.011)
    # The simulator's clock is frozen at NOW, months from the host's: the error says by how much.
    host = datetime.fromisoformat(clock["host_time"]).timestamp()
    assert clock["error_s"] == pytest.approx(mt - host, abs=0.01)
    assert abs(host - time.time()) < RUN_TIMEOUT_S
    assert (clock["deviation"], clock["clock_status"], clock["invalid"]) == (0, 0, False)
    now = model.registers(meter.spec, mt)
    a_plus, volts, unknown = out["registers"]
    assert a_plus == {
        "obis": A_PLUS,
        "value": now.active_import,
        "unit": "Wh",
        "raw": now.active_import,
        "scaler": 0,
    }
    inst = model.instantaneous(meter.spec, mt)
    assert volts["unit"] == "V" and volts["scaler"] == -1 and volts["raw"] == inst.voltage_dv[0]
    assert volts["value"] == pytest.approx(inst.voltage_dv[0] / 10)
    assert unknown["obis"] == UNKNOWN and unknown["error"] == "object_undefined"
    (profile,) = out["profiles"]
    assert profile["obis"] == LOAD_PROFILE and profile["capture_period"] == 900
    assert profile["name"] == "load profile 1"
    assert profile["range"] == {
        "from": datetime.fromtimestamp(start, UTC).isoformat(),
        "to": datetime.fromtimestamp(end, UTC).isoformat(),
    }  # both ends given: no default, no note
    assert [(c["name"], c["unit"], c["scaler"]) for c in profile["columns"]] == COLUMNS
    assert all(r["raw"] == r["values"] for r in profile["rows"])  # scaler 0: the same
    rows = [
        (int(datetime.fromisoformat(r["timestamp"]).timestamp()), *r["values"][1:])
        for r in profile["rows"]
    ]
    assert rows == model.ground_truth(meter.meter_id, SEED, start, end + 1).load_profile
    assert len(rows) == 17
    assert all(r["values"][0] == r["timestamp"] for r in profile["rows"])
    link = out["link"]
    assert link["bytes_tx"] > 0 and link["bytes_rx"] > link["bytes_tx"]
    assert link["round_trips"] >= 6 and link["retransmissions"] == 0


def _read_args(meter: SimulatedMeter) -> list[str]:
    start, end = _window(meter)
    return [
        "--obis", A_PLUS, "--obis", VOLTAGE_L1, "--obis", UNKNOWN,
        "--profile", LOAD_PROFILE, "--from", _iso(start), "--to", _iso(end),
        "--timeout", "5",
    ]  # fmt: skip


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        out: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"not JSON (rc {result.returncode}): {result.stdout!r} {result.stderr!r}")
    return out


# ---------------------------------------------------------------------------------- reads


def test_read_over_tcp_wrapper(sims: Simulators) -> None:
    result = hes("read", "--tcp", f"127.0.0.1:{sims.tcp_port}", *_read_args(sims.tcp_meter))
    assert result.returncode == 0, result.stderr
    out = _json(result)
    assert out["link"]["transport"] == f"tcp://127.0.0.1:{sims.tcp_port}"
    _check_read(out, sims.tcp_meter, *_window(sims.tcp_meter))


def test_read_over_hdlc_tcp_as_management_client(sims: Simulators) -> None:
    meter = sims.hdlc_meter
    result = hes(
        "read", "--hdlc-tcp", f"127.0.0.1:{sims.hdlc_port}", "--physical-address", str(PHYSICAL),
        "--client-sap", "1", "--auth", "lls", *_read_args(meter),
        env={"HES_PASSWORD": meter.spec.password.decode()},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = _json(result)
    assert out["link"]["transport"] == f"hdlc-tcp://127.0.0.1:{sims.hdlc_port}"
    _check_read(out, meter, *_window(meter))


def test_read_over_serial_pty(sims: Simulators) -> None:
    meter = sims.pty_meter
    result = hes(
        "read", "--serial", sims.pty_device, "--baud", "9600",
        "--physical-address", str(PHYSICAL), *_read_args(meter),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = _json(result)
    assert out["link"]["transport"] == f"serial://{sims.pty_device}@9600"
    _check_read(out, meter, *_window(meter))


def test_read_short_names_over_tcp_wrapper(sims: Simulators) -> None:
    """An SN meter: clock, registers and a profile range by Read, values as the model's."""
    meter = sims.sn_meter
    result = hes(
        "read", "--tcp", f"127.0.0.1:{sims.sn_port}", "--referencing", "sn", *_read_args(meter)
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = _json(result)
    assert out["negotiated"]["referencing"] == "sn" and out["negotiated"]["sn_objects"] > 20
    _check_read(out, meter, *_window(meter))
    (_, _, unknown) = out["registers"]
    assert "not in the meter's SN object list" in unknown["detail"]


def test_read_short_names_from_the_shipped_meter_profile(sims: Simulators) -> None:
    """``--meter-profile sim-short-names`` reads by short names without ``--referencing``."""
    meter = sims.sn_meter
    result = hes(
        "read", "--tcp", f"127.0.0.1:{sims.sn_port}", "--meter-profile", "sim-short-names",
        *_read_args(meter),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = _json(result)
    assert out["negotiated"]["referencing"] == "sn"
    _check_read(out, meter, *_window(meter))


def test_read_short_names_over_serial_pty_in_blocks(sims: Simulators) -> None:
    """A 128-byte PDU: the object_list and the profile range come in read data blocks."""
    meter = sims.sn_pty_meter
    result = hes(
        "read", "--serial", sims.sn_pty_device, "--physical-address", str(PHYSICAL),
        "--referencing", "sn", "--max-pdu-size", "128", *_read_args(meter),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = _json(result)
    _check_read(out, meter, *_window(meter))
    assert out["link"]["round_trips"] > 20


def test_ln_read_of_an_sn_meter_is_refused_and_says_so(sims: Simulators) -> None:
    result = hes("read", "--tcp", f"127.0.0.1:{sims.sn_port}", "--timeout", "5")
    assert result.returncode == 1
    out = _json(result)
    assert out["error"] == "association_refused" and "diagnostic 2" in out["detail"]


def test_small_max_info_field_segments_frames_the_meter_accepts(sims: Simulators) -> None:
    """32-byte information fields: the AARQ and the profile GET go out in segments."""
    meter = sims.pty_meter
    before = sims.pty_stats.segments_rx
    result = hes(
        "read", "--serial", sims.pty_device, "--physical-address", str(PHYSICAL),
        "--max-info-field", "32", *_read_args(meter),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = _json(result)
    assert out["negotiated"]["max_info_tx"] == out["negotiated"]["max_info_rx"] == 32
    assert sims.pty_stats.segments_rx > before
    _check_read(out, meter, *_window(meter))


def test_small_pdu_size_makes_the_meter_answer_in_blocks(sims: Simulators) -> None:
    address = f"127.0.0.1:{sims.tcp_port}"
    plain = _json(hes("read", "--tcp", address, *_read_args(sims.tcp_meter)))
    result = hes("read", "--tcp", address, "--max-pdu-size", "64", *_read_args(sims.tcp_meter))
    assert result.returncode == 0, result.stderr
    out = _json(result)
    assert out["negotiated"]["client_max_pdu_size"] == 64
    assert plain["negotiated"]["client_max_pdu_size"] == 65535
    # The same values, but the profile came in 64-byte GET blocks: many more round trips.
    assert out["link"]["round_trips"] > plain["link"]["round_trips"] + 10
    _check_read(out, sims.tcp_meter, *_window(sims.tcp_meter))


# ---------------------------------------------------------------------------------- errors


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("option", ["--tcp", "--hdlc-tcp"])
def test_unreachable_port_is_a_link_error(option: str) -> None:
    port = _free_port()
    result = hes("read", option, f"127.0.0.1:{port}", "--obis", A_PLUS)
    assert result.returncode == 1
    out = _json(result)
    assert out["error"] == "link" and str(port) in out["detail"]


def test_silent_meter_is_a_timeout(sims: Simulators) -> None:
    result = hes(
        "read", "--hdlc-tcp", f"127.0.0.1:{sims.silent_port}", "--physical-address", "17",
        "--frame-timeout", "0.1", "--retries", "1",
    )  # fmt: skip
    assert result.returncode == 1
    out = _json(result)
    assert out["error"] == "timeout"
    assert out["diagnosis"] == "nothing_arrived" and out["link"]["bytes_rx"] == 0


def test_wrong_password_is_authentication_failed(sims: Simulators) -> None:
    result = hes(
        "read", "--hdlc-tcp", f"127.0.0.1:{sims.hdlc_port}", "--physical-address", "17",
        "--client-sap", "1", "--auth", "lls", "--password", "not-it!!",
    )  # fmt: skip
    assert result.returncode == 1
    out = _json(result)
    assert out["error"] == "authentication_failed" and "diagnostic 13" in out["detail"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of --tcp, --hdlc-tcp, --serial"),
        (["--tcp", "127.0.0.1:4059", "--serial", "/dev/ttyUSB0"], "give exactly one of"),
        (["--tcp", "127.0.0.1:http"], "port 'http' is not a number"),
        (["--tcp", "127.0.0.1:4059", "--from", "yesterday"], "--from: 'yesterday' is not an ISO"),
        (["--tcp", "127.0.0.1:4059", "--auth", "hls"], "--auth 'hls': use none, lls or hls-gmac"),
        (["--tcp", "127.0.0.1:4059", "--max-pdu-size", "11"], "--max-pdu-size 11: give 12..65535"),
        (["--tcp", "127.0.0.1:4059", "--max-pdu-size", "70000"], "--max-pdu-size 70000: give"),
        (["--tcp", "127.0.0.1:4059", "--max-info-field", "64"], "--max-info-field is an HDLC"),
        (["--serial", "/dev/null", "--max-info-field", "0"], "--max-info-field 0: give 1..2030"),
        (["--hdlc-tcp", "h:1", "--max-info-field", "2031"], "--max-info-field 2031: give"),
        # From the list: a missing password, a malformed OBIS code, a port without
        # a host; each was a Python traceback before.
        (["--tcp", "127.0.0.1:4059", "--auth", "lls"], "--auth lls needs the meter's password"),
        (["--tcp", "127.0.0.1:4059", "--obis", "1.2.3"], "--obis '1.2.3': not an OBIS code"),
        (["--tcp", "127.0.0.1:4059", "--obis", "1.0.1.8.0.256"], "OBIS group above 255"),
        (["--tcp", "127.0.0.1:4059", "--profile", "load"], "--profile 'load': not an OBIS"),
        (["--tcp", ":4059"], "--tcp ':4059': missing host"),
        (["--hdlc-tcp", "127.0.0.1"], "--hdlc-tcp '127.0.0.1': give HOST:PORT"),
        (["--serial", "/dev/null", "--baud", "-5"], "--baud -5: give a baud rate above 0"),
        (["--tcp", "127.0.0.1:4059", "--referencing", "x"], "--referencing 'x': use ln or sn"),
        (["--tcp", "127.0.0.1:4059", "--window", "2"], "--window is an HDLC setting"),
        (["--serial", "/dev/null", "--window", "8"], "--window 8: give 1..7"),
        (["--tcp", "127.0.0.1:4059", "--gbt-window", "64"], "--gbt-window 64: give 0 (no GBT)"),
        (
            ["--tcp", "127.0.0.1:4059", "--referencing", "sn", "--gbt-window", "2"],
            "general-block-transfer is for LN referencing",
        ),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = hes("read", *args, env={"HES_PASSWORD": ""})
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    out = _json(result)
    assert out["error"] == "usage" and message in out["detail"]


# ---------------------------------------------------------------------------------- trace


def test_trace_prints_every_frame_to_stderr(sims: Simulators) -> None:
    result = hes(
        "read", "--serial", sims.pty_device, "--physical-address", str(PHYSICAL),
        "--obis", A_PLUS, "--trace",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = _json(result)  # stdout stays the JSON alone
    lines = result.stderr.splitlines()
    assert all(line[:3] in ("tx ", "rx ") and "  | HDLC " in line for line in lines), lines
    summaries = [line.split("  | ", 1)[1] for line in lines]
    assert summaries[0] == f"HDLC SNRM to 1/{PHYSICAL} from 16 P/F"
    assert summaries[1].startswith(f"HDLC UA to 16 from 1/{PHYSICAL} P/F info")
    assert summaries[2].endswith(": AARQ") and summaries[3].endswith(": AARE")
    # the register's value and scaler_unit in one request
    assert summaries[6].endswith("info 27: GET-Request-With-List 2 items")
    assert summaries[7].endswith(": GET-Response-With-List 2 items")
    assert summaries[-2].startswith("HDLC DISC") and summaries[-1].startswith("HDLC UA")
    tx = sum(len(line.split("  | ")[0].split()) - 1 for line in lines if line.startswith("tx"))
    assert tx == out["link"]["bytes_tx"]  # every byte sent is in the trace


def test_trace_over_the_tcp_wrapper(sims: Simulators) -> None:
    result = hes("read", "--tcp", f"127.0.0.1:{sims.tcp_port}", "--trace")
    assert result.returncode == 0, result.stderr
    summaries = [line.split("  | ", 1)[1] for line in result.stderr.splitlines()]
    assert summaries[0] == "wrapper wPort 16->1 length 31: AARQ"
    assert summaries[1].startswith("wrapper wPort 1->16 length") and summaries[1].endswith("AARE")
    assert "GET-Request-Normal 8/0.0.1.0.0.255/2" in summaries[2]
    assert summaries[-1].endswith("RLRE")


# ---------------------------------------------------------------------------------- profile ranges


def _profile(sims: Simulators, *args: str) -> dict[str, Any]:
    result = hes("read", "--tcp", f"127.0.0.1:{sims.tcp_port}", "--profile", LOAD_PROFILE, *args)
    assert result.returncode == 0, result.stderr
    (profile,) = _json(result)["profiles"]
    return profile


def test_profile_without_a_range_reads_the_last_day_and_says_so(sims: Simulators) -> None:
    profile = _profile(sims)
    mt = sims.tcp_meter.meter_time(NOW)
    first = datetime.fromisoformat(profile["range"]["from"]).timestamp()
    last = datetime.fromisoformat(profile["range"]["to"]).timestamp()
    assert last == pytest.approx(mt, abs=0.011) and last - first == 86400
    assert profile["range"]["default"] == "no --from/--to: the last 24 h up to the meter clock"
    truth = model.ground_truth(sims.tcp_meter.meter_id, SEED, math.ceil(first), int(last) + 1)
    rows = [
        (int(datetime.fromisoformat(r["timestamp"]).timestamp()), *r["values"][1:])
        for r in profile["rows"]
    ]
    assert rows == truth.load_profile and len(rows) == 96


def test_profile_with_one_end_fills_the_other_and_says_so(sims: Simulators) -> None:
    start, end = _window(sims.tcp_meter)
    only_to = _profile(sims, "--to", _iso(end))
    assert only_to["range"]["default"] == "no --from: the 24 h before --to"
    assert len(only_to["rows"]) == 97  # both ends are capture instants
    only_from = _profile(sims, "--from", _iso(start))
    assert only_from["range"]["default"] == "no --to: up to the meter clock"
    assert only_from["rows"][0]["timestamp"] == datetime.fromtimestamp(start, UTC).isoformat()


@pytest.mark.parametrize(
    ("offset_from", "offset_to", "why"),
    [
        (2 * model.DAY, 3 * model.DAY, "the range starts after the meter clock"),
        (-model.DAY + 60, -model.DAY + 300, "no capture instant: the meter captures every 900 s"),
        (-100 * model.DAY, -99 * model.DAY, "none of the meter's 5952 entries is in the range"),
    ],
    ids=["future", "between-captures", "older-than-the-buffer"],
)
def test_an_empty_range_says_why(
    sims: Simulators, offset_from: int, offset_to: int, why: str
) -> None:
    now = int(sims.tcp_meter.meter_time(NOW)) // 900 * 900
    profile = _profile(sims, "--from", _iso(now + offset_from), "--to", _iso(now + offset_to))
    assert profile["rows"] == []
    assert why in profile["empty"]


# ---------------------------------------------------------------------------- meter profiles

#: A profile of the simulator's model as a user would write it for a bench: the meter at
#: physical address 17, small frames, registers and load profile from the channel map.
BENCH_PROFILE = f"""
[meter]
manufacturer = "hes simulator"
model = "bench"

[association]
public_client_sap = 16
management_client_sap = 1

[hdlc]
physical_address = {PHYSICAL}
max_info_tx = 32
max_info_rx = 32

[channels]
profile = "{LOAD_PROFILE}"
status_column = 1
registers = ["{A_PLUS}", "1.0.2.8.0.255"]

[channels.columns]
2 = "1.0.1.8.0.255"
"""


def _check_model_registers(out: dict[str, Any], meter: SimulatedMeter) -> None:
    now = model.registers(meter.spec, meter.meter_time(NOW))
    got = [(r["obis"], r["raw"]) for r in out["registers"]]
    assert got == [(A_PLUS, now.active_import), ("1.0.2.8.0.255", now.active_export)]


def test_profile_file_sets_address_sap_frames_and_what_is_read(
    sims: Simulators, tmp_path: Path
) -> None:
    """No --physical-address, --client-sap, --obis or --profile: the profile gives them, the
    management SAP for --auth lls; --max-info-field overrides the profile's 32."""
    path = tmp_path / "bench.toml"
    path.write_text(BENCH_PROFILE)
    meter = sims.hdlc_meter
    start, end = _window(meter)
    base = ["read", "--hdlc-tcp", f"127.0.0.1:{sims.hdlc_port}", "--profile-file", str(path)]
    base += ["--auth", "lls", "--from", _iso(start), "--to", _iso(end), "--timeout", "5"]
    env = {"HES_PASSWORD": meter.spec.password.decode()}
    result = hes(*base, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = _json(result)
    assert out["negotiated"]["max_info_tx"] == out["negotiated"]["max_info_rx"] == 32
    assert out["meter_profile"]["name"] == "bench" and out["meter_profile"]["model"] == "bench"
    _check_model_registers(out, meter)
    (profile,) = out["profiles"]
    rows = [
        (int(datetime.fromisoformat(r["timestamp"]).timestamp()), *r["values"][1:])
        for r in profile["rows"]
    ]
    assert rows == model.ground_truth(meter.meter_id, SEED, start, end + 1).load_profile
    wider = _json(hes(*base, "--max-info-field", "64", env=env))
    assert wider["negotiated"]["max_info_tx"] == 64
    _check_model_registers(wider, meter)
    # The profile's physical address is overridden too: nobody answers at 40.
    other = hes(
        *base, "--physical-address", "40", "--frame-timeout", "0.2", "--retries", "0", env=env
    )
    assert other.returncode == 1 and _json(other)["error"] == "timeout"


def test_shipped_profile_over_the_tcp_wrapper(sims: Simulators) -> None:
    result = hes(
        "read", "--tcp", f"127.0.0.1:{sims.tcp_port}", "--meter-profile", "sim-standard",
        "--obis", A_PLUS, "--obis", "1.0.2.8.0.255", "--timeout", "5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = _json(result)
    assert out["meter_profile"]["model"] == "SIM standard"
    _check_model_registers(out, sims.tcp_meter)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[hdlc]\nmax_info_tx = '128'\n", "hdlc.max_info_tx", "expected an integer, got a str"),
        ("[association]\nclient_sap = 1\n", "association.client_sap", "unknown key"),
        ("[clock]\ndeviation = 'east'\n", "clock.deviation", "use one of dlms, inverted"),
        ("[channels.columns]\n2 = '1.0.1.8'\n", "channels.columns.2", "not an OBIS code"),
    ],
)
def test_broken_profile_file_is_a_json_error_naming_the_key(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    result = hes("read", "--tcp", "127.0.0.1:4059", "--profile-file", str(path))
    assert result.returncode == 2
    out = _json(result)
    assert out["error"] == "profile"
    assert out["detail"].startswith(f"{path}: {key}: ") and expected in out["detail"]


def test_unknown_shipped_profile_names_the_known_ones() -> None:
    result = hes("read", "--tcp", "127.0.0.1:4059", "--meter-profile", "sim-nope")
    assert result.returncode == 2
    out = _json(result)
    assert out["error"] == "profile" and "sim-standard" in out["detail"]
