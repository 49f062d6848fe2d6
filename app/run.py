"""Run until SIGINT/SIGTERM: the one signal helper of every long-running ``hes`` command.

A :class:`StopSignals` remembers which stop signals arrived, in order, so a command can end
with 128 + the first one (130 for Ctrl-C, 143 for SIGTERM) or report it to a parent process:

- :meth:`StopSignals.on_loop` installs the handlers on the running event loop: each signal is
  recorded and the stop callback called; the handlers are removed on the way out. A signal
  recorded earlier (before the loop was up) calls the stop callback at once on entry.
- :meth:`StopSignals.trapped` installs plain (not event-loop) handlers that record each signal
  and optionally call back; the previous handlers come back afterwards. A worker process uses
  it to catch signals between its start and its event loop; a process without an event loop
  (the parent of ``hes collect --workers``) uses it to forward signals.
- :func:`until_stopped` waits for a stop event or a duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """The stop signals received so far (the first one decides the exit code)."""

    def __init__(self, signals: Sequence[int] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.received: list[int] = []

    @property
    def signum(self) -> int | None:
        """The first stop signal received, or None."""
        return self.received[0] if self.received else None

    def exit_code(self) -> int | None:
        """128 + the first signal (the shell's convention), or None when none arrived."""
        return None if self.signum is None else 128 + self.signum

    @contextlib.contextmanager
    def on_loop(self, stop: Callable[[], None]) -> Iterator[StopSignals]:
        """Within: each stop signal is recorded and calls ``stop`` (on the running loop)."""
        loop = asyncio.get_running_loop()

        def handle(signum: int) -> None:
            self.received.append(signum)
            stop()

        for signum in self.signals:
            loop.add_signal_handler(signum, handle, signum)
        try:
            if self.received:  # arrived before the loop could handle it
                stop()
            yield self
        finally:
            for signum in self.signals:
                loop.remove_signal_handler(signum)

    @contextlib.contextmanager
    def trapped(self, then: Callable[[int], None] | None = None) -> Iterator[StopSignals]:
        """Within: plain handlers record each stop signal, then call ``then(signum)``."""

        def handle(signum: int, _frame: Any) -> None:
            self.received.append(signum)
            if then is not None:
                then(signum)

        old = {s: signal.signal(s, handle) for s in self.signals}
        try:
            yield self
        finally:
            for s, previous in old.items():
                signal.signal(s, previous)


async def until_stopped(stop: asyncio.Event, duration: float | None = None) -> None:
    """Wait until ``stop`` is set (a signal, through :meth:`StopSignals.on_loop`) or, when
    given, ``duration`` seconds have passed."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(duration):
            await stop.wait()
