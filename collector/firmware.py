"""Firmware upgrade through the image transfer object (Blue Book class 18), with resume.

The steps of ``collector.image_transfer``, in one management session or several:

1. image_transfer_enabled must be true; image_transfer_initiate({identifier, size}). A meter
   holding part of the same image (same identifier and size) keeps those blocks;
2. image_block_size (fixed by the meter at initiate) must fit the negotiated PDU with the
   ACTION-Request around it; the transferred-blocks bitmap and the first block not transferred
   say which blocks are missing (``missing_blocks``), and only those are sent, each with
   image_block_transfer. A link lost here ends the session: the next session (up to
   ``sessions``) initiates again and resumes from the bitmap;
3. image_verify; temporary-failure means "verification running": poll image_transfer_status
   until it says successful (3) or failed (4);
4. image_to_activate_info must name this image (size and identification);
5. image_activate (temporary-failure: poll the status for 6 or 7); a meter may restart and
   drop the link here, so the answer is not required;
6. a new session reads the active firmware identifier, which must be the image's.

A meter that already runs the image's identifier is left alone (``already_active``), so a
retried job or a second run over a group sends nothing to the meters already done.

Each meter's upload is audited (``command_audit``, command ``firmware``) when a database is
given. Each failure has its own error class (``InitiateRefused``, ``VerificationFailed``, ...
of ``collector.image_transfer``), so a batch over many meters says what went wrong where.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from collector.image_transfer import (
    FirmwareImage,
    Prepare,
    VersionNotChanged,
    activate,
    active_firmware,
    block_count,
    initiate,
    read_state,
    send_blocks,
    text_of,
    verify,
)
from collector.link_locks import LinkArbiter
from collector.operations import Secrets, management_secret, management_session
from collector.session import Session
from collector.telemetry import Telemetry
from protocols.errors import DlmsError, DlmsTimeout, LinkError
from protocols.security import SecurityContext
from storage.database import Database
from storage.keystore import KeyStoreError
from storage.operations import CommandRecord, record_command
from storage.records import MeterRecord

T = TypeVar("T")
#: Round trips of a state read (association, two GETs, release): its session's time bound.
STATE_ROUND_TRIPS = 4
#: Largest image file taken (image_size is a double-long-unsigned, but a meter's flash for a
#: second image is far smaller).
MAX_IMAGE_BYTES = 16 << 20


@dataclass(slots=True)
class UploadReport:
    """What an upload did on one meter (``as_dict`` is the CLI's JSON)."""

    meter_id: str
    identifier: str
    ok: bool = False
    blocks: int = 0
    block_size: int = 0
    #: Blocks sent, per session.
    sent: list[int] = field(default_factory=list)
    #: Blocks the meter already held when each session started sending.
    held: list[int] = field(default_factory=list)
    verified: bool = False
    activated: bool = False
    #: The meter already ran this identifier: nothing was sent (a retried job, say).
    already_active: bool = False
    old_version: str | None = None
    new_version: str | None = None
    error_class: str | None = None
    error: str | None = None

    @property
    def blocks_sent(self) -> int:
        return sum(self.sent)

    @property
    def resumed_from(self) -> int:
        """Blocks the meter held when the first session started sending (0: a fresh upload)."""
        return self.held[0] if self.held else 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            outcome="ok" if self.ok else "failed",
            sessions=len(self.sent),
            blocks_sent=self.blocks_sent,
            resumed_from=self.resumed_from,
        )
        return out


SessionFactory = Callable[[], Session]
#: The security context of a meter's ciphered sessions (None: LLS); blocking (key store).
SecurityFor = Callable[[MeterRecord], SecurityContext | None]


async def upload(
    connect: SessionFactory,
    image: FirmwareImage,
    report: UploadReport,
    sessions: int = 3,
    prepare: Prepare | None = None,
) -> None:
    """Run every step against one meter, resuming in a new session after a lost link.

    ``connect`` makes a fresh (unopened) management session; ``report`` is filled as the
    upload goes, so a failure still says how far it got. ``prepare`` runs before each
    session and block (a ciphered session reserves its invocation counters there, off the
    event loop).
    """
    lost: DlmsError | None = None
    for _ in range(max(1, sessions)):
        try:
            if prepare is not None:
                await prepare()
            async with connect() as session:
                if report.old_version is None:
                    running = await active_firmware(session)
                    report.old_version = text_of(running)
                    if running == image.identifier:
                        report.already_active = True
                        break
                block_size, missing, held = await initiate(session, image)
                report.block_size = block_size
                report.blocks = block_count(len(image.data), block_size)
                report.held.append(held)
                report.sent.append(0)

                def count() -> None:
                    report.sent[-1] += 1

                await send_blocks(session, image, block_size, missing, count, prepare)
                await verify(session, image)
                report.verified = True
                await activate(session)
            break
        except (LinkError, DlmsTimeout) as exc:
            if report.verified:
                break  # lost while activating: the meter may be restarting
            lost = exc
    else:
        assert lost is not None
        raise lost
    if report.already_active:
        report.new_version = report.old_version
        report.ok = True
        return
    if prepare is not None:
        await prepare()
    async with connect() as session:
        version = await active_firmware(session)
    report.new_version = text_of(version)
    if version != image.identifier:
        raise VersionNotChanged(
            f"active firmware is {text_of(version)!r} after activation, not "
            f"{text_of(image.identifier)!r}"
        )
    report.activated = True
    report.ok = True


async def upload_meter(
    meter: MeterRecord,
    image: FirmwareImage,
    *,
    secrets: Secrets,
    sessions: int = 3,
    request_timeout: float = 10.0,
    max_pdu_size: int = 0xFFFF,
    session_timeout: float = 600.0,
    security: SecurityContext | None = None,
    gbt_window: int = 0,
) -> UploadReport:
    """Upload to one inventory meter as the management client (LLS, or HLS-GMAC with
    suite-0 ciphering given ``security``); errors come back in the report (error class and
    text), never raised."""
    report = UploadReport(meter.meter_id, text_of(image.identifier))
    try:
        password = None if security is not None else management_secret(meter, secrets)
        prepare: Prepare | None = None
        if security is not None:
            held = security

            async def prepare() -> None:
                await asyncio.to_thread(held.prepare)

        def connect() -> Session:
            return management_session(
                meter,
                password,
                security,
                request_timeout,
                max_pdu_size=max_pdu_size,
                gbt_window=gbt_window,
            )

        async with asyncio.timeout(session_timeout):
            await upload(connect, image, report, sessions, prepare)
    except DlmsError as exc:
        report.error_class, report.error = exc.error_class, str(exc)
    except TimeoutError:
        report.error_class = "session_timeout"
        report.error = f"upload longer than {session_timeout:g} s"
    except (ValueError, OSError) as exc:
        report.error_class, report.error = "link", str(exc)
    return report


def audit_record(
    report: UploadReport, requested_by: str, requested_at: datetime, finished_at: datetime
) -> CommandRecord:
    """The ``command_audit`` row of one meter's upload (what failed, or the version it runs)."""
    detail = (
        report.error
        if not report.ok
        else f"{report.old_version} -> {report.new_version}"
        + (" (already active)" if report.already_active else "")
    )
    return CommandRecord(
        meter_id=report.meter_id,
        command="firmware",
        requested_by=requested_by,
        requested_at=requested_at,
        finished_at=finished_at,
        outcome="ok" if report.ok else "failed",
        error_class=report.error_class,
        error=detail,
    )


async def upload_many(
    meters: Sequence[MeterRecord],
    image: FirmwareImage,
    *,
    secrets: Secrets,
    db: Database | None = None,
    requested_by: str | None = None,
    concurrency: int = 10,
    links: LinkArbiter | None = None,
    priority: int = 0,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    stop: asyncio.Event | None = None,
    finished: Callable[[UploadReport], None] | None = None,
    security_for: SecurityFor | None = None,
    telemetry: Telemetry | None = None,
    label: str = "firmware",
    **options: Any,
) -> list[UploadReport]:
    """Upload to every meter, one session per link at a time (an RS-485 bus is shared);
    with ``db`` each meter's upload is audited in ``command_audit`` as ``firmware``.

    Once ``stop`` is set no meter starts (those left say ``not_attempted``; one in progress
    keeps its blocks for the next run); ``finished`` hears of each meter done;
    ``security_for`` gives the ciphered meters their security context; ``telemetry`` (the
    service's) counts each meter's upload as a session labelled ``label``."""
    who = requested_by or getpass.getuser()

    async def one(meter: MeterRecord) -> UploadReport:
        if stop is not None and stop.is_set():
            report = UploadReport(meter.meter_id, text_of(image.identifier))
            report.error_class, report.error = "not_attempted", "stopped before this meter"
            return report
        started = now()
        try:
            security = await asyncio.to_thread(security_for, meter) if security_for else None
        except KeyStoreError as exc:
            report = UploadReport(meter.meter_id, text_of(image.identifier))
            report.error_class, report.error = "no_keys", str(exc)
        else:
            shared = meter.transport != "tcp"
            handle = (
                telemetry.session_started(meter.link_id, meter.meter_id, label, shared)
                if telemetry is not None
                else None
            )
            report = await upload_meter(meter, image, secrets=secrets, security=security, **options)
            if telemetry is not None and handle is not None:
                outcome = "ok" if report.ok else "failed"
                telemetry.session_ended(handle, outcome, report.error_class)
        if db is not None:
            record = audit_record(report, who, started, now())
            await asyncio.to_thread(record_command, db, record)
        if finished is not None:
            finished(report)
        return report

    return await per_link(meters, one, concurrency, links, priority)


async def per_link(
    meters: Sequence[MeterRecord],
    work: Callable[[MeterRecord], Awaitable[T]],
    concurrency: int = 10,
    links: LinkArbiter | None = None,
    priority: int = 0,
) -> list[T]:
    """``work`` on every meter, ``concurrency`` at once and one at a time per link (an RS-485
    bus carries one session); with ``links``, the service's arbiter decides."""
    limit = asyncio.Semaphore(max(1, concurrency))
    own: dict[str, asyncio.Lock] = {}

    async def one(meter: MeterRecord) -> T:
        lock: Any = (
            links.hold(meter.link_id, priority, meter.transport != "tcp")
            if links is not None
            else own.setdefault(meter.link_id, asyncio.Lock())
        )
        async with lock, limit:
            return await work(meter)

    return list(await asyncio.gather(*(one(m) for m in meters)))


async def read_meter(
    meter: MeterRecord,
    *,
    secrets: Secrets,
    security: SecurityContext | None = None,
    request_timeout: float = 10.0,
) -> dict[str, Any]:
    """One meter's image transfer state as a JSON-able dict (or its error class)."""
    out: dict[str, Any] = {"meter_id": meter.meter_id}
    try:
        password = None if security is not None else management_secret(meter, secrets)
        if security is not None:
            await asyncio.to_thread(security.prepare)
        async with asyncio.timeout(request_timeout * STATE_ROUND_TRIPS):
            async with management_session(meter, password, security, request_timeout) as session:
                state = await read_state(session)
    except DlmsError as exc:
        return {**out, "outcome": "failed", "error_class": exc.error_class, "error": str(exc)}
    except TimeoutError:
        return {**out, "outcome": "failed", "error_class": "session_timeout", "error": None}
    except (ValueError, OSError) as exc:
        return {**out, "outcome": "failed", "error_class": "link", "error": str(exc)}
    return {**out, "outcome": "ok", **state.as_dict()}


async def read_many(
    meters: Sequence[MeterRecord],
    *,
    secrets: Secrets,
    security_for: SecurityFor | None = None,
    concurrency: int = 10,
    request_timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """:func:`read_meter` on every meter, one session per link at a time."""

    async def one(meter: MeterRecord) -> dict[str, Any]:
        try:
            security = await asyncio.to_thread(security_for, meter) if security_for else None
        except KeyStoreError as exc:
            return {
                "meter_id": meter.meter_id,
                "outcome": "failed",
                "error_class": "no_keys",
                "error": str(exc),
            }
        return await read_meter(
            meter, secrets=secrets, security=security, request_timeout=request_timeout
        )

    return await per_link(meters, one, concurrency)
