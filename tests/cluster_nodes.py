"""Starting the nodes of a cluster for the end-to-end tests: ``hes serve --node NAME``
processes over one PostgreSQL database.

Kept apart from the tests so that other harnesses (a node per Linux network namespace)
start the same command lines: ``prefix`` goes before the command (``ip netns exec NS``),
``http`` is where the node's API listens, ``extra`` adds options.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from serve_harness import TIMEOUT, Service, start_process


def node_argv(
    name: str,
    config: Path,
    *,
    prefix: Sequence[str] = (),
    http: str = "127.0.0.1:0",
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of one node."""
    return [
        *prefix,
        sys.executable,
        "-m",
        "cli",
        "serve",
        "--config",
        str(config),
        "--node",
        name,
        "--http",
        http,
        *extra,
    ]


def start_node(
    name: str,
    config: Path,
    env: dict[str, str],
    *,
    prefix: Sequence[str] = (),
    http: str = "127.0.0.1:0",
    extra: Sequence[str] = (),
) -> Service:
    """One node in a subprocess; returns once it listens (its API at ``Service.url``)."""
    return start_process(node_argv(name, config, prefix=prefix, http=http, extra=extra), env)


@contextmanager
def cluster(
    names: Sequence[str],
    config: Path,
    env: dict[str, str],
    *,
    prefix_of: dict[str, Sequence[str]] | None = None,
    http_of: dict[str, str] | None = None,
) -> Iterator[dict[str, Service]]:
    """The nodes ``names``, started one after another; any left running is killed after."""
    nodes: dict[str, Service] = {}
    try:
        for name in names:
            nodes[name] = start_node(
                name,
                config,
                env,
                prefix=(prefix_of or {}).get(name, ()),
                http=(http_of or {}).get(name, "127.0.0.1:0"),
            )
        yield nodes
    finally:
        for svc in nodes.values():
            if svc.proc.poll() is None:
                svc.proc.kill()
                svc.proc.wait(timeout=TIMEOUT)
