"""A ``hes`` command's own wall time, CPU and peak RSS, measured from a small parent.

Why not ``wait4`` straight from the harness: on Linux a child's ``ru_maxrss`` starts at the
RSS of the process it was spawned from (the address space it had before ``exec`` counts
towards its high-water mark), so a child of a harness holding hundreds of MiB of rows reports
the harness's memory, not its own. Here a fresh interpreter with nothing loaded (about
10 MiB) spawns the command and reads ``wait4`` for it, so the figure is the command's own
whenever it is above that floor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness import ROOT, BenchError

#: The small parent: runs argv[2:], waits, writes wall s, CPU s, ru_maxrss KiB to argv[1],
#: exits with the command's code.
_PARENT = """\
import os, subprocess, sys, time
t0 = time.perf_counter()
child = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(child.pid, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as out:
    out.write(f"{wall} {ru.ru_utime + ru.ru_stime} {ru.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass(frozen=True, slots=True)
class CommandUsage:
    """What one command printed and used (its own figures, not its parent's)."""

    stdout: str
    wall_s: float
    cpu_s: float
    peak_rss_mib: float


def run_measured(args: Sequence[str], log: Path, timeout: float) -> CommandUsage:
    """``python -m cli ARGS`` to completion; BenchError unless it exits 0 within ``timeout``
    (then the command and its parent are killed). Its stderr goes to ``log``."""
    with tempfile.NamedTemporaryFile("r", suffix=".usage", delete=False) as figures:
        path = Path(figures.name)
    argv = [sys.executable, "-I", "-c", _PARENT, str(path), sys.executable, "-m", "cli", *args]
    try:
        with open(log, "wb") as err:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                                    text=True, start_new_session=True)  # fmt: skip
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                what = f"hes {' '.join(args[:2])}"
                raise BenchError(f"{what} did not finish in {timeout:.0f} s") from None
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise BenchError(f"hes {' '.join(args[:2])} exited {proc.returncode}: {tail}")
        wall, cpu, rss_kib = (float(x) for x in path.read_text().split())
    finally:
        path.unlink(missing_ok=True)
    return CommandUsage(out, wall, cpu, rss_kib / 1024)
