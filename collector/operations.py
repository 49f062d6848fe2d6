"""Remote disconnect / reconnect through the disconnect control object, audited.

Disconnect control 0-0:96.3.10.255 (Blue Book class 70): method 1 remote_disconnect,
method 2 remote_reconnect; attribute 2 output_state (boolean, True = supply connected),
3 control_state (0 disconnected, 1 connected, 2 ready_for_reconnection), 4 control_mode.
A command counts as done only once the relay's states, read back after the method ran,
say so: a meter may accept the ACTION and still not switch (a control mode that forbids
it, a relay fault). Depending on the control mode, remote_reconnect leaves the relay
connected or ready_for_reconnection (the customer presses the button); both are accepted.

Methods need the management association (client SAP 1, LLS with the meter's secret, named
by the inventory row's ``password_ref``; a secured meter: HLS-GMAC with suite-0 ciphering,
its context from ``security_for``). Every command on every meter is recorded in
``command_audit`` (who, what, when, result, states read back), failures included.
Meters on one link (an RS-485 bus) are served one at a time; others run concurrently.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.link_locks import LinkArbiter
from collector.session import Session
from collector.telemetry import Telemetry
from collector.transport import open_transport
from contracts.meters import MeterTarget
from protocols.errors import DlmsError
from protocols.security import SecurityContext
from storage.database import Database
from storage.jobs import ON_DEMAND
from storage.keystore import KeyStoreError
from storage.operations import CommandRecord, record_command
from storage.records import MeterRecord

DISCONNECT_OBIS = "0.0.96.3.10.255"
CLASS_DISCONNECT_CONTROL = 70
METHODS = {"disconnect": 1, "reconnect": 2}
DISCONNECTED = 0
CONNECTED = 1
READY_FOR_RECONNECTION = 2
CONTROL_STATE_NAMES = {
    DISCONNECTED: "disconnected",
    CONNECTED: "connected",
    READY_FOR_RECONNECTION: "ready_for_reconnection",
}
MANAGEMENT_SAP = 1

Secrets = Callable[[str], bytes | None]
#: The suite-0 context of a secured meter's session (None: the meter is not secured);
#: blocking (key store, counter reservation), so it runs in a worker thread.
SecurityFor = Callable[[MeterRecord], SecurityContext | None]


class NoSecret(DlmsError):
    """The meter has no management secret (no ``password_ref``, or the ref resolves to none)."""

    error_class = "no_secret"


class NotConfirmed(DlmsError):
    """The meter accepted the method, but the states read back say the relay did not switch."""

    transient = True
    error_class = "not_confirmed"


class SelectionError(ValueError):
    """The meters asked for cannot be resolved (unknown ids, empty file or group)."""


@dataclass(slots=True, frozen=True)
class RelayState:
    """Disconnect control attributes 2 and 3 as read back."""

    output_state: bool
    control_state: int

    @property
    def control_name(self) -> str:
        return CONTROL_STATE_NAMES.get(self.control_state, f"state {self.control_state}")


@dataclass(slots=True, frozen=True)
class CommandResult:
    """The outcome of one command on one meter (what was audited)."""

    meter_id: str
    command: str
    ok: bool
    state: RelayState | None
    error_class: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "meter_id": self.meter_id,
            "command": self.command,
            "outcome": "ok" if self.ok else "failed",
            "output_state": None if self.state is None else self.state.output_state,
            "control_state": None if self.state is None else self.state.control_name,
            "error_class": self.error_class,
            "error": self.error,
        }


def confirmed(command: str, state: RelayState) -> bool:
    """Whether the states read back show the command done."""
    if command == "disconnect":
        return state.control_state == DISCONNECTED and not state.output_state
    if state.control_state == CONNECTED:
        return state.output_state
    return state.control_state == READY_FOR_RECONNECTION and not state.output_state


async def read_relay(session: Session) -> RelayState:
    """Read output_state and control_state in one GET-WITH-LIST."""
    values = await session.get_many(
        [
            (CLASS_DISCONNECT_CONTROL, DISCONNECT_OBIS, 2),
            (CLASS_DISCONNECT_CONTROL, DISCONNECT_OBIS, 3),
        ]
    )
    for value in values:
        if isinstance(value, DlmsError):
            raise value
    output, control = values
    if not isinstance(output, bool) or not isinstance(control, int):
        raise NotConfirmed(f"disconnect control read back as {output!r}, {control!r}")
    return RelayState(output, int(control))


async def switch(session: Session, command: str) -> RelayState:
    """Run remote_disconnect / remote_reconnect and confirm it by reading the relay back."""
    if command not in METHODS:
        raise ValueError(f"command must be one of {', '.join(METHODS)}, not {command!r}")
    await session.action(CLASS_DISCONNECT_CONTROL, DISCONNECT_OBIS, METHODS[command])
    state = await read_relay(session)
    if not confirmed(command, state):
        raise NotConfirmed(
            f"{command}: relay reads output_state={state.output_state}, "
            f"control_state={state.control_name} after the method"
        )
    return state


def management_target(meter: MeterRecord, timeout: float = 3.0) -> MeterTarget:
    """How to reach the meter as the management client (its link, client SAP 1, LLS)."""
    return MeterTarget(
        meter.transport,
        host=meter.host,
        port=meter.port,
        device=meter.device,
        physical_address=meter.physical_address,
        logical_address=meter.logical_address,
        client_sap=MANAGEMENT_SAP,
        authentication="lls",
        frame_timeout=timeout,
    )


def management_session(
    meter: MeterRecord,
    password: bytes | None,
    security: SecurityContext | None,
    request_timeout: float,
    *,
    frame_timeout: float | None = None,
    **options: Any,
) -> Session:
    """A fresh (unopened) management session: LLS with ``password``, or HLS-GMAC suite 0 with
    ``security``; ``options`` are further :class:`Session` settings (a meter profile's, GBT).
    The link's frame timeout is the request timeout unless ``frame_timeout`` is given."""
    timeout = request_timeout if frame_timeout is None else frame_timeout
    return Session(
        open_transport(management_target(meter, timeout)),
        authentication="hls-gmac" if security is not None else "lls",
        password=password,
        request_timeout=request_timeout,
        security=security,
        **options,
    )


def management_secret(meter: MeterRecord, secrets: Secrets) -> bytes:
    ref = meter.password_ref
    if not ref:
        raise NoSecret(
            f"{meter.meter_id}: no password_ref in the inventory for the management client"
        )
    secret = secrets(ref)
    if secret is None:
        raise NoSecret(f"{meter.meter_id}: no secret for ref {ref!r} (set HES_PASSWORD_<REF>)")
    return secret


async def command_meter(
    meter: MeterRecord,
    command: str,
    *,
    secrets: Secrets,
    request_timeout: float = 10.0,
    session_timeout: float = 60.0,
    security_for: SecurityFor | None = None,
) -> CommandResult:
    """One management session: the method, then the read-back. Errors come back as a result."""
    try:
        security = None
        if security_for is not None:
            security = await asyncio.to_thread(security_for, meter)
        password = None if security is not None else management_secret(meter, secrets)
        session = management_session(meter, password, security, request_timeout, frame_timeout=3.0)
        async with asyncio.timeout(session_timeout):
            async with session:
                state = await switch(session, command)
    except DlmsError as exc:
        return CommandResult(meter.meter_id, command, False, None, exc.error_class, str(exc))
    except KeyStoreError as exc:
        return CommandResult(meter.meter_id, command, False, None, "no_keys", str(exc))
    except TimeoutError:
        return CommandResult(
            meter.meter_id,
            command,
            False,
            None,
            "session_timeout",
            f"session longer than {session_timeout:g} s",
        )
    except (ValueError, OSError) as exc:
        return CommandResult(meter.meter_id, command, False, None, "link", str(exc))
    return CommandResult(meter.meter_id, command, True, state)


async def run_command(
    db: Database,
    meters: Sequence[MeterRecord],
    command: str,
    *,
    requested_by: str | None = None,
    secrets: Secrets,
    concurrency: int = 20,
    request_timeout: float = 10.0,
    session_timeout: float = 60.0,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    links: LinkArbiter | None = None,
    priority: int = ON_DEMAND,
    telemetry: Telemetry | None = None,
    label: str = "command",
    security_for: SecurityFor | None = None,
) -> list[CommandResult]:
    """Run ``command`` on every meter (one session per link at a time); audit each one.

    In the service, ``links`` is its arbiter (shared with the other jobs: a command waits
    for the bus session in progress, then goes before the background schedule) and
    ``telemetry`` counts the sessions."""
    if command not in METHODS:
        raise ValueError(f"command must be one of {', '.join(METHODS)}, not {command!r}")
    who = requested_by or getpass.getuser()
    limit = asyncio.Semaphore(max(1, concurrency))
    own_links: dict[str, asyncio.Lock] = {}

    def line(meter: MeterRecord) -> AbstractAsyncContextManager[Any]:
        shared = meter.transport != "tcp"
        if links is not None:
            return links.hold(meter.link_id, priority, shared)
        return own_links.setdefault(meter.link_id, asyncio.Lock())

    async def one(meter: MeterRecord) -> CommandResult:
        async with line(meter), limit:
            requested_at = now()
            handle = (
                telemetry.session_started(
                    meter.link_id, meter.meter_id, label, meter.transport != "tcp"
                )
                if telemetry is not None
                else None
            )
            result = await command_meter(
                meter,
                command,
                secrets=secrets,
                request_timeout=request_timeout,
                session_timeout=session_timeout,
                security_for=security_for,
            )
            if telemetry is not None and handle is not None:
                telemetry.session_ended(handle, "ok" if result.ok else "failed", result.error_class)
            record = CommandRecord(
                meter_id=meter.meter_id,
                command=command,
                requested_by=who,
                requested_at=requested_at,
                finished_at=now(),
                outcome="ok" if result.ok else "failed",
                error_class=result.error_class,
                error=result.error,
                output_state=None if result.state is None else result.state.output_state,
                control_state=None if result.state is None else result.state.control_state,
            )
            await asyncio.to_thread(record_command, db, record)
            return result

    return list(await asyncio.gather(*(one(m) for m in meters)))


def read_meter_file(path: Path) -> list[str]:
    """Meter ids of a file: one per line (first CSV field), ``#`` comments and a header skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SelectionError(f"cannot read meter file {path}: {exc.strerror or exc}") from None
    ids: list[str] = []
    for line in text.splitlines():
        field = line.split("#", 1)[0].split(",", 1)[0].strip()
        if field and field != "meter_id":
            ids.append(field)
    if not ids:
        raise SelectionError(f"meter file {path} names no meter")
    return ids


def select_meters(
    db: Database,
    ids: Sequence[str] = (),
    file: Path | None = None,
    group: str | None = None,
) -> list[MeterRecord]:
    """The inventory meters named by ids, a file and/or an area; any unknown id is an error."""
    wanted = list(ids)
    if file is not None:
        wanted += read_meter_file(file)
    if not wanted and group is None:
        raise SelectionError("no meters given: name meter ids, --file or --group")
    inventory = {m.meter_id: m for m in db.meters()}
    unknown = [m for m in dict.fromkeys(wanted) if m not in inventory]
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        shown = ", ".join(unknown[:10]) + more
        raise SelectionError(f"not in the inventory: {shown}")
    chosen = {m: inventory[m] for m in wanted}
    if group is not None:
        members = [m for m in inventory.values() if m.area == group]
        if not members:
            raise SelectionError(f"group (area) {group!r} has no meters in the inventory")
        for m in members:
            chosen.setdefault(m.meter_id, m)
    return list(chosen.values())
