"""``hes read --auth hls-gmac`` end to end: the real CLI against secured simulated meters.

Each test gets its own secured meter (``require_security``) behind a TCP wrapper server and
an HDLC bus on a real pty, on a background loop with the clock frozen, so the values read are
checked against the simulator's ground truth. Keys come from the environment, a key file, the
command line or the key store; no key (hex either case) reaches stdout or stderr, with or
without ``--trace``. The counter paths: a meter that saw a higher counter refuses ours with
``invocation_counter_rejected`` and ``--recover-counter`` gets past it by reading the frame
counter as the public client.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
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

from simulator.bus_server import HdlcBus, PtyBus
from simulator.meter import SimulatedMeter
from simulator.server import WrapperServer
from storage.database import open_database
from storage.keystore import DatabaseCounterStore

MASTER_HEX = "6b" * 16 + "19" * 16
#: A meter that saw this counter from another head-end refuses anything up to it.
SEEN = 7000


@dataclass
class Secured:
    meter: SimulatedMeter
    tcp: str
    pty: str

    @property
    def secrets(self) -> list[str]:
        keys = self.meter.keys
        return [
            text
            for key in (keys.encryption_key, keys.authentication_key)
            for text in (key.hex(), key.hex().upper(), repr(key)[2:-1])
        ]

    def env(self) -> dict[str, str]:
        keys = self.meter.keys
        return {"HES_EK": keys.encryption_key.hex(), "HES_AK": keys.authentication_key.hex()}

    def key_file(self, tmp: Path, ak_from: SimulatedMeter | None = None) -> Path:
        keys = self.meter.keys
        ak = (ak_from or self.meter).keys.authentication_key
        path = tmp / "keys.csv"
        path.write_text(
            "meter_id,encryption_key,authentication_key,system_title\n"
            f"m-1,{keys.encryption_key.hex()},{ak.hex()},{keys.system_title.hex()}\n"
        )
        path.chmod(0o600)
        return path


_serial = 0


@pytest.fixture(scope="module")
def loop() -> Iterator[_Loop]:
    background = _Loop()
    yield background
    background.stop()


@pytest.fixture
def secured(loop: _Loop) -> Iterator[Secured]:
    global _serial
    _serial += 1
    meter = SimulatedMeter(_quiet_meter(700 + 40 * _serial).meter_id, SEED, require_security=True)

    async def start() -> tuple[WrapperServer, PtyBus]:
        wrapper = WrapperServer(lambda ip, port: meter, "127.0.0.1", 0, clock=_clock)
        await wrapper.start()
        pty = PtyBus(HdlcBus({PHYSICAL: meter}), clock=_clock)
        await pty.start()
        return wrapper, pty

    wrapper, pty = loop.run(start())
    try:
        yield Secured(meter, f"127.0.0.1:{wrapper.port}", pty.device)
    finally:
        loop.run(wrapper.close())
        loop.run(pty.close())


def _no_key_in(result: subprocess.CompletedProcess[str], sec: Secured) -> None:
    for text in sec.secrets:
        assert text not in result.stdout and text not in result.stderr


def _hls(sec: Secured, *args: str, env: dict[str, str] | None = None) -> Any:
    return hes("read", "--auth", "hls-gmac", *args, env=env)


def test_hls_read_over_tcp_with_keys_from_the_environment(secured: Secured) -> None:
    sec = secured
    result = _hls(sec, "--tcp", sec.tcp, *_read_args(sec.meter), "--trace", env=sec.env())
    assert result.returncode == 0, result.stdout + result.stderr
    out = _json(result)
    _check_read(out, sec.meter, *_window(sec.meter))
    security = out["security"]
    assert security["keys_from"] == "environment" and security["mechanism"] == "hls-gmac"
    assert security["server_system_title"] == sec.meter.keys.system_title.hex()
    assert security["client_system_title"] == "4845530000000001"
    # the meter holds the highest counter it accepted: ours, one below the next unused
    assert sec.meter.state.client_invocation_counter == security["next_invocation_counter"] - 1
    summaries = [line.split("  | ", 1)[1] for line in result.stderr.splitlines()]
    assert summaries[0].startswith("wrapper wPort 1->1 ") and summaries[0].endswith(": AARQ")
    # after the AARQ/AARE every request and answer is ciphered: the trace cannot read them
    assert summaries[2].endswith("glo-ACTION-Request"), summaries  # HLS pass 3
    assert all(s.endswith(("glo-GET-Request", "glo-GET-Response")) for s in summaries[4:-2])
    assert summaries[-1].endswith("RLRE")
    _no_key_in(result, sec)


def test_hls_read_over_a_pty_with_a_key_file_recovers_the_counter(
    secured: Secured, tmp_path: Path
) -> None:
    sec = secured
    sec.meter.state.client_invocation_counter = SEEN
    keys = sec.key_file(tmp_path)
    args = ["--serial", sec.pty, "--physical-address", str(PHYSICAL), *_read_args(sec.meter)]
    result = _hls(sec, *args, "--keys-file", str(keys), "--recover-counter", "--trace")
    assert result.returncode == 0, result.stdout + result.stderr
    out = _json(result)
    _check_read(out, sec.meter, *_window(sec.meter))
    security = out["security"]
    assert security["keys_from"] == "keys-file" and security["key_id"] == "m-1"
    assert security["recovered_frame_counter"] == SEEN
    assert sec.meter.state.client_invocation_counter > SEEN
    # the trace shows the public association first, then the management one
    lines = result.stderr.splitlines()
    assert any("SNRM to 1/17 from 16" in line for line in lines)
    assert any("SNRM to 1/17 from 1 " in line for line in lines)
    _no_key_in(result, sec)


def test_a_counter_below_the_meters_is_refused_and_names_the_recovery(secured: Secured) -> None:
    sec = secured
    sec.meter.state.client_invocation_counter = SEEN
    refused = _hls(sec, "--tcp", sec.tcp, "--invocation-counter", "100", env=sec.env())
    assert refused.returncode == 1
    out = _json(refused)
    assert out["error"] == "invocation_counter_rejected"
    assert out["expected_invocation_counter"] == SEEN + 1
    assert out["recover_with"] == "--recover-counter"
    assert "--recover-counter" in out["recovery"] and str(SEEN + 1) in out["recovery"]
    again = _hls(sec, "--tcp", sec.tcp, "--recover-counter", env=sec.env())
    assert again.returncode == 0, again.stdout + again.stderr
    assert _json(again)["security"]["recovered_frame_counter"] == SEEN
    at = _hls(sec, "--tcp", sec.tcp, "--invocation-counter", str(SEEN + 500), env=sec.env())
    assert at.returncode == 0, at.stdout
    _no_key_in(refused, sec)


def test_a_wrong_key_is_key_rejected_and_never_printed(secured: Secured, tmp_path: Path) -> None:
    sec = secured
    other = SimulatedMeter(sec.meter.meter_id + 1, SEED)
    wrong = {**sec.env(), "HES_EK": other.keys.encryption_key.hex()}
    result = _hls(sec, "--tcp", sec.tcp, "--trace", env=wrong)
    assert result.returncode == 1
    assert _json(result)["error"] == "key_rejected"
    _no_key_in(result, sec)
    for text in (other.keys.encryption_key.hex(), other.keys.encryption_key.hex().upper()):
        assert text not in result.stdout + result.stderr
    # the right EK with another meter's AK: the meter cannot authenticate the AARQ either
    keys = sec.key_file(tmp_path, ak_from=other)
    mixed = _hls(sec, "--tcp", sec.tcp, "--keys-file", str(keys), "--recover-counter")
    assert mixed.returncode == 1 and _json(mixed)["error"] == "key_rejected"
    _no_key_in(mixed, sec)


def test_keys_from_the_key_store_keep_the_counter_there(secured: Secured, tmp_path: Path) -> None:
    sec = secured
    sec.meter.state.client_invocation_counter = SEEN
    db = str(tmp_path / "hes.db")
    env = {"HES_MASTER_KEY": MASTER_HEX, "HES_EK": "", "HES_AK": ""}
    imported = hes("keys", "import", str(sec.key_file(tmp_path)), "--db", db, env=env)
    assert imported.returncode == 0, imported.stderr
    store = ["--key-store", "m-1", "--db", db]
    result = _hls(sec, "--tcp", sec.tcp, *store, "--recover-counter", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    security = _json(result)["security"]
    assert security["keys_from"] == "key-store" and security["recovered_frame_counter"] == SEEN
    database = open_database(db)
    try:
        stored = DatabaseCounterStore(database, "m-1").peek()
    finally:
        database.close()
    assert stored > sec.meter.state.client_invocation_counter > SEEN
    # the next read starts from the stored counter: no recovery needed
    later = _hls(sec, "--tcp", sec.tcp, *store, env=env)
    assert later.returncode == 0, later.stdout + later.stderr
    _no_key_in(result, sec)
    _no_key_in(later, sec)
    # a meter the store has no keys for
    missing = _hls(sec, "--tcp", sec.tcp, "--key-store", "m-2", "--db", db, env=env)
    assert missing.returncode == 2 and _json(missing)["error"] == "no_keys"
    assert "m-2" in _json(missing)["detail"]


@pytest.mark.parametrize(
    ("args", "env", "error", "message"),
    [
        ([], {}, "no_keys", "--auth hls-gmac needs the meter's keys"),
        (["--ek", "00" * 16], {}, "no_keys", "needs the meter's keys"),
        (["--ek", "zz" * 16, "--ak", "11" * 16], {}, "usage", "--ek is not 32 hex digits"),
        ([], {"HES_EK": "12" * 15, "HES_AK": "34" * 16}, "usage", "$HES_EK is not 32 hex"),
        (["--key-store", "m", "--keys-file", "k.csv"], {}, "usage", "give one source of keys"),
        (["--key-id", "m"], {}, "usage", "--key-id picks a row of --keys-file"),
        (["--recover-counter", "--invocation-counter", "3"], {}, "usage", "not both"),
        (["--system-title", "abc"], {}, "usage", "--system-title is not 16 hex digits"),
        (["--keys-file", "/nonexistent/k.csv"], {}, "no_keys", "cannot open it"),
    ],
)
def test_bad_security_options_are_json_errors_without_the_value(
    args: list[str], env: dict[str, str], error: str, message: str
) -> None:
    base = {"HES_EK": "", "HES_AK": "", "HES_MASTER_KEY": MASTER_HEX}
    environ = {k: v for k, v in {**base, **env}.items() if v}
    result = subprocess.run(
        [sys.executable, "-m", "cli", "read", "--tcp", "127.0.0.1:1", "--auth", "hls-gmac", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("HES_")} | environ,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["error"] == error and message in out["detail"], out
    for secret in ("zz" * 16, "12" * 15, "00" * 16, "11" * 16):
        assert secret not in result.stdout + result.stderr


def test_key_options_without_hls_are_refused() -> None:
    result = hes("read", "--tcp", "127.0.0.1:1", "--ek", "00" * 16)
    assert result.returncode == 2
    assert "are for --auth hls-gmac" in _json(result)["detail"]


def _on_a_terminal(args: list[str], answers: list[str]) -> tuple[int, str]:
    """Run ``hes`` with a real pty as its terminal (stdin, stdout, stderr), typing one answer
    after each prompt (once it is whole: getpass flushes what was typed before it); returns
    the exit code and all the terminal showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=Path(__file__).resolve().parents[1],
        env={k: v for k, v in os.environ.items() if not k.startswith("HES_")},
        start_new_session=True,  # no controlling terminal: getpass uses the pty on stdin
    )
    os.close(slave)
    shown = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            asked = shown.count(b"digits): ")
            if pending and asked > len(answers) - len(pending):
                os.write(master, pending.pop(0).encode() + b"\n")
        elif proc.poll() is not None:
            break
    code = proc.wait(10)
    os.close(master)
    return code, shown.decode(errors="replace")


def test_keys_typed_at_the_prompt_are_not_echoed(secured: Secured) -> None:
    sec = secured
    keys = sec.meter.keys
    code, shown = _on_a_terminal(
        ["read", "--tcp", sec.tcp, "--auth", "hls-gmac", "--ask-keys", "--obis", "1.0.1.8.0.255"],
        [keys.encryption_key.hex(), keys.authentication_key.hex()],
    )
    assert code == 0, shown
    assert "encryption key (EK, 32 hex digits):" in shown
    assert "authentication key (AK, 32 hex digits):" in shown
    assert '"keys_from": "prompt"' in shown
    for text in sec.secrets:
        assert text not in shown
