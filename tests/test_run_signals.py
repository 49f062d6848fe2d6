"""app.run, the one run-until-signal helper, in real processes that receive real signals.

Each child process announces itself on stdout once its handlers are in; the test then sends
SIGTERM or SIGINT and checks the exit code (128 + the signal), what the child printed, and
that a signal which arrived before the event loop was up still stops the run at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.run import StopSignals

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 30

# Serves until a signal (or 60 s); prints what it saw, exits 128 + the signal.
ON_LOOP = textwrap.dedent(
    """
    import asyncio, json, signal, sys, time
    from app.run import StopSignals, until_stopped

    async def main() -> int:
        stop = asyncio.Event()
        calls = []
        signals = StopSignals()
        with signals.on_loop(lambda: (calls.append(1), stop.set())):
            print("ready", flush=True)
            t0 = time.monotonic()
            await until_stopped(stop, 60)
        removed = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        print(json.dumps({"received": signals.received, "calls": len(calls),
                          "waited": time.monotonic() - t0, "removed": removed}), flush=True)
        return signals.exit_code() or 0

    sys.exit(asyncio.run(main()))
    """
)

# Signalled before its event loop exists (trapped), then starts the loop: stops at once.
BEFORE_LOOP = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from app.run import StopSignals, until_stopped

    signals = StopSignals()

    async def main() -> int:
        stop = asyncio.Event()
        with signals.on_loop(stop.set):
            t0 = time.monotonic()
            await until_stopped(stop, 60)
        print(json.dumps({"received": signals.received, "waited": time.monotonic() - t0}))
        return signals.exit_code() or 0

    with signals.trapped():
        print("trapped", flush=True)
        sys.stdin.readline()  # the parent signals, then writes a line
        code = asyncio.run(main())
    sys.exit(code)
    """
)


def _child(script: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdout is not None
    got = proc.stdout.readline().strip()
    if got != line:
        proc.kill()
        _, err = proc.communicate(timeout=TIMEOUT)
        pytest.fail(f"expected {line!r}, got {got!r}: {err}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_on_the_loop_stops_and_sets_the_exit_code(signum: signal.Signals) -> None:
    proc = _child(ON_LOOP)
    try:
        _wait_for(proc, "ready")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err
    seen = json.loads(out)
    assert seen["received"] == [signum]
    assert seen["calls"] == 1
    assert seen["waited"] < TIMEOUT
    assert seen["removed"], "the loop's handlers were not removed"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_the_loop_is_up_stops_the_run_at_once(signum: signal.Signals) -> None:
    proc = _child(BEFORE_LOOP)
    try:
        _wait_for(proc, "trapped")
        proc.send_signal(signum)
        out, err = proc.communicate("go\n", timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err
    seen = json.loads(out)
    assert seen["received"] == [signum]
    assert seen["waited"] < 5  # not the 60 s the run would otherwise last


def test_listen_stops_on_sigint_and_prints_its_counters(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "listen", "--db", str(tmp_path / "hes.db"), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "listening" in json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err  # hes listen ends normally on a signal
    assert json.loads(out.splitlines()[-1])["stopped"] is True


def test_trapped_records_calls_back_and_restores_the_previous_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    forwarded: list[int] = []
    signals = StopSignals()
    with signals.trapped(forwarded.append):
        signal.raise_signal(signal.SIGTERM)
    assert signals.received == forwarded == [signal.SIGTERM]
    assert signals.exit_code() == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


def test_no_signal_no_exit_code() -> None:
    assert StopSignals().signum is None
    assert StopSignals().exit_code() is None
