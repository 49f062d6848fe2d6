"""``hes scan``: which physical addresses answer on an HDLC bus, as JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from collector.bus_scan import (
    FIRST_PHYSICAL,
    LAST_PHYSICAL,
    LAST_SHORT_PHYSICAL,
    Answer,
    scan_bus,
)
from collector.link_stats import diagnose
from collector.transport import StreamOpener, serial_opener, tcp_opener
from contracts.meters import parse_host_port
from protocols.errors import DlmsError
from protocols.hdlc import HdlcAddress

#: A scan tries at most this many addresses: at the default timeout, about ten minutes.
MAX_ADDRESSES = 2000
#: The default range: the usual 2-byte physical addresses a bus is set up with.
DEFAULT_LAST = 0x7D


def _usage(message: str) -> typer.Exit:
    """A bad argument: the JSON error on stdout, the text on stderr; the Exit to raise."""
    typer.echo(json.dumps({"error": "usage", "detail": message}))
    typer.echo(f"hes: {message}", err=True)
    return typer.Exit(2)


def _answer_json(answer: Answer, logical_address: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "physical_address": answer.physical_address,
        "logical_address": logical_address,
        "answer": answer.kind,
    }
    if answer.kind == "UA":
        p = answer.parameters
        out["ua_parameters"] = (
            None
            if p is None
            else {
                "max_info_tx": p.max_info_tx,
                "max_info_rx": p.max_info_rx,
                "window_tx": p.window_tx,
                "window_rx": p.window_rx,
            }
        )
        out["disconnected"] = answer.released
    if answer.late:
        out["late"] = True
    return out


def scan_command(
    hdlc_tcp: Annotated[
        str | None, typer.Option("--hdlc-tcp", help="HOST:PORT of a terminal server (HDLC)")
    ] = None,
    serial: Annotated[str | None, typer.Option(help="serial device, e.g. /dev/ttyUSB0")] = None,
    baud: Annotated[int, typer.Option(help="serial baud rate (8N1)")] = 9600,
    first: Annotated[
        int, typer.Option("--from", help="first physical address to try")
    ] = FIRST_PHYSICAL,
    last: Annotated[int, typer.Option("--to", help="last physical address to try")] = DEFAULT_LAST,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each address's UA")] = 0.3,
    logical_address: Annotated[int, typer.Option(help="logical device (HDLC upper)")] = 1,
    client_sap: Annotated[int, typer.Option(help="client SAP: 16 public, 1 management")] = 16,
    address_size: Annotated[
        int, typer.Option(help="server address bytes: 0 smallest that fits, 2 or 4")
    ] = 0,
    trace: Annotated[
        bool, typer.Option(help="print every frame to stderr: hex and what it means")
    ] = False,
) -> None:
    """SNRM each physical address of a range and print which answered (UA parameters);
    every link opened is closed again with DISC."""
    if (hdlc_tcp is None) == (serial is None):
        raise _usage("give exactly one of --hdlc-tcp, --serial")
    if baud <= 0:
        raise _usage(f"--baud {baud}: give a baud rate above 0, e.g. 9600")
    if address_size not in (0, 2, 4):
        raise _usage(f"--address-size {address_size}: use 0, 2 or 4")
    top = LAST_SHORT_PHYSICAL if address_size == 2 else LAST_PHYSICAL
    if not 0 <= first <= last <= top:
        raise _usage(f"--from {first} --to {last}: give 0 <= FROM <= TO <= {top}")
    if last - first + 1 > MAX_ADDRESSES:
        raise _usage(f"--from {first} --to {last}: at most {MAX_ADDRESSES} addresses a scan")
    if timeout <= 0:
        raise _usage(f"--timeout {timeout:g}: give seconds above 0")
    if not 0 <= logical_address <= 0x3FFF or not 0 <= client_sap <= 0x7F:
        raise _usage("--logical-address is 0..16383 and --client-sap 0..127")
    opener: StreamOpener
    if hdlc_tcp is not None:
        try:
            host, port = parse_host_port(hdlc_tcp, default_port=0)
        except ValueError as exc:
            raise _usage(f"--hdlc-tcp {exc}") from None
        if port == 0:
            raise _usage(f"--hdlc-tcp {hdlc_tcp!r}: give HOST:PORT of the terminal server")
        opener, where = tcp_opener(host, port), f"hdlc-tcp://{host}:{port}"
    else:
        assert serial is not None
        opener, where = serial_opener(serial, baud), f"serial://{serial}@{baud}"

    def line(text: str) -> None:
        typer.echo(text, err=True)

    try:
        result = asyncio.run(
            scan_bus(
                opener,
                range(first, last + 1),
                client_sap=client_sap,
                logical_address=logical_address,
                address_size=address_size,
                timeout=timeout,
                trace=line if trace else None,
            )
        )
    except DlmsError as exc:
        typer.echo(json.dumps({"error": exc.error_class, "detail": str(exc)}))
        raise typer.Exit(1) from None
    out: dict[str, Any] = {
        "transport": where,
        "addresses": {"from": first, "to": last, "tried": result.tried},
        "timeout": timeout,
        "answered": [_answer_json(a, logical_address) for a in result.answers],
    }
    if not result.answers:
        found = diagnose(result.stats, HdlcAddress(logical_address, first))
        out["error"] = "no_answer"
        out["diagnosis"] = found.code
    out["link"] = {"transport": where, **result.stats.as_json()}
    typer.echo(json.dumps(out, indent=2))
    if not result.answers:
        raise typer.Exit(1)
