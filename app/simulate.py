"""``hes simulate``: run a seeded fleet until SIGINT/SIGTERM or a set duration.

It prints one JSON line on stdout saying where the fleet listens (TCP port and loopback address
range, bus ports or pty devices, inventory path), so a script or test can wait for that line
and then point the collector at the fleet. On exit it prints a second JSON line with the
fleet's counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from app.run import StopSignals, until_stopped
from contracts.meters import parse_host_port
from protocols.hdlc_link import HdlcSettings
from protocols.iec62056_21 import baud_char
from simulator.faults import FaultSpec
from simulator.fleet import Fleet, FleetSpec, LatencySpec
from simulator.push import DEFAULT_PER_DAY, fleet_pusher
from simulator.quirks import NAMED, named


def _fail(message: str) -> typer.Exit:
    typer.echo(f"hes simulate: {message}", err=True)
    return typer.Exit(2)


def build_spec(
    *,
    tcp_meters: int,
    buses: int,
    meters_per_bus: int,
    seed: int,
    faults: float,
    offline: float,
    intermittent: float,
    slow: float,
    latency: str,
    baud: int,
    pty: bool,
    port: int,
    first_address: str,
    bus_port: int,
    first_meter: int,
    secure_share: float = 0.0,
    lls_share: float = 0.0,
    area_size: int = 0,
    under_share: float = 0.02,
    quirks: Sequence[str] = (),
    mode_e: bool = False,
    answer_baud: int = 0,
    gbt_window: int = 0,
    hdlc_window: int = 1,
    hdlc_max_info: int = 128,
    tcp_device: str = "lo",
    bus_host: str = "127.0.0.1",
) -> FleetSpec:
    """The FleetSpec the options describe; ValueError names the bad option."""
    for name, value in (
        ("--faults", faults),
        ("--offline", offline),
        ("--intermittent", intermittent),
        ("--slow", slow),
        ("--secure-share", secure_share),
        ("--under-share", under_share),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} {value} is not a share within [0, 1]")
    if faults + slow > 1.0:
        raise ValueError("--faults plus --slow exceed 1")
    if area_size < 0:
        raise ValueError(f"--area-size {area_size} must not be negative (0: no areas)")
    if latency not in ("none", "gprs"):
        raise ValueError(f"--latency {latency!r}: use none or gprs")
    if baud < 0:
        raise ValueError(f"--baud {baud} must be 0 (no wire time) or a positive rate")
    if mode_e and not pty:
        raise ValueError("--mode-e is a serial start-up: use it with --pty")
    if mode_e and baud:
        try:
            baud_char(baud)
        except ValueError as exc:
            raise ValueError(f"--mode-e --baud {baud}: {exc}") from None
    if answer_baud < 0:
        raise ValueError(f"--answer-baud {answer_baud} must be 0 (off) or a positive rate")
    if answer_baud and not pty:
        raise ValueError("--answer-baud needs --pty: a TCP port has no baud rate")
    if not 0 <= port <= 65535 or not 0 <= bus_port <= 65535:
        raise ValueError("ports must be within 0..65535")
    try:
        hdlc = HdlcSettings(hdlc_max_info, hdlc_max_info, hdlc_window, hdlc_window)
    except ValueError as exc:
        raise ValueError(f"--hdlc-window/--hdlc-max-info: {exc}") from None
    chosen = named(quirks)
    if gbt_window:
        try:
            chosen = dataclasses.replace(chosen, gbt_window=gbt_window)
        except ValueError as exc:
            raise ValueError(f"--gbt-window: {exc}") from None
    part = faults / 3
    spec_faults = FaultSpec(
        offline=offline,
        intermittent=intermittent,
        no_answer=part,
        corrupt_frame=part,
        drop=part,
        slow=slow,
    )
    return FleetSpec(
        seed=seed,
        tcp_meters=tcp_meters,
        buses=buses,
        meters_per_bus=meters_per_bus,
        baudrate=baud or None,
        latency=LatencySpec("gprs" if latency == "gprs" else "none"),
        faults=spec_faults,
        first_meter=first_meter,
        tcp_port=port,
        first_address=first_address,
        tcp_device=tcp_device,
        bus_host=bus_host,
        bus_port=bus_port,
        bus_endpoint="pty" if pty else "tcp",
        secure_share=secure_share,
        lls_share=lls_share,
        area_size=area_size,
        under_share=under_share,
        quirks=chosen,
        mode_e=mode_e,
        answer_baudrate=answer_baud or None,
        hdlc=hdlc,
    )


async def run_fleet(
    spec: FleetSpec,
    inventory: Path | None,
    duration: float | None,
    push_to: tuple[str, int] | None = None,
    alarms_per_day: float = DEFAULT_PER_DAY,
    keys: Path | None = None,
) -> None:
    """Start the fleet, announce it, serve until a signal or the duration, then close."""
    # Handlers go in before the announcement: whoever reads it may signal at once.
    stop = asyncio.Event()
    fleet: Fleet | None = None
    pusher: asyncio.Task[None] | None = None
    stats: dict[str, Any] = {}
    try:
        with StopSignals().on_loop(stop.set):
            fleet = Fleet(spec)
            await fleet.start()
            if push_to is not None:
                meters = range(spec.first_meter, spec.first_meter + spec.total_meters)
                alarms = fleet_pusher(fleet, meters, push_to, alarms_per_day)
                pusher = asyncio.create_task(alarms.run())
            info = fleet.describe()
            if inventory is not None:
                info["inventory_rows"] = fleet.write_inventory(inventory)
                info["inventory"] = str(inventory.resolve())
            if keys is not None:
                info["key_rows"] = fleet.write_keys(keys)
                info["keys"] = str(keys.resolve())
            typer.echo(json.dumps(info))
            sys.stdout.flush()
            await until_stopped(stop, duration)
    finally:
        if pusher is not None:
            pusher.cancel()
            await asyncio.gather(pusher, return_exceptions=True)
        if fleet is not None:
            stats = fleet.stats()
            await fleet.close()
    typer.echo(json.dumps({"stopped": True, "stats": stats}))


def simulate_command(
    tcp_meters: Annotated[int, typer.Option(help="GPRS meters, one loopback address each")] = 0,
    buses: Annotated[int, typer.Option(help="RS-485 buses (HDLC multidrop)")] = 0,
    meters_per_bus: Annotated[int, typer.Option(help="meters per bus (physical 16, 17...)")] = 0,
    seed: Annotated[int, typer.Option(help="fleet seed: data, faults and latency")] = 1,
    faults: Annotated[
        float,
        typer.Option(
            help="share of sessions with a transient fault (timeout, bad frame, "
            "dropped link, split evenly)"
        ),
    ] = 0.0,
    offline: Annotated[float, typer.Option(help="share of meters offline for good")] = 0.0,
    intermittent: Annotated[
        float, typer.Option(help="share of meters that go offline for hours and come back")
    ] = 0.0,
    slow: Annotated[float, typer.Option(help="share of sessions answered slowly")] = 0.0,
    latency: Annotated[str, typer.Option(help="TCP meter round trips: none or gprs")] = "none",
    baud: Annotated[int, typer.Option(help="bus baud rate for wire time; 0 = none")] = 9600,
    pty: Annotated[bool, typer.Option("--pty", help="buses on ptys instead of TCP ports")] = False,
    port: Annotated[int, typer.Option(help="TCP port of the GPRS meters (0: any free)")] = 4059,
    first_address: Annotated[
        str, typer.Option(help="loopback address of the first GPRS meter")
    ] = "127.1.0.1",
    tcp_device: Annotated[
        str,
        typer.Option(
            help="network device the GPRS meters answer on: lo, or (a test's network "
            "namespace) the device their private address range is routed to"
        ),
    ] = "lo",
    bus_host: Annotated[str, typer.Option(help="address the buses' TCP ports listen on")] = (
        "127.0.0.1"
    ),
    bus_port: Annotated[
        int, typer.Option(help="TCP port of bus 0, bus b on port+b (0: free ports)")
    ] = 0,
    first_meter: Annotated[int, typer.Option(help="number of the first meter")] = 1,
    inventory: Annotated[
        Path | None, typer.Option(help="write the fleet's inventory CSV here")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds (default: on a signal)")
    ] = None,
    push_to: Annotated[
        str | None,
        typer.Option("--push-to", help="push alarms (DataNotification) to this HOST:PORT"),
    ] = None,
    alarms_per_day: Annotated[
        float, typer.Option(help="seeded alarms per meter-day besides outages (0..24)")
    ] = DEFAULT_PER_DAY,
    secure_share: Annotated[
        float,
        typer.Option(
            help="share of meters (seeded) that require HLS-GMAC with suite-0 "
            "ciphering from the management client (client SAP 1)"
        ),
    ] = 0.0,
    lls_share: Annotated[
        float,
        typer.Option(
            help="share of the other meters (seeded) the inventory reads with LLS from the "
            "management client (password_ref: the meter id; the password in the --keys file)"
        ),
    ] = 0.0,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            "--write-keys",
            help="write the key CSV of hes keys import here (mode 0600): the secured meters' "
            "keys and the LLS meters' passwords",
        ),
    ] = None,
    area_size: Annotated[
        int,
        typer.Option(
            help="customer meters per transformer area, each area with a transformer meter "
            "of its own (0: no areas)"
        ),
    ] = 0,
    under_share: Annotated[
        float,
        typer.Option(
            help="with --area-size: share of customer meters (seeded) that under-register"
        ),
    ] = 0.02,
    quirk: Annotated[
        list[str] | None,
        typer.Option(
            help="every meter behaves like a meter found in the field (repeat): " + ", ".join(NAMED)
        ),
    ] = None,
    mode_e: Annotated[
        bool,
        typer.Option(
            "--mode-e",
            help="with --pty: meters need the IEC 62056-21 mode E sign-on (300 baud, then "
            "--baud) before HDLC; the device address is the meter id",
        ),
    ] = False,
    answer_baud: Annotated[
        int,
        typer.Option(
            help="with --pty: the meters answer at this rate whatever rate the client set, "
            "as a bench at the wrong baud rate sees (0: off)"
        ),
    ] = 0,
    gbt_window: Annotated[
        int,
        typer.Option(
            help="meters grant general-block-transfer and receive this many GBT blocks at "
            "once (1..63; 0: no GBT)"
        ),
    ] = 0,
    hdlc_window: Annotated[
        int, typer.Option(help="bus meters accept at most this HDLC window (1..7)")
    ] = 1,
    hdlc_max_info: Annotated[
        int,
        typer.Option(help="bus meters accept at most this HDLC information field, both ways"),
    ] = 128,
) -> None:
    """Run a fleet of simulated meters; print where it listens as one JSON line."""
    try:
        spec = build_spec(
            tcp_meters=tcp_meters,
            buses=buses,
            meters_per_bus=meters_per_bus,
            seed=seed,
            faults=faults,
            offline=offline,
            intermittent=intermittent,
            slow=slow,
            latency=latency,
            baud=baud,
            pty=pty,
            port=port,
            first_address=first_address,
            bus_port=bus_port,
            first_meter=first_meter,
            secure_share=secure_share,
            lls_share=lls_share,
            area_size=area_size,
            under_share=under_share,
            quirks=quirk or [],
            mode_e=mode_e,
            answer_baud=answer_baud,
            gbt_window=gbt_window,
            hdlc_window=hdlc_window,
            hdlc_max_info=hdlc_max_info,
            tcp_device=tcp_device,
            bus_host=bus_host,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if spec.total_meters == 0:
        raise _fail("no meters: give --tcp-meters and/or --buses with --meters-per-bus")
    if duration is not None and duration < 0:
        raise _fail(f"--duration {duration} must not be negative")
    push_target = None
    if push_to is not None:
        try:
            push_target = parse_host_port(push_to, default_port=4060)
        except ValueError as exc:
            raise _fail(f"--push-to: {exc}") from None
    if not 0 <= alarms_per_day <= 24:
        raise _fail(f"--alarms-per-day {alarms_per_day} is outside 0..24")
    try:
        asyncio.run(run_fleet(spec, inventory, duration, push_target, alarms_per_day, keys))
    except OSError as exc:
        raise _fail(str(exc)) from None
