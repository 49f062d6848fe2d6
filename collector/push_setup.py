"""Read and configure meters' push setups (Blue Book class 40) and keep what they hold.

Per meter, in one management session: SET whatever is asked (object list, destination,
communication windows), invoke ``push`` when asked, then read attributes 2..7 back, so what
is stored in ``push_setups`` (``storage.push_setups``) is what the meter holds, not what was
sent. The push listener (``collector.push``) decodes a notification that carries only values
by the object list stored here. Each meter's outcome comes back as a report (error class and
text on failure), never raised, so a batch over many meters says what went wrong where.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from collector.firmware import SecurityFor, per_link
from collector.link_locks import LinkArbiter
from collector.meter_profiles import MeterProfileError
from collector.operations import Secrets, management_secret, management_session
from collector.session import Session
from contracts.meters import parse_host_port
from protocols import axdr
from protocols import push_setup as ps
from protocols.errors import DecodeError, DlmsError
from protocols.security import SecurityContext
from storage.database import Database
from storage.keystore import KeyStoreError
from storage.push_setups import PushSetupRecord, save_push_setups
from storage.records import MeterRecord

#: Round trips of one meter's session at most: association, three SETs, the ACTION, six
#: GETs, release (its time bound, with the request timeout).
ROUND_TRIPS = 12


@dataclass(slots=True, frozen=True)
class PushChange:
    """What to SET on a push setup; None leaves an attribute as it is."""

    objects: tuple[ps.PushObject, ...] | None = None
    destination: ps.SendDestination | None = None
    windows: tuple[ps.Window, ...] | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.objects, self.destination, self.windows))


def job_change(params: dict[str, Any]) -> tuple[bytes, PushChange, bool]:
    """(push setup, change, trigger) of a ``push_setup`` job's params (``storage.jobs``
    checked them at submission; ValueError names what is wrong all the same)."""
    setup = str(params.get("setup", "0.0.25.9.0.255"))
    name = bytes(int(p) for p in setup.split("."))
    dest = None
    if "destination" in params:
        host, port = parse_host_port(str(params["destination"]), default_port=4060)
        dest = ps.tcp_destination(host, port)
    windows = (
        tuple(ps.parse_window(str(w)) for w in params["windows"]) if "windows" in params else None
    )
    objects = (
        tuple(ps.parse_object(str(o)) for o in params["objects"]) if params.get("objects") else None
    )
    return name, PushChange(objects, dest, windows), bool(params.get("trigger", False))


def _optional_int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise DecodeError(f"push setup {what}: expected an integer, got {value!r}")
    return int(value)


async def read_setup(
    session: Session, meter_id: str, name: bytes, now: Callable[[], datetime]
) -> PushSetupRecord:
    """Attributes 2..7 of push setup ``name`` (DecodeError names a malformed one)."""
    ln = ".".join(str(b) for b in name)
    objects = ps.object_list_from(await session.get(ps.CLASS_ID, ln, ps.OBJECT_LIST))
    destination = ps.destination_from(await session.get(ps.CLASS_ID, ln, ps.SEND_DESTINATION))
    windows = ps.windows_from(await session.get(ps.CLASS_ID, ln, ps.COMMUNICATION_WINDOW))
    numbers = [
        _optional_int(await session.get(ps.CLASS_ID, ln, attr), what)
        for attr, what in (
            (ps.RANDOMISATION_START_INTERVAL, "randomisation_start_interval"),
            (ps.NUMBER_OF_RETRIES, "number_of_retries"),
            (ps.REPETITION_DELAY, "repetition_delay"),
        )
    ]
    return PushSetupRecord(meter_id, name, objects, destination, windows, now(), *numbers)


async def configure(session: Session, name: bytes, change: PushChange) -> None:
    """SET the attributes ``change`` names (object list first: a push in between is whole)."""
    ln = ".".join(str(b) for b in name)
    if change.objects is not None:
        await session.set(ps.CLASS_ID, ln, ps.OBJECT_LIST, ps.object_list_value(change.objects))
    if change.destination is not None:
        value = ps.destination_value(change.destination)
        await session.set(ps.CLASS_ID, ln, ps.SEND_DESTINATION, value)
    if change.windows is not None:
        value = ps.windows_value(change.windows)
        await session.set(ps.CLASS_ID, ln, ps.COMMUNICATION_WINDOW, value)


async def run_meter(
    meter: MeterRecord,
    name: bytes,
    change: PushChange,
    *,
    secrets: Secrets,
    trigger: bool = False,
    security: SecurityContext | None = None,
    request_timeout: float = 10.0,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    options: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], PushSetupRecord | None]:
    """Configure (when ``change``), push (when ``trigger``) and read back one meter's push
    setup: its report and the record read (None on failure). ``options``: the Session
    settings of the meter's profile (``collector.service.session_options``: short names,
    PDU size, ...)."""
    out: dict[str, Any] = {"meter_id": meter.meter_id, "configured": bool(change)}
    try:
        password = None if security is not None else management_secret(meter, secrets)
        if security is not None:
            await asyncio.to_thread(security.prepare)
        async with asyncio.timeout(request_timeout * ROUND_TRIPS):
            session = management_session(
                meter, password, security, request_timeout, **(options or {})
            )
            async with session:
                if change:
                    await configure(session, name, change)
                if trigger:
                    ln = ".".join(str(b) for b in name)
                    await session.action(ps.CLASS_ID, ln, ps.PUSH_METHOD, axdr.i8(0))
                record = await read_setup(session, meter.meter_id, name, now)
    except DlmsError as exc:
        return {**out, "outcome": "failed", "error_class": exc.error_class, "error": str(exc)}, None
    except TimeoutError:
        return {**out, "outcome": "failed", "error_class": "session_timeout", "error": None}, None
    except (ValueError, OSError) as exc:
        return {**out, "outcome": "failed", "error_class": "link", "error": str(exc)}, None
    return {**out, "outcome": "ok", "pushed": trigger, **record.as_dict()}, record


async def run_many(
    meters: Sequence[MeterRecord],
    name: bytes,
    change: PushChange,
    *,
    secrets: Secrets,
    db: Database | None = None,
    trigger: bool = False,
    security_for: SecurityFor | None = None,
    concurrency: int = 10,
    request_timeout: float = 10.0,
    links: LinkArbiter | None = None,
    priority: int = 0,
    finished: Callable[[dict[str, Any]], None] | None = None,
    stop: asyncio.Event | None = None,
    options_for: Callable[[MeterRecord], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_meter` on every meter, one session per link at a time (``links``: the
    service's arbiter decides); with ``db`` each push setup read back is stored as the
    meter's; ``finished`` hears of each meter done; once ``stop`` is set no meter starts
    (those left say ``not_attempted``); ``options_for`` gives each meter's Session settings
    (its profile's)."""

    async def work(meter: MeterRecord) -> dict[str, Any]:
        if stop is not None and stop.is_set():
            return {
                "meter_id": meter.meter_id,
                "outcome": "failed",
                "error_class": "not_attempted",
                "error": "stopped before this meter",
            }
        try:
            security = await asyncio.to_thread(security_for, meter) if security_for else None
        except KeyStoreError as exc:
            return {
                "meter_id": meter.meter_id,
                "outcome": "failed",
                "error_class": "no_keys",
                "error": str(exc),
            }
        try:
            options = options_for(meter) if options_for is not None else {}
        except MeterProfileError as exc:
            return {
                "meter_id": meter.meter_id,
                "outcome": "failed",
                "error_class": "bad_profile",
                "error": str(exc),
            }
        report, record = await run_meter(
            meter,
            name,
            change,
            secrets=secrets,
            trigger=trigger,
            security=security,
            request_timeout=request_timeout,
            options=options,
        )
        if db is not None and record is not None:
            await asyncio.to_thread(save_push_setups, db, [record])
        return report

    async def one(meter: MeterRecord) -> dict[str, Any]:
        report = await work(meter)
        if finished is not None:
            finished(report)
        return report

    return await per_link(meters, one, concurrency, links, priority)
