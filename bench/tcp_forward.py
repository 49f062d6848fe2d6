"""A TCP forwarder: ``python -m bench.tcp_forward LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT``.

Why: the test hosts of :mod:`bench.netns` live in network namespaces and reach the root
namespace only over their own bridge, while this machine's PostgreSQL listens on 127.0.0.1
alone (and trusts 127.0.0.1 alone). The forwarder listens on the bridge's address and
relays each connection to 127.0.0.1, so the nodes reach the real database without a change
to its configuration and no traffic leaves the test's own devices and loopback. It prints
``listening HOST PORT`` once bound (port 0 picks a free one) and runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def forward(listen: tuple[str, int], target: tuple[str, int]) -> None:
    """Relay every connection to ``listen`` to ``target`` until SIGTERM or SIGINT."""

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(relay, *listen, reuse_address=True)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening {host} {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    asyncio.run(forward((argv[0], int(argv[1])), (argv[2], int(argv[3]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
