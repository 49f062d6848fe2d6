"""``hes read``: read one meter (clock, registers, profiles) and print JSON."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from app import read_security as hls
from app.read_profiles import jsonable, profile_json
from collector.link_stats import diagnose
from collector.meter_profiles import MeterProfile, MeterProfileError, ProfileLibrary, load_profile
from collector.session import Referencing, Session
from collector.transport import HdlcTransport, Transport, open_transport
from contracts.meters import MODE_E_STARTUP, MeterTarget, parse_host_port
from protocols.cosem import CosemDateTime, Obis
from protocols.errors import DlmsError, DlmsTimeout, InvocationCounterRejected
from protocols.hdlc import MAX_INFO_LENGTH, MAX_WINDOW
from protocols.iec62056_21 import SignOnRequest
from protocols.security import SecurityContext
from protocols.xdlms.gbt import MAX_GBT_WINDOW
from protocols.xdlms.server import MIN_CLIENT_PDU
from storage.keystore import counter_recovery


def _usage(message: str) -> typer.Exit:
    """A bad argument: the JSON error on stdout (as every hes read error), the text on
    stderr; the Exit (code 2) to raise."""
    typer.echo(json.dumps({"error": "usage", "detail": message}))
    typer.echo(f"hes: {message}", err=True)
    return typer.Exit(2)


def _check_obis(codes: list[str], option: str) -> None:
    for code in codes:
        try:
            Obis.parse(code)
        except ValueError as exc:
            raise _usage(f"{option} {code!r}: {exc}; write it as A.B.C.D.E.F") from None


def _parse_time(text: str | None, what: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _usage(f"{what}: {text!r} is not an ISO date or date-time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _clock_json(clock: CosemDateTime, host: float) -> dict[str, Any]:
    """The meter clock, and its error against the host clock at ``host`` (the middle of
    the round trip that read it; positive: the meter is ahead)."""
    try:
        meter: datetime | None = clock.to_datetime()
    except DlmsError:
        meter = None
    out: dict[str, Any] = {
        "datetime": None if meter is None else meter.isoformat(),
        "deviation": clock.deviation,
        "clock_status": clock.clock_status,
        "invalid": clock.invalid,
        "daylight_saving": clock.daylight_saving_active,
        "host_time": datetime.fromtimestamp(host, UTC).isoformat(),
        "error_s": None,
    }
    if meter is not None:
        aware = meter if meter.tzinfo else meter.replace(tzinfo=UTC)
        out["error_s"] = round(aware.timestamp() - host, 3)
    return out


def _error_json(exc: DlmsError, plan: hls.HlsPlan | None = None) -> dict[str, Any]:
    """The error a read ended on; a refused invocation counter says how to recover."""
    out: dict[str, Any] = {"error": exc.error_class, "detail": str(exc)}
    advice = hls.counter_error(exc, plan)
    if advice is not None:
        out.update(advice)
    elif isinstance(exc, InvocationCounterRejected) and exc.expected is not None:
        out["expected_invocation_counter"] = exc.expected
        out["recovery"] = counter_recovery(exc.expected)
    return out


async def _read(
    transport: Transport,
    target: MeterTarget,
    password: bytes | None,
    registers: list[str],
    profiles: list[str],
    start: datetime | None,
    end: datetime | None,
    timeout: float,
    profile: MeterProfile,
    referencing: Referencing = "ln",
    security: SecurityContext | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    max_pdu_size = target.max_pdu_size
    async with Session(
        transport,
        authentication=target.authentication,
        password=password,
        security=security,
        request_timeout=timeout,
        max_pdu_size=max_pdu_size,
        gbt_window=target.gbt_window,
        accept_trailing=profile.accept_trailing_bytes,
        inverted_deviation=profile.inverted_deviation,
        range_deviation=profile.range_deviation,
        referencing=referencing,
    ) as session:
        association = session.association
        assert association is not None
        negotiated: dict[str, Any] = {
            "client_max_pdu_size": max_pdu_size,
            "server_max_pdu_size": association.server_max_pdu_size,
            "referencing": referencing,
            "general_block_transfer": session.gbt,
        }
        if target.gbt_window:
            negotiated["gbt_window"] = target.gbt_window
        if session.object_list is not None:
            negotiated["sn_objects"] = len(session.object_list)
        if isinstance(transport, HdlcTransport) and transport.negotiated is not None:
            negotiated["max_info_tx"] = transport.negotiated.max_info_tx
            negotiated["max_info_rx"] = transport.negotiated.max_info_rx
            negotiated["window_tx"] = transport.negotiated.window_tx
            negotiated["window_rx"] = transport.negotiated.window_rx
        out["negotiated"] = negotiated
        sent = time.time()
        clock = await session.read_clock()
        host = (sent + time.time()) / 2
        out["clock"] = _clock_json(clock, host)
        try:
            meter_now = clock.to_datetime()
        except DlmsError:
            meter_now = datetime.fromtimestamp(host, UTC)
        if meter_now.tzinfo is None:
            meter_now = meter_now.replace(tzinfo=UTC)
        out["registers"] = []
        for obis in registers:
            try:
                reg = await session.read_register(obis)
            except DlmsError as exc:
                out["registers"].append(
                    {"obis": obis, "error": exc.error_class, "detail": str(exc)}
                )
                continue
            out["registers"].append(
                {
                    "obis": reg.obis,
                    "value": jsonable(reg.value),
                    "unit": reg.unit_name,
                    "raw": jsonable(reg.raw),
                    "scaler": reg.scaler,
                }
            )
        out["profiles"] = []
        for obis in profiles:
            out["profiles"].append(await profile_json(session, obis, start, end, meter_now))
    if session.warnings:
        out["warnings"] = session.warnings
    out["link"] = _link_json(transport)
    if isinstance(transport, HdlcTransport) and transport.signed_on is not None:
        ident = transport.signed_on.identification
        out["link"]["sign_on"] = {
            "startup": MODE_E_STARTUP,
            "manufacturer": ident.manufacturer,
            "identification": ident.identification,
            "baud": transport.signed_on.baudrate,
        }
    return out


def _link_json(transport: Transport) -> dict[str, Any]:
    hdlc = isinstance(transport, HdlcTransport)
    return {"transport": transport.description, **transport.stats.as_json(hdlc=hdlc)}


def _failure_json(
    exc: DlmsError, transport: Transport, plan: hls.HlsPlan | None = None
) -> dict[str, Any]:
    """The error, the link counters and, for an HDLC exchange that timed out, what the
    counters say about why (nothing arrived, noise, another address answered)."""
    out = _error_json(exc, plan)
    if isinstance(exc, DlmsTimeout) and isinstance(transport, HdlcTransport):
        out.update(diagnose(transport.stats, transport.remote).as_json())
    out["link"] = _link_json(transport)
    return out


def _stderr_line(line: str) -> None:
    typer.echo(line, err=True)


def _profile_error(message: str) -> typer.Exit:
    """A meter profile that cannot be used: JSON on stdout naming file and key, exit 2."""
    typer.echo(json.dumps({"error": "profile", "detail": message}))
    typer.echo(f"hes: {message}", err=True)
    return typer.Exit(2)


def _meter_profile(path: Path | None, name: str | None) -> MeterProfile:
    """The profile of ``--profile-file`` or ``--meter-profile`` (a shipped one), or the
    defaults of a meter that needs none."""
    if path is not None and name is not None:
        raise _usage("give --profile-file or --meter-profile, not both")
    try:
        if path is not None:
            return load_profile(path)
        if name is not None:
            return ProfileLibrary().get(name)
    except (MeterProfileError, ValueError) as exc:
        raise _profile_error(str(exc)) from None
    return MeterProfile("none", "<no profile>")


def _hls_plan(**options: Any) -> hls.HlsPlan:
    """The keys and counter of an HLS-GMAC read; a JSON error naming the option (never a
    key) when they cannot be had."""
    try:
        plan = hls.hls_plan(**options)
    except hls.SecurityUsage as exc:
        typer.echo(json.dumps({"error": exc.error, "detail": str(exc)}))
        typer.echo(f"hes: {exc}", err=True)
        raise typer.Exit(2) from None
    path = options.get("keys_file")
    if path is not None and not hls.file_is_private(path):
        _stderr_line(f"hes: note: key file {path} may be read by other users (chmod 600 it)")
    return plan


def read_command(
    tcp: Annotated[
        str | None, typer.Option(help="HOST[:PORT] of a meter with the TCP wrapper")
    ] = None,
    hdlc_tcp: Annotated[
        str | None, typer.Option("--hdlc-tcp", help="HOST:PORT of a terminal server (HDLC)")
    ] = None,
    serial: Annotated[str | None, typer.Option(help="serial device, e.g. /dev/ttyUSB0")] = None,
    profile_file: Annotated[
        Path | None,
        typer.Option(
            "--profile-file",
            help="meter profile TOML (docs/meter-profiles.md): the model's SAPs, addresses, "
            "frame sizes, start-up, clock sign, channels; options given here override it",
        ),
    ] = None,
    meter_profile: Annotated[
        str | None,
        typer.Option("--meter-profile", help="a shipped meter profile by name, e.g. sim-standard"),
    ] = None,
    baud: Annotated[
        int, typer.Option(help="serial baud rate (8N1); with --mode-e the meter proposes it")
    ] = 9600,
    mode_e: Annotated[
        bool | None,
        typer.Option(
            "--mode-e/--no-mode-e",
            help="with --serial: IEC 62056-21 mode E sign-on at 300 baud 7E1 before HDLC "
            "(optical probes, meters that need it; default: the profile's start-up)",
            show_default=False,
        ),
    ] = None,
    device_address: Annotated[
        str,
        typer.Option(
            help="with --mode-e: the IEC 62056-21 device address in the sign-on request "
            "(needed on a bus of several meters; often the serial number)"
        ),
    ] = "",
    physical_address: Annotated[
        int | None, typer.Option(help="HDLC lower (physical) address of the meter")
    ] = None,
    address_size: Annotated[
        int | None,
        typer.Option(help="HDLC server address size: 0 (smallest that fits), 1, 2 or 4"),
    ] = None,
    logical_address: Annotated[
        int | None, typer.Option(help="logical device (HDLC upper / wPort); default 1")
    ] = None,
    client_sap: Annotated[
        int | None,
        typer.Option(
            "--client-sap",
            "--client",
            help="client SAP: 16 public, 1 management (default: public, or the "
            "management SAP with --auth lls or hls-gmac)",
        ),
    ] = None,
    auth: Annotated[
        str,
        typer.Option(help="authentication: none, lls, or hls-gmac (suite-0 ciphering)"),
    ] = "none",
    password: Annotated[
        str | None, typer.Option(help="LLS password", envvar="HES_PASSWORD")
    ] = None,
    key_store: hls.KeyStoreOption = None,
    keys_file: hls.KeysFileOption = None,
    key_id: hls.KeyIdOption = None,
    ek: hls.EkOption = None,
    ak: hls.AkOption = None,
    ask_keys: hls.AskKeysOption = False,
    system_title: hls.SystemTitleOption = hls.DEFAULT_SYSTEM_TITLE,
    server_system_title: hls.ServerTitleOption = None,
    invocation_counter: hls.CounterOption = None,
    recover_counter: hls.RecoverOption = False,
    counter_obis: hls.CounterObisOption = hls.FRAME_COUNTER,
    db: Annotated[
        str | None,
        typer.Option("--db", help="with --key-store: the hes database", envvar="HES_DB"),
    ] = None,
    master_key_file: hls.MasterKeyOption = None,
    obis: Annotated[list[str] | None, typer.Option(help="register OBIS to read (repeat)")] = None,
    profile: Annotated[list[str] | None, typer.Option(help="profile OBIS to read (repeat)")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="profile range start (ISO)")] = None,
    to: Annotated[str | None, typer.Option(help="profile range end (ISO)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each response")] = 10.0,
    frame_timeout: Annotated[
        float, typer.Option(help="HDLC seconds before a retransmission")
    ] = 3.0,
    retries: Annotated[int, typer.Option(help="HDLC retransmissions before giving up")] = 3,
    max_pdu_size: Annotated[
        int | None,
        typer.Option(
            help=f"client max receive PDU size proposed in the AARQ ({MIN_CLIENT_PDU}..65535; "
            "default 65535)"
        ),
    ] = None,
    max_info_field: Annotated[
        int | None,
        typer.Option(
            help=f"HDLC maximum information field length, both ways (1..{MAX_INFO_LENGTH}; "
            "default 128)"
        ),
    ] = None,
    window: Annotated[
        int | None,
        typer.Option(help="HDLC window proposed, both ways (1..7; default: the profile's, 1)"),
    ] = None,
    gbt_window: Annotated[
        int | None,
        typer.Option(
            help="propose general-block-transfer, receiving this many GBT blocks at once "
            f"(1..{MAX_GBT_WINDOW}; 0: no GBT; default: the profile's, 0)"
        ),
    ] = None,
    trace: Annotated[
        bool, typer.Option(help="print every frame to stderr: hex and what it means")
    ] = False,
    referencing: Annotated[
        str | None,
        typer.Option(
            help="ln (logical names, GET/SET) or sn (short names: Read/Write by base name, "
            "from the meter's object list); default: the meter profile's, else ln"
        ),
    ] = None,
) -> None:
    """Read one meter and print JSON: clock, registers by OBIS, profiles over a time range.

    Without --obis and --profile, a meter profile with a channel map reads its registers
    and its load profile."""
    chosen = [x for x in (tcp, hdlc_tcp, serial) if x]
    if len(chosen) != 1:
        raise _usage("give exactly one of --tcp, --hdlc-tcp, --serial")
    model = _meter_profile(profile_file, meter_profile)
    if auth not in ("none", "lls", "hls-gmac"):
        raise _usage(f"--auth {auth!r}: use none, lls or hls-gmac")
    hls_options = (key_store, keys_file, key_id, ek, ak, server_system_title, invocation_counter)
    hls_flags = recover_counter or ask_keys
    if auth != "hls-gmac" and (hls_flags or any(x is not None for x in hls_options)):
        raise _usage("key, counter and key-store options are for --auth hls-gmac")
    if referencing is None:
        referencing = model.referencing
    if referencing not in ("ln", "sn"):
        raise _usage(f"--referencing {referencing!r}: use ln or sn")
    if baud <= 0:
        raise _usage(f"--baud {baud}: give a baud rate above 0, e.g. 9600")
    if mode_e is None:
        mode_e = bool(serial) and model.startup == MODE_E_STARTUP
    if (mode_e or device_address) and not serial:
        raise _usage("--mode-e and --device-address are for --serial ports")
    if device_address and not mode_e:
        raise _usage("--device-address goes in the mode E sign-on: add --mode-e")
    if mode_e:
        try:
            SignOnRequest(device_address)
        except ValueError as exc:
            raise _usage(f"--device-address: {exc}") from None
    pdu = model.max_pdu_size if max_pdu_size is None else max_pdu_size
    if not MIN_CLIENT_PDU <= pdu <= 0xFFFF:
        raise _usage(
            f"--max-pdu-size {pdu}: give {MIN_CLIENT_PDU}..65535 "
            f"(a meter refuses a PDU size below {MIN_CLIENT_PDU})"
        )
    if max_info_field is not None:
        if tcp:
            raise _usage("--max-info-field is an HDLC setting: use it with --hdlc-tcp or --serial")
        if not 1 <= max_info_field <= MAX_INFO_LENGTH:
            raise _usage(f"--max-info-field {max_info_field}: give 1..{MAX_INFO_LENGTH}")
    if window is not None:
        if tcp:
            raise _usage("--window is an HDLC setting: use it with --hdlc-tcp or --serial")
        if not 1 <= window <= MAX_WINDOW:
            raise _usage(f"--window {window}: give 1..{MAX_WINDOW}")
    gbt = model.gbt_window if gbt_window is None else gbt_window
    if not 0 <= gbt <= MAX_GBT_WINDOW:
        raise _usage(f"--gbt-window {gbt}: give 0 (no GBT) or 1..{MAX_GBT_WINDOW}")
    if gbt and referencing == "sn":
        raise _usage("--gbt-window: general-block-transfer is for LN referencing, not sn")
    if address_size is not None and address_size not in (0, 1, 2, 4):
        raise _usage(f"--address-size {address_size}: use 0, 1, 2 or 4")
    default_sap = model.management_client_sap if auth != "none" else model.public_client_sap
    if profile_file is None and meter_profile is None and auth != "hls-gmac":
        default_sap = 16  # no profile: the public client, as before profiles
    common: dict[str, Any] = {
        "client_sap": default_sap if client_sap is None else client_sap,
        "logical_address": model.logical_address if logical_address is None else logical_address,
        "authentication": auth,
        "max_pdu_size": pdu,
        "gbt_window": gbt,
    }
    hdlc: dict[str, Any] = {
        "physical_address": model.physical_address
        if physical_address is None
        else physical_address,
        "address_size": model.address_size if address_size is None else address_size,
        "frame_timeout": frame_timeout,
        "retries": retries,
        "max_info_length": model.max_info_tx if max_info_field is None else max_info_field,
        "max_info_rx": model.max_info_rx if max_info_field is None else max_info_field,
        "window_size": model.window_size if window is None else window,
    }
    try:
        if tcp:
            host, port = parse_host_port(tcp)
            target = MeterTarget("tcp", host=host, port=port, **common)
        elif hdlc_tcp:
            host, port = parse_host_port(hdlc_tcp, default_port=0)
            if port == 0:
                raise ValueError(f"{hdlc_tcp!r}: give HOST:PORT of the terminal server")
            target = MeterTarget("hdlc-tcp", host=host, port=port, **common, **hdlc)
        else:
            target = MeterTarget(
                "serial",
                device=serial,
                baudrate=baud,
                startup=MODE_E_STARTUP if mode_e else "hdlc",
                device_address=device_address,
                **common,
                **hdlc,
            )
    except ValueError as exc:
        option = "--tcp" if tcp else "--hdlc-tcp" if hdlc_tcp else "--serial"
        raise _usage(f"{option} {exc}") from None
    if auth == "lls" and not password:
        raise _usage("--auth lls needs the meter's password: --password or HES_PASSWORD")
    _check_obis(obis or [], "--obis")
    _check_obis(profile or [], "--profile")
    registers, profiles = list(obis or []), list(profile or [])
    if not registers and not profiles and model.channels is not None:
        registers = list(model.channels.registers)
        profiles = [model.channels.profile_obis]
    start = _parse_time(from_, "--from")
    end = _parse_time(to, "--to")
    secret = password.encode() if password is not None else None
    plan = None
    if auth == "hls-gmac":
        plan = _hls_plan(
            key_store=key_store,
            keys_file=keys_file,
            key_id=key_id,
            ek=ek,
            ak=ak,
            ask=ask_keys,
            system_title=system_title,
            server_system_title=server_system_title,
            invocation_counter=invocation_counter,
            recover=recover_counter,
            counter_obis=counter_obis,
            db=db,
            master_key_file=master_key_file,
        )
    tracer = _stderr_line if trace else None
    try:
        transport = open_transport(target, trace=tracer)
    except ValueError as exc:
        raise _usage(str(exc)) from None

    async def run() -> dict[str, Any]:
        security = None
        if plan is not None:
            security = await plan.prepare(
                target, lambda t: open_transport(t, trace=tracer), timeout
            )
        return await _read(
            transport,
            target,
            secret,
            registers,
            profiles,
            start,
            end,
            timeout,
            model,
            "sn" if referencing == "sn" else "ln",
            security,
        )

    try:
        result = asyncio.run(run())
    except DlmsError as exc:
        failure = _failure_json(exc, transport, plan)
        if plan is not None:
            failure["security"] = plan.as_json()
        typer.echo(json.dumps(failure), file=sys.stdout)
        raise typer.Exit(1) from None
    except (ValueError, OSError) as exc:
        # Not a meter's answer: the bench itself could not go on (a serial device that
        # cannot be configured, an argument the stack refused). Still one JSON error.
        detail = f"{type(exc).__name__}: {exc}"
        typer.echo(json.dumps({"error": "internal", "detail": detail}), file=sys.stdout)
        raise typer.Exit(1) from None
    finally:
        if plan is not None:
            plan.close()
    if plan is not None:
        result["security"] = plan.as_json()
    if profile_file is not None or meter_profile is not None:
        result["meter_profile"] = {
            "name": model.name,
            "source": model.source,
            "manufacturer": model.manufacturer,
            "model": model.model,
        }
    typer.echo(json.dumps(result, indent=2))
