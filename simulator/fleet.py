"""A seeded fleet of simulated meters: GPRS meters on loopback addresses and RS-485 buses.

A :class:`FleetSpec` (seed, counts, baud rate, latency, faults) fully determines the fleet; a
:class:`Fleet` runs it and writes the inventory CSV that ``hes meters import`` reads, so a load
test is two commands (``hes simulate ... --inventory fleet.csv``, then import and collect).

Meter numbers and ids. Meters are numbered from ``first_meter``: first the TCP meters, then bus
0's meters, bus 1's, ... The inventory's meter_id is the meter's own serial number,
``SIM`` + 9 digits (``SIM000001234`` is meter 1234), which is what the model's
``meter_spec(n, seed).serial_number`` says; :func:`meter_number` maps it back, so a test can
call ``model.ground_truth(meter_number(stored_id), seed, ...)``.

Addressing of GPRS meters. TCP meter ``i`` listens on loopback address ``first_address + i``
(127.1.0.1, 127.1.0.2, ...) on one port (DLMS 4059 by default); the server picks the meter
from the connection's local address. How one server answers on 200,000 addresses was measured
on this Linux (kernel 6.18, root without CAP_SYS_RESOURCE, hard open-file limit 20,000):

- a socket bound to 127.0.0.1 does not accept connections to 127.0.0.2 (refused);
- one socket per address (or per port on a few addresses: the same count) needs 200,000
  descriptors, and the hard limit of 20,000 cannot be raised here (setrlimit: not allowed);
- IP_FREEBIND/IP_TRANSPARENT only relax which single address a socket may bind to;
- a wildcard socket (0.0.0.0) restricted to the loopback device with ``SO_BINDTODEVICE lo``
  accepts connections to every 127.x.y.z address and nothing that arrives from the network
  (traffic to the host's own external address also rides ``lo``, so the server closes any
  connection whose local address is not in 127.0.0.0/8). One descriptor for the whole fleet.

So the fleet uses the ``SO_BINDTODEVICE`` socket, and falls back to one socket per address
(as many as the open-file limit allows) where that option is refused (no CAP_NET_RAW).

On test hosts made of network namespaces (``bench.netns``) the collector is on another host,
which cannot reach this one's 127.x. There ``tcp_device`` names the host's veth, and the
meters take a private range (10.77.0.1, ...) that the host makes local (``ip route add
local``) and the other hosts route to it: the same one socket, tied to that device.

Security. ``secure_share`` of the meters (a seeded choice, exactly ``round(share * meters)``)
refuse any association but HLS-GMAC with suite-0 ciphering from the management client; the
inventory names them ``security_profile`` hls-gmac-suite0 with client_sap 1, and
:meth:`Fleet.write_keys` writes their keys (``simulator.model.keys``) for ``hes keys import``.
``lls_share`` of the others (a seeded choice too) are LLS meters in the inventory: the
management client with the meter's own password, named by ``password_ref`` (the meter id);
the key file carries each one's password as ``lls_password`` under that reference. Every
simulated meter accepts LLS from the management client; the share only says which ones the
inventory has the head-end read that way.

Transformer areas. With ``area_size`` N the customer meters (TCP and bus, in number order)
form areas of N, and each area gets one more TCP meter, its transformer meter, numbered after
every customer meter and served on the loopback addresses after the TCP meters'
(:mod:`simulator.areas` says what it and the under-registering customers hold). The
inventory names each meter's area and role. Without it (0, the default) every meter is in
area ``sim<seed>`` with no role, as before.

Memory. No meter object lives between sessions: a :class:`MeterPool` creates the
:class:`SimulatedMeter` (~100 bytes) when a session starts and drops it when the last session
ends, unless SET/ACTION changed its state (clock correction, relay), which must persist.
"""

from __future__ import annotations

import asyncio
import csv
import ipaddress
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from contracts.meters import INVENTORY_COLUMNS, MODE_E_STARTUP, SECURE_PROFILE, MeterTarget
from protocols.hdlc_link import HdlcSettings
from protocols.iec62056_21 import Identification, baud_char
from simulator import model
from simulator.areas import AreaPlan, Energy
from simulator.bus_server import HdlcBus, HdlcTcpServer, PtyBus
from simulator.faults import FaultPlan, FaultSpec
from simulator.meter import SimulatedMeter
from simulator.quirks import NO_QUIRKS, Quirks
from simulator.server import Clock, ServerStats, WrapperServer, state_is_default
from simulator.sign_on import MANUFACTURER, SignOnBus

LatencyKind = Literal["none", "gprs"]
BusEndpoint = Literal["tcp", "pty"]
#: The first HDLC physical address given to a bus's meters (0x00-0x0F are reserved).
FIRST_PHYSICAL = 16
MAX_PHYSICAL = 0x3FFD
#: The columns the simulator writes (it names passwords by reference, never in the file).
WRITTEN_COLUMNS = tuple(c for c in INVENTORY_COLUMNS if c != "password")
#: The management client: the only one a secured simulated meter accepts HLS from.
MANAGEMENT_CLIENT_SAP = 1
KEY_COLUMNS = ("meter_id", "encryption_key", "authentication_key", "system_title", "lls_password")
_METER_ID = re.compile(r"SIM(\d{9})")
_LOOPBACK_FIRST = int(ipaddress.IPv4Address("127.0.0.1"))
_LOOPBACK_LAST = int(ipaddress.IPv4Address("127.255.255.254"))
_PRIVATE = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)


def meter_id_text(number: int) -> str:
    """The inventory id of meter ``number``: its serial number, ``SIM`` + 9 digits."""
    if not 0 <= number <= 999_999_999:
        raise ValueError(f"meter number {number} does not fit the SIM + 9 digits id")
    return f"SIM{number:09d}"


def meter_number(meter_id: str) -> int:
    """The SimulatedMeter number behind an inventory id (``SIM000001234`` -> 1234)."""
    match = _METER_ID.fullmatch(meter_id)
    if match is None:
        raise ValueError(f"meter_id {meter_id!r} is not a simulator id (SIM + 9 digits)")
    return int(match.group(1))


class LoopbackRange(Sequence[str]):
    """``count`` consecutive IPv4 addresses from ``first``, without storing them.

    Loopback addresses when served on ``lo`` (the default); served on another ``device``
    (a test's network namespace, with the range routed to it), a private range instead.
    """

    def __init__(self, first: str, count: int, device: str = "lo") -> None:
        start = int(ipaddress.IPv4Address(first))
        if count < 0:
            raise ValueError("address count must not be negative")
        if count and device == "lo":
            if not (_LOOPBACK_FIRST <= start and start + count - 1 <= _LOOPBACK_LAST):
                raise ValueError(
                    f"{count} addresses from {first} do not fit in 127.0.0.1..127.255.255.254"
                )
        elif count and not any(
            int(net.network_address) < start and start + count - 1 < int(net.broadcast_address)
            for net in _PRIVATE
        ):
            raise ValueError(
                f"{count} addresses from {first} served on {device} do not fit in one "
                "private range (10/8, 172.16/12, 192.168/16)"
            )
        self.start = start
        self.size = count

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.size))]
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError("loopback address index out of range")
        return str(ipaddress.IPv4Address(self.start + index))

    def position(self, address: str) -> int | None:
        """Index of ``address`` in the range, or None."""
        try:
            offset = int(ipaddress.IPv4Address(address)) - self.start
        except ValueError:
            return None
        return offset if 0 <= offset < self.size else None


@dataclass(slots=True, frozen=True)
class LatencySpec:
    """Per-response delay of TCP meters: none, or GPRS-like round trips.

    GPRS: each meter has its own median round trip, lognormal over the fleet around
    ``median_s`` (so most meters sit in ~0.5-3 s), and each response varies around it.
    """

    kind: LatencyKind = "none"
    median_s: float = 1.2
    meter_sigma: float = 0.45
    response_sigma: float = 0.2
    max_s: float = 6.0

    def __post_init__(self) -> None:
        if self.kind not in ("none", "gprs"):
            raise ValueError(f"latency {self.kind!r}: use none or gprs")

    def meter_median(self, seed: int, meter_id: int) -> float:
        """The meter's own median round trip, fixed by (seed, meter)."""
        rng = random.Random(f"rtt:{seed}:{meter_id}")
        return min(self.max_s, self.median_s * math.exp(rng.gauss(0.0, self.meter_sigma)))


@dataclass(slots=True, frozen=True)
class FleetSpec:
    """Everything that determines a fleet."""

    seed: int = 1
    tcp_meters: int = 0
    buses: int = 0
    meters_per_bus: int = 0
    baudrate: int | None = 9600
    latency: LatencySpec = field(default_factory=LatencySpec)
    faults: FaultSpec = field(default_factory=FaultSpec)
    first_meter: int = 1
    tcp_port: int = 4059
    first_address: str = "127.1.0.1"
    #: The network device the TCP meters answer on: ``lo``, or (a test's network namespace)
    #: the device a private range of meter addresses is routed to.
    tcp_device: str = "lo"
    bus_host: str = "127.0.0.1"
    #: First TCP port of the buses (bus b on ``bus_port + b``); 0 picks free ports.
    bus_port: int = 0
    bus_endpoint: BusEndpoint = "tcp"
    #: Seconds a no-answer session stays silent on a pty bus (see ``HdlcBus``).
    bus_silence_s: float = 10.0
    #: Share of meters (seeded choice) that require HLS-GMAC with suite-0 ciphering.
    secure_share: float = 0.0
    #: Share of meters (seeded choice among the others) read with LLS by the management client.
    lls_share: float = 0.0
    #: Customer meters per transformer area (0: no areas, no transformer meters).
    area_size: int = 0
    #: With areas: share of customer meters (seeded choice) that under-register.
    under_share: float = 0.02
    #: What every meter does differently (``simulator.quirks``; default: nothing).
    quirks: Quirks = NO_QUIRKS
    #: Pty buses whose meters need the IEC 62056-21 mode E sign-on before HDLC.
    mode_e: bool = False
    #: Pty buses: the rate the meters answer at whatever rate the client set (``PtyBus``).
    answer_baudrate: int | None = None
    #: The HDLC parameters the bus meters accept at most (window, max information field).
    hdlc: HdlcSettings = field(default_factory=HdlcSettings)

    def __post_init__(self) -> None:
        if not 0.0 <= self.secure_share <= 1.0:
            raise ValueError(f"secure_share {self.secure_share} is not within [0, 1]")
        if not 0.0 <= self.lls_share <= 1.0 - self.secure_share + 1e-9:
            raise ValueError(
                f"lls_share {self.lls_share} is not within [0, 1 - secure_share]: "
                "a meter is secured or LLS, not both"
            )
        if not 0.0 <= self.under_share <= 1.0:
            raise ValueError(f"under_share {self.under_share} is not within [0, 1]")
        for name in ("tcp_meters", "buses", "meters_per_bus", "first_meter", "area_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.meters_per_bus > MAX_PHYSICAL - FIRST_PHYSICAL + 1:
            raise ValueError(
                f"meters_per_bus {self.meters_per_bus} exceeds the "
                f"{MAX_PHYSICAL - FIRST_PHYSICAL + 1} HDLC physical addresses of a bus"
            )
        if self.buses and not self.meters_per_bus:
            raise ValueError("buses need meters_per_bus > 0")
        if self.bus_endpoint not in ("tcp", "pty"):
            raise ValueError(f"bus endpoint {self.bus_endpoint!r}: use tcp or pty")
        if self.baudrate is not None and self.baudrate <= 0:
            raise ValueError(f"baud rate {self.baudrate} must be positive")
        if self.mode_e:
            if self.bus_endpoint != "pty":
                raise ValueError("mode E is a serial start-up: use it with pty buses")
            baud_char(self.mode_e_baud)
        if self.answer_baudrate is not None:
            if self.answer_baudrate <= 0:
                raise ValueError(f"answer baud rate {self.answer_baudrate} must be positive")
            if self.bus_endpoint != "pty":
                raise ValueError("an answer baud rate needs pty buses (a TCP port has no rate)")
        LoopbackRange(self.first_address, self.served_tcp, self.tcp_device)
        meter_id_text(self.first_meter + self.total_meters + self.transformer_meters)

    @property
    def mode_e_baud(self) -> int:
        """The baud rate mode E meters propose (9600 when the buses have no wire time)."""
        return self.baudrate or 9600

    @property
    def total_meters(self) -> int:
        """Customer meters (TCP and bus), transformer meters not counted."""
        return self.tcp_meters + self.buses * self.meters_per_bus

    @property
    def transformer_meters(self) -> int:
        """One per transformer area (0 without areas)."""
        return -(-self.total_meters // self.area_size) if self.area_size else 0

    @property
    def served_tcp(self) -> int:
        """Meters on the TCP server: the TCP customer meters, then the transformer meters."""
        return self.tcp_meters + self.transformer_meters

    def area_plan(self) -> AreaPlan | None:
        """The transformer areas (None: the fleet has none)."""
        if not self.area_size:
            return None
        return AreaPlan(
            seed=self.seed,
            first_meter=self.first_meter,
            customers=self.total_meters,
            area_size=self.area_size,
            under_share=self.under_share,
        )

    def secured_meters(self) -> frozenset[int]:
        """Numbers of the meters that require security: a seeded sample of the fleet."""
        count = round(self.secure_share * self.total_meters)
        if not count:
            return frozenset()
        rng = random.Random(f"secure:{self.seed}")
        picks = rng.sample(range(self.total_meters), count)
        return frozenset(self.first_meter + k for k in picks)

    def lls_meters(self) -> frozenset[int]:
        """Numbers of the meters the inventory reads with LLS: a seeded sample of the meters
        that are not secured."""
        count = round(self.lls_share * self.total_meters)
        if not count:
            return frozenset()
        secured = self.secured_meters()
        others = [
            n
            for n in range(self.first_meter, self.first_meter + self.total_meters)
            if n not in secured
        ]
        rng = random.Random(f"lls:{self.seed}")
        return frozenset(rng.sample(others, min(count, len(others))))

    def tcp_meter(self, index: int) -> int:
        """Meter number of TCP meter ``index`` (past the TCP customers: a transformer meter)."""
        if index < self.tcp_meters:
            return self.first_meter + index
        return self.first_meter + self.total_meters + index - self.tcp_meters

    def bus_meter(self, bus: int, physical: int) -> int | None:
        """Meter number at ``physical`` on ``bus``, or None when no meter has that address."""
        k = physical - FIRST_PHYSICAL
        if not 0 <= bus < self.buses or not 0 <= k < self.meters_per_bus:
            return None
        return self.first_meter + self.tcp_meters + bus * self.meters_per_bus + k

    def locate(self, number: int) -> tuple[str, int, int]:
        """``("tcp", index, 0)`` or ``("bus", bus, physical)`` of a meter number."""
        k = number - self.first_meter
        if 0 <= k < self.tcp_meters:
            return "tcp", k, 0
        k -= self.tcp_meters
        if 0 <= k < self.buses * self.meters_per_bus:
            bus, pos = divmod(k, self.meters_per_bus)
            return "bus", bus, FIRST_PHYSICAL + pos
        k -= self.buses * self.meters_per_bus
        if 0 <= k < self.transformer_meters:
            return "tcp", self.tcp_meters + k, 0
        raise ValueError(f"meter {number} is not in this fleet")


class MeterPool:
    """Meters alive only while in session (or while their SET/ACTION state must persist)."""

    def __init__(
        self,
        seed: int,
        secured: Callable[[int], bool] | None = None,
        energy: Callable[[int], Energy] | None = None,
        quirks: Quirks = NO_QUIRKS,
    ) -> None:
        self.seed = seed
        self.quirks = quirks
        self.secured = secured
        self.energy = energy
        self._meters: dict[int, SimulatedMeter] = {}
        self._refs: dict[int, int] = {}

    #: Hears every meter's ACTION push (``SimulatedMeter.on_push``): the fleet's pusher.
    on_push: Callable[[SimulatedMeter, bytes, float], None] | None = None

    def _make(self, number: int) -> SimulatedMeter:
        secure = self.secured is not None and self.secured(number)
        meter = SimulatedMeter(number, self.seed, require_security=secure, quirks=self.quirks)
        if self.energy is not None:
            meter.energy = self.energy(number)
        meter.on_push = self.on_push
        return meter

    def acquire(self, number: int) -> SimulatedMeter:
        meter = self._meters.get(number)
        if meter is None:
            meter = self._make(number)
            self._meters[number] = meter
        meter.on_push = self.on_push
        self._refs[number] = self._refs.get(number, 0) + 1
        return meter

    def view(self, number: int) -> SimulatedMeter:
        """Meter ``number`` as it stands: the one held (its SET state), else a fresh one
        (not kept: a meter never changed is the same re-created)."""
        return self._meters.get(number) or self._make(number)

    def release(self, meter: SimulatedMeter) -> None:
        number = meter.meter_id
        refs = self._refs.get(number, 0) - 1
        if refs > 0:
            self._refs[number] = refs
            return
        self._refs.pop(number, None)
        if state_is_default(meter):
            self._meters.pop(number, None)

    def __len__(self) -> int:
        """Meters held right now."""
        return len(self._meters)


class _BusMeters:
    """A bus's view of the pool: physical address -> meter, created on demand."""

    def __init__(self, spec: FleetSpec, pool: MeterPool, bus: int) -> None:
        self.spec = spec
        self.pool = pool
        self.bus = bus

    def get(self, physical: int, /) -> SimulatedMeter | None:
        number = self.spec.bus_meter(self.bus, physical)
        return None if number is None else self.pool.acquire(number)


class Fleet:
    """A running fleet: ``await fleet.start()`` ... ``await fleet.close()`` (or ``async with``)."""

    def __init__(self, spec: FleetSpec, *, clock: Clock = time.time) -> None:
        self.spec = spec
        self.clock = clock
        self.secured = spec.secured_meters()
        self.lls = spec.lls_meters()
        self.areas = spec.area_plan()
        self.pool = MeterPool(
            spec.seed,
            self.secured.__contains__,
            self.areas.energy if self.areas is not None else None,
            spec.quirks,
        )
        self.faults = FaultPlan(spec.faults, spec.seed)
        self.addresses = LoopbackRange(spec.first_address, spec.served_tcp, spec.tcp_device)
        self.tcp: WrapperServer | None = None
        self.buses: list[HdlcBus] = []
        self.bus_servers: list[HdlcTcpServer | PtyBus] = []
        self.start_seconds = 0.0
        self._latency_rng = random.Random(f"latency:{spec.seed}")
        self._medians: dict[int, float] = {}

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        started = time.perf_counter()
        spec = self.spec
        try:
            if spec.served_tcp:
                self.tcp = WrapperServer(
                    self._resolve,
                    spec.first_address,
                    spec.tcp_port,
                    clock=self.clock,
                    latency=self._latency if spec.latency.kind == "gprs" else None,
                    faults=self.faults,
                    release=self.pool.release,
                    hosts=self.addresses,
                    device=spec.tcp_device,
                )
                await self.tcp.start()
            for b in range(spec.buses):
                bus = HdlcBus(
                    _BusMeters(spec, self.pool, b),
                    spec.hdlc,
                    faults=self.faults,
                    release=self.pool.release,
                    silence_s=spec.bus_silence_s,
                )
                self.buses.append(bus)
                server: HdlcTcpServer | PtyBus
                if spec.bus_endpoint == "pty":
                    line = self._sign_on_line(bus, b) if spec.mode_e else bus
                    server = PtyBus(
                        line,
                        baudrate=spec.baudrate,
                        clock=self.clock,
                        answer_baudrate=spec.answer_baudrate,
                    )
                else:
                    port = spec.bus_port + b if spec.bus_port else 0
                    server = HdlcTcpServer(
                        bus, spec.bus_host, port, baudrate=spec.baudrate, clock=self.clock
                    )
                self.bus_servers.append(server)
                await server.start()
        except BaseException:
            await self.close()
            raise
        self.start_seconds = time.perf_counter() - started

    async def close(self) -> None:
        servers: list[WrapperServer | HdlcTcpServer | PtyBus] = [*self.bus_servers]
        if self.tcp is not None:
            servers.append(self.tcp)
        await asyncio.gather(*(s.close() for s in servers), return_exceptions=True)
        self.bus_servers = []
        self.buses = []
        self.tcp = None

    def _sign_on_line(self, bus: HdlcBus, index: int) -> SignOnBus:
        """Bus ``index`` behind the mode E sign-on: device address = the meter id."""
        spec = self.spec

        def select(address: str) -> int | None:
            if not address:
                return FIRST_PHYSICAL if spec.meters_per_bus == 1 else None
            try:
                kind, b, physical = spec.locate(meter_number(address))
            except ValueError:
                return None
            return physical if kind == "bus" and b == index else None

        char = baud_char(spec.mode_e_baud)

        def identify(meter: SimulatedMeter) -> Identification:
            return Identification(MANUFACTURER, char, meter_id_text(meter.meter_id))

        return SignOnBus(bus, select, identify)

    def _resolve(self, local_ip: str, local_port: int) -> SimulatedMeter | None:
        index = self.addresses.position(local_ip)
        if index is None or self.tcp is None or local_port != self.tcp.port:
            return None
        return self.pool.acquire(self.spec.tcp_meter(index))

    def _latency(self, meter: SimulatedMeter) -> float:
        latency = self.spec.latency
        median = self._medians.get(meter.meter_id)
        if median is None:
            median = latency.meter_median(self.spec.seed, meter.meter_id)
            if len(self._medians) < 65536:
                self._medians[meter.meter_id] = median
        jitter = math.exp(self._latency_rng.gauss(0.0, latency.response_sigma))
        return min(latency.max_s, median * jitter)

    @property
    def tcp_port(self) -> int | None:
        return self.tcp.port if self.tcp is not None else None

    def bus_link(self, bus: int) -> str:
        return f"bus{bus:03d}"

    def target(self, number: int) -> MeterTarget:
        """How the collector reaches meter ``number`` (the inventory row as a MeterTarget)."""
        kind, a, b = self.spec.locate(number)
        if kind == "tcp":
            if self.tcp is None:
                raise RuntimeError("the fleet is not started")
            return MeterTarget("tcp", host=self.addresses[a], port=self.tcp.port)
        server = self.bus_servers[a]
        if isinstance(server, PtyBus):
            return MeterTarget(
                "serial",
                device=server.device,
                baudrate=self.spec.baudrate or 9600,
                physical_address=b,
                startup=MODE_E_STARTUP if self.spec.mode_e else "hdlc",
                device_address=meter_id_text(number) if self.spec.mode_e else "",
            )
        return MeterTarget("hdlc-tcp", host=server.host, port=server.port, physical_address=b)

    def inventory_rows(self) -> Iterator[dict[str, str]]:
        """One inventory row per meter, in the columns ``collector.inventory`` parses."""
        spec = self.spec
        if spec.served_tcp and self.tcp is None:
            raise RuntimeError("the fleet is not started")
        blank = dict.fromkeys(WRITTEN_COLUMNS, "")
        for i in range(spec.served_tcp):  # the TCP customers, then the transformer meters
            number = spec.tcp_meter(i)
            row = dict(blank)
            row.update(
                meter_id=meter_id_text(number),
                transport="tcp",
                host=self.addresses[i],
                port=str(self.tcp.port if self.tcp is not None else ""),
                logical_address="1",
                client_sap="16",
                authentication="none",
                station="gprs",
                **self._area(number),
            )
            yield self._secure(row, number)
        for b, server in enumerate(self.bus_servers):
            link = self.bus_link(b)
            for k in range(spec.meters_per_bus):
                physical = FIRST_PHYSICAL + k
                on_bus = spec.bus_meter(b, physical)
                assert on_bus is not None
                row = dict(blank)
                row.update(
                    meter_id=meter_id_text(on_bus),
                    physical_address=str(physical),
                    logical_address="1",
                    client_sap="16",
                    authentication="none",
                    link_id=link,
                    station=link,
                    **self._area(on_bus),
                )
                if isinstance(server, PtyBus):
                    row.update(transport="serial", device=server.device)
                else:
                    row.update(transport="hdlc-tcp", host=server.host, port=str(server.port))
                yield self._secure(row, on_bus)

    def _area(self, number: int) -> dict[str, str]:
        """The area and role columns of meter ``number``."""
        plan = self.areas
        area = None if plan is None else plan.area_of(number)
        if plan is None or area is None:
            return {"area": f"sim{self.spec.seed}"}
        role = "transformer" if plan.is_transformer(number) else "customer"
        return {"area": plan.name(area), "role": role}

    def _secure(self, row: dict[str, str], number: int) -> dict[str, str]:
        """The row of a secured meter names its profile and the management client; an LLS
        meter's the management client and its password reference (its meter id)."""
        if number in self.secured:
            row.update(
                client_sap=str(MANAGEMENT_CLIENT_SAP),
                authentication="hls-gmac",
                security_profile=SECURE_PROFILE,
            )
        elif number in self.lls:
            row.update(
                client_sap=str(MANAGEMENT_CLIENT_SAP),
                authentication="lls",
                password_ref=row["meter_id"],
            )
        return row

    def write_keys(self, path: str | os.PathLike[str]) -> int:
        """Write the key CSV of ``hes keys import``: the secured meters' keys and the LLS
        meters' passwords (atomically; the file is created owner-only since it holds them in
        clear); returns the row count."""
        tmp = f"{os.fspath(path)}.tmp"
        seed = self.spec.seed
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(KEY_COLUMNS)
            for number in sorted(self.secured | self.lls):
                if number in self.secured:
                    keys = model.keys(number, seed)
                    writer.writerow(
                        (
                            meter_id_text(number),
                            keys.encryption_key.hex(),
                            keys.authentication_key.hex(),
                            keys.system_title.hex(),
                            "",
                        )
                    )
                else:
                    password = model.password(number, seed).decode("ascii")
                    writer.writerow((meter_id_text(number), "", "", "", password))
        os.replace(tmp, path)
        return len(self.secured) + len(self.lls)

    def write_inventory(self, path: str | os.PathLike[str]) -> int:
        """Write the inventory CSV (atomically: a temp file renamed); returns the row count."""
        tmp = f"{os.fspath(path)}.tmp"
        count = 0
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=WRITTEN_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in self.inventory_rows():
                writer.writerow(row)
                count += 1
        os.replace(tmp, path)
        return count

    def describe(self) -> dict[str, Any]:
        """Where the fleet listens, as printed by ``hes simulate``."""
        spec = self.spec
        out: dict[str, Any] = {
            "seed": spec.seed,
            "meters": spec.total_meters,
            "secured_meters": len(self.secured),
            "lls_meters": len(self.lls),
            "areas": spec.transformer_meters,
            "under_registering": 0 if self.areas is None else len(self.areas.under_registering),
            "start_seconds": round(self.start_seconds, 3),
        }
        if self.tcp is not None:
            out["tcp"] = {
                "meters": spec.tcp_meters,
                "first_address": self.addresses[0],
                "last_address": self.addresses[-1],
                "port": self.tcp.port,
                "listen_mode": self.tcp.listen_mode,
                "first_meter_id": meter_id_text(spec.tcp_meter(0)),
                "transformer_meters": spec.transformer_meters,
            }
        buses = []
        for b, server in enumerate(self.bus_servers):
            first = spec.bus_meter(b, FIRST_PHYSICAL)
            assert first is not None
            entry: dict[str, Any] = {
                "link_id": self.bus_link(b),
                "meters": spec.meters_per_bus,
                "physical_addresses": [FIRST_PHYSICAL, FIRST_PHYSICAL + spec.meters_per_bus - 1],
                "first_meter_id": meter_id_text(first),
                "baud": spec.baudrate,
            }
            if isinstance(server, PtyBus):
                entry["device"] = server.device
                if spec.mode_e:
                    entry["startup"] = MODE_E_STARTUP
                if spec.answer_baudrate is not None:
                    entry["answer_baud"] = spec.answer_baudrate
            else:
                entry["host"], entry["port"] = server.host, server.port
            buses.append(entry)
        out["buses"] = buses
        return out

    def stats(self) -> dict[str, Any]:
        """Sessions, traffic and faults so far, per server kind."""
        out: dict[str, Any] = {"meters_held": len(self.pool)}
        if self.tcp is not None:
            out["tcp"] = _stats_dict(self.tcp.stats)
        bus_totals = ServerStats()
        for bus, server in zip(self.buses, self.bus_servers, strict=True):
            bus_totals.connections += server.stats.connections
            bus_totals.peak_sessions_in_flight += server.stats.peak_sessions_in_flight
            bus_totals.refused += server.stats.rejected_busy
            bus_totals.bytes_rx += server.stats.bytes_rx
            bus_totals.bytes_tx += server.stats.bytes_tx
            bus_totals.apdus += bus.stats.apdus
            for name, n in bus.stats.faults.items():
                bus_totals.faults[name] = bus_totals.faults.get(name, 0) + n
        if self.buses:
            out["buses"] = _stats_dict(bus_totals)
            out["bus_lines"] = self.bus_lines()
        return out

    def bus_lines(self) -> list[dict[str, Any]]:
        """Per bus behind a TCP port: its connections, the most clients that held it at
        once and the connections that overlapped another (1 and 0 when no bus was shared)."""
        lines = []
        for b, server in enumerate(self.bus_servers):
            if isinstance(server, HdlcTcpServer):
                lines.append(
                    {
                        "link_id": self.bus_link(b),
                        "connections": server.stats.connections,
                        "peak_clients": server.clients.peak_clients,
                        "overlaps": server.clients.overlaps,
                    }
                )
        return lines


def _stats_dict(stats: ServerStats) -> dict[str, Any]:
    return {
        "connections": stats.connections,
        "peak_sessions_in_flight": stats.peak_sessions_in_flight,
        "apdus": stats.apdus,
        "bytes_rx": stats.bytes_rx,
        "bytes_tx": stats.bytes_tx,
        "refused": stats.refused,
        "faults": dict(stats.faults),
    }
