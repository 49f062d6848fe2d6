"""Test hosts made of Linux network namespaces: for the multi-node tests and the cluster bench.

:class:`TestNet` makes N namespaces, each a "host" with its own loopback and one veth
(``veth0`` inside) plugged into a bridge of the test's own in the root namespace, on a
private /24 picked so that it overlaps no route of the machine. The bridge's address
(``.1``) is the hosts' way to the root namespace; the hosts reach each other over the
bridge. Nothing touches the machine's real interfaces: traffic stays on the test's veths,
its bridge and loopback.

- Processes run inside with ``ip netns exec`` (:meth:`Host.popen`); ``ip`` execs the
  command, so the Popen's pid is the process itself (SIGKILL, ``/proc`` figures).
- The machine's PostgreSQL listens on 127.0.0.1 only and trusts 127.0.0.1 only. Rather
  than change its configuration, :meth:`TestNet.forward` runs :mod:`bench.tcp_forward` in
  the root namespace, listening on the bridge's address and relaying to 127.0.0.1:5432;
  the hosts use ``postgresql://…@<bridge>:<port>/…``, and PostgreSQL sees 127.0.0.1.
- :meth:`TestNet.serve_range` makes a private range of addresses local to one host (an
  ``ip route add local`` on its loopback) and routes it from the others through that
  host: the simulator's GPRS meters, one address each, as on the machine's 127.x range.
- :meth:`TestNet.delay` adds ``tc qdisc … netem delay`` to a host's veth, where the kernel
  has netem (:func:`netem_missing` says why not; this machine's kernel is built without
  ``CONFIG_NET_SCH_NETEM``, so its benches emulate GPRS round trips in the simulator).
- :meth:`TestNet.close` (also on leaving the ``with``, whatever happened) kills every
  process left in the namespaces, stops the forwarder, deletes the namespaces (which
  deletes their veths) and the bridge. Names carry the creating pid, so a later run
  removes what a killed run left behind (:func:`sweep_stale`).

Needs root (CAP_NET_ADMIN) and iproute2: :func:`unavailable` gives the reason when not, for
a test to skip with.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "hesnet"
_NAME = re.compile(rf"{PREFIX}-(\d+)-")
_BRIDGE = re.compile(r"hb([0-9a-f]+)x[0-9a-f]+")


class NetnsError(RuntimeError):
    """An ``ip``/``tc`` command failed: the command and its stderr."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if sys.platform != "linux":
        return f"network namespaces are Linux only (this is {sys.platform})"
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root (CAP_NET_ADMIN)"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return None


def netem_missing() -> str | None:
    """Why ``tc qdisc … netem`` cannot delay packets here (None: it can)."""
    if shutil.which("tc") is None:
        return "iproute2's tc command is not installed"
    probe = f"{PREFIX}-{os.getpid()}-netem"
    _run("ip", "netns", "add", probe)
    try:
        added = _run(
            "ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root",
            "netem", "delay", "1ms", check=False,
        )  # fmt: skip
        if added.returncode != 0:
            return f"tc netem: {added.stderr.strip()} (kernel without CONFIG_NET_SCH_NETEM)"
        return None
    finally:
        _run("ip", "netns", "del", probe, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(netns: str) -> None:
    pids = _run("ip", "netns", "pids", netns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def sweep_stale() -> int:
    """Remove namespaces and bridges that a run now dead left behind; returns how many."""
    removed = 0
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = _NAME.match(name)
        if match and not _alive(int(match.group(1))):
            _kill_inside(name)
            _run("ip", "netns", "del", name, check=False)
            removed += 1
    links = json.loads(_run("ip", "-j", "link", "show", "type", "bridge").stdout or "[]")
    for link in links:
        match = _BRIDGE.fullmatch(link.get("ifname", ""))
        if match and not _alive(int(match.group(1), 16)):
            _run("ip", "link", "del", link["ifname"], check=False)
            removed += 1
    return removed


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.x.y.0/24 that overlaps no route of the root namespace."""
    routes = json.loads(_run("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]")
    taken = []
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.IPv4Network(dst, strict=False))
    rng = random.Random()
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{rng.randrange(64, 250)}.{rng.randrange(0, 256)}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise NetnsError("no free 10.x.y.0/24 for the test's bridge")


@dataclass
class Host:
    """One namespace: a test host with its own loopback and ``veth0`` on the bridge."""

    name: str
    netns: str
    address: str
    #: The veth's end on the bridge (root namespace), where a delay for the host's
    #: incoming traffic would go.
    bridge_port: str
    device: str = "veth0"

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``argv`` inside this host (text mode; ``kwargs`` as for Popen)."""
        kwargs.setdefault("text", True)
        return subprocess.Popen(self.command(argv), **kwargs)

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this host to its end (captured, text mode)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(argv), **kwargs)


@dataclass
class TestNet:
    """N test hosts on a bridge of their own; a context manager that removes everything."""

    names: Sequence[str]
    hosts: dict[str, Host] = field(default_factory=dict)
    subnet: ipaddress.IPv4Network | None = None
    bridge: str = ""
    _forwarders: list[subprocess.Popen[str]] = field(default_factory=list)

    __test__ = False  # not a pytest test class

    def __enter__(self) -> TestNet:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def gateway(self) -> str:
        """The bridge's address: the root namespace as the hosts see it."""
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def open(self) -> None:
        sweep_stale()
        pid = os.getpid()
        tag = f"{pid:x}x{random.randrange(16**3):03x}"
        self.subnet = _free_subnet()
        self.bridge = f"hb{tag}"
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for i, name in enumerate(self.names):
            netns = f"{PREFIX}-{pid}-{tag[-3:]}{i}-{name}"[:60]
            address = str(self.subnet.network_address + 2 + i)
            outside, inside = f"hv{tag}{i}"[:15], f"hi{tag}{i}"[:15]
            _run("ip", "netns", "add", netns)
            host = Host(name, netns, address, outside)
            self.hosts[name] = host
            _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            _run("ip", "link", "set", inside, "netns", netns)
            _run("ip", "-n", netns, "link", "set", inside, "name", host.device)
            _run("ip", "link", "set", outside, "master", self.bridge)
            _run("ip", "link", "set", outside, "up")
            _run("ip", "-n", netns, "link", "set", "lo", "up")
            _run("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", host.device)
            _run("ip", "-n", netns, "link", "set", host.device, "up")

    def close(self) -> None:
        """Kill what runs inside, stop the forwarders, delete namespaces and bridge."""
        for proc in self._forwarders:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._forwarders = []
        for host in self.hosts.values():
            _kill_inside(host.netns)
        for host in self.hosts.values():
            _run("ip", "netns", "del", host.netns, check=False)
            _run("ip", "link", "del", host.bridge_port, check=False)
        self.hosts = {}
        if self.bridge:
            _run("ip", "link", "del", self.bridge, check=False)
            self.bridge = ""

    def serve_range(self, name: str, network: str) -> None:
        """Make every address of ``network`` local to host ``name`` (its loopback answers
        them) and route ``network`` to it from every other host."""
        server = self.hosts[name]
        _run("ip", "-n", server.netns, "route", "add", "local", network, "dev", "lo")
        for other in self.hosts.values():
            if other is not server:
                _run("ip", "-n", other.netns, "route", "add", network, "via", server.address)

    def delay(self, name: str, delay_ms: float, jitter_ms: float = 0.0) -> None:
        """netem delay on host ``name``'s veth, so each way of its traffic waits that
        long (NetnsError where the kernel has no netem: check :func:`netem_missing`)."""
        host = self.hosts[name]
        args = ["netem", "delay", f"{delay_ms}ms"]
        if jitter_ms:
            args.append(f"{jitter_ms}ms")
        _run(
            "ip",
            "netns",
            "exec",
            host.netns,
            "tc",
            "qdisc",
            "add",
            "dev",
            host.device,
            "root",
            *args,
        )
        _run("tc", "qdisc", "add", "dev", host.bridge_port, "root", *args)

    def forward(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> tuple[str, int]:
        """A forwarder on the bridge's address to ``target`` in the root namespace;
        returns (address, port) for the hosts to connect to."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.tcp_forward", self.gateway, "0", *map(str, target)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._forwarders.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if len(line) != 3 or line[0] != "listening":
            raise NetnsError(f"the TCP forwarder did not start: {line} (exit {proc.poll()})")
        return line[1], int(line[2])


def env_for(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a hes process in a test host: this checkout on the path."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}


@contextlib.contextmanager
def test_net(names: Sequence[str]) -> Iterator[TestNet]:
    """``with test_net(["sim", "node1"]) as net: ...``: a :class:`TestNet`."""
    with TestNet(names) as net:
        yield net


test_net.__test__ = False  # type: ignore[attr-defined]


def wait_for(predicate: Any, timeout: float, what: str, step: float = 0.1) -> None:
    """Poll ``predicate()`` until true; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout} s")
        time.sleep(step)


def url_via(url: str, address: tuple[str, int]) -> str:
    """``url`` (``postgresql…://user@127.0.0.1:5432/db?…``) pointed at ``address``."""
    return re.sub(r"@[^/@]+/", f"@{address[0]}:{address[1]}/", url, count=1)


@dataclass
class Simulator:
    """``hes simulate`` running in a test host, with what it announced."""

    proc: subprocess.Popen[str]
    info: dict[str, Any]

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM; the counters of its last line (sessions, per-bus clients)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=timeout)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise NetnsError(f"hes simulate printed no counters: {err[-2000:]}")
        last = json.loads(lines[-1])
        if not last.get("stopped"):
            raise NetnsError(f"hes simulate did not stop cleanly: {last}")
        stats: dict[str, Any] = last["stats"]
        return stats


def start_simulator(
    net: TestNet, name: str, args: Sequence[str], *, meters_range: str = "10.77.0.0/16"
) -> Simulator:
    """``hes simulate`` in host ``name``: its GPRS meters on ``meters_range`` (served by that
    host, routed from the others), its buses on the host's address; ``args`` adds the fleet
    (``--tcp-meters``, ``--buses``, ``--inventory`` …)."""
    host = net[name]
    net.serve_range(name, meters_range)
    first = str(ipaddress.IPv4Network(meters_range).network_address + 1)
    argv = [
        sys.executable, "-m", "cli", "simulate",
        "--first-address", first, "--tcp-device", host.device, "--bus-host", host.address,
        *args,
    ]  # fmt: skip
    proc = host.popen(argv, cwd=ROOT, env=env_for(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("{"):
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise NetnsError(f"hes simulate did not start: {line}{err[-2000:]}")
    return Simulator(proc, json.loads(line))


def link_bytes(host: Host) -> tuple[int, int]:
    """(received, sent) bytes of the host's veth so far."""
    shown = json.loads(host.run(["ip", "-j", "-s", "link", "show", host.device]).stdout)
    stats = shown[0]["stats64"]
    return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])
