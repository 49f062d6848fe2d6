"""Firmware upgrade through the image transfer object (Blue Book class 18), with resume.

Image transfer 0.0.44.0.0.255 (attributes 2 image_block_size, 3 image_transferred_blocks_status,
4 image_first_not_transferred_block_number, 5 image_transfer_enabled, 6 image_transfer_status,
7 image_to_activate_info; methods 1 initiate, 2 block transfer, 3 verify, 4 activate), the
active firmware identifier 1.0.0.2.0.255. The steps, in one management session or several:

1. image_transfer_enabled must be true; image_transfer_initiate({identifier, size}). A meter
   holding part of the same image (same identifier and size) keeps those blocks;
2. image_block_size (fixed by the meter at initiate) must fit the negotiated PDU with the
   ACTION-Request around it; the transferred-blocks bitmap and the first block not transferred
   say which blocks are missing (:func:`missing_blocks`), and only those are sent, each with
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
given. Each failure has its own error class (:class:`InitiateRefused`, :class:`VerificationFailed`,
...), so a batch over many meters says what went wrong where.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector.link_locks import LinkArbiter
from collector.operations import Secrets, management_secret, management_target
from collector.session import Session
from collector.transport import open_transport
from protocols import axdr
from protocols.enums import InterfaceClass
from protocols.errors import DlmsError, DlmsTimeout, LinkError, TemporaryFailure
from protocols.security import SecurityContext
from storage.database import Database
from storage.keystore import KeyStoreError
from storage.operations import CommandRecord, record_command
from storage.records import MeterRecord

IMAGE_TRANSFER_OBIS = "0.0.44.0.0.255"
FIRMWARE_ID_OBIS = "1.0.0.2.0.255"
CLASS_IMAGE_TRANSFER = InterfaceClass.IMAGE_TRANSFER
CLASS_DATA = InterfaceClass.DATA
INITIATE, BLOCK, VERIFY, ACTIVATE = 1, 2, 3, 4
VERIFICATION_INITIATED = 2
VERIFICATION_SUCCESSFUL = 3
VERIFICATION_FAILED = 4
ACTIVATION_INITIATED = 5
ACTIVATION_SUCCESSFUL = 6
ACTIVATION_FAILED = 7
#: ACTION-Request-Normal head, the {double-long-unsigned, octet-string} head and a
#: glo-ciphering wrapper around a block: what a block must leave room for in the PDU.
BLOCK_OVERHEAD = 48
#: How many times image_transfer_status is read while the meter verifies or activates.
STATUS_POLLS = 20
POLL_INTERVAL_S = 1.0
#: Largest image file taken (image_size is a double-long-unsigned, but a meter's flash for a
#: second image is far smaller).
MAX_IMAGE_BYTES = 16 << 20


class FirmwareError(DlmsError):
    """A firmware upload step failed."""

    error_class = "firmware"


class TransferDisabled(FirmwareError):
    """image_transfer_enabled is false: the meter takes no image now."""

    error_class = "transfer_disabled"


class InitiateRefused(FirmwareError):
    """The meter refused image_transfer_initiate (size, identifier, or its state)."""

    error_class = "initiate_refused"


class BlockTooLarge(FirmwareError):
    """The meter's block size does not fit the negotiated PDU with the request around it."""

    error_class = "block_too_large"


class BlockRefused(FirmwareError):
    """The meter refused an image block."""

    error_class = "block_refused"


class VerificationFailed(FirmwareError):
    """image_verify failed: the image is incomplete, or its signature or hash is wrong."""

    error_class = "verification_failed"


class ImageMismatch(FirmwareError):
    """image_to_activate_info does not name the image sent (size or identification)."""

    error_class = "image_mismatch"


class ActivationFailed(FirmwareError):
    """image_activate failed, or the status says activation failed."""

    error_class = "activation_failed"


class VersionNotChanged(FirmwareError):
    """After activation the active firmware identifier is not the new image's."""

    error_class = "version_not_changed"


@dataclass(slots=True, frozen=True)
class FirmwareImage:
    """An image and the identifier the meter knows it by."""

    identifier: bytes
    data: bytes

    def __post_init__(self) -> None:
        if not self.identifier:
            raise ValueError("the image identifier must not be empty")
        if not self.data:
            raise ValueError("the image is empty")


def block_count(size: int, block_size: int) -> int:
    """Blocks of ``block_size`` bytes that hold ``size`` bytes (the last may be shorter)."""
    if block_size < 1:
        raise ValueError(f"block size {block_size} must be positive")
    return -(-size // block_size)


def image_block(data: bytes, number: int, block_size: int) -> bytes:
    """Block ``number`` of the image (0-based)."""
    return data[number * block_size : (number + 1) * block_size]


def missing_blocks(bitmap: axdr.BitString | None, first_missing: int, count: int) -> list[int]:
    """The blocks still to send: clear bits of the transferred-blocks bitmap, in order.

    Blocks past the bitmap's end count as missing; ``first_missing``
    (image_first_not_transferred_block_number) bounds the search from below, since every
    block before it is there by definition.
    """
    bits = bitmap.bits if bitmap is not None else ""
    start = max(0, min(first_missing, count))
    return [n for n in range(start, count) if n >= len(bits) or bits[n] != "1"]


def max_block_size(server_max_pdu: int) -> int:
    """The largest block an ACTION-Request can carry to a meter of this max PDU size."""
    return server_max_pdu - BLOCK_OVERHEAD


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


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


async def _status(session: Session) -> int:
    value = await session.get(CLASS_IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, 6)
    if not isinstance(value, int):
        raise FirmwareError(f"image_transfer_status read as {value!r}")
    return int(value)


async def _await_status(
    session: Session, running: int, done: int, failed: type[FirmwareError], step: str
) -> None:
    """Poll image_transfer_status while it reads ``running``; it must end at ``done``.

    The first read is at once, then one every :data:`POLL_INTERVAL_S` (a meter may take
    seconds to check a large image's signature)."""
    for poll in range(STATUS_POLLS):
        if poll:
            await asyncio.sleep(POLL_INTERVAL_S)
        status = await _status(session)
        if status == done:
            return
        if status != running:
            raise failed(f"{step}: image_transfer_status {status}")
    raise failed(f"{step}: still running after {STATUS_POLLS} status reads")


async def initiate(session: Session, image: FirmwareImage) -> tuple[int, list[int], int]:
    """Steps 1-2: initiate, then (block size, missing blocks, blocks already held)."""
    enabled = await session.get(CLASS_IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, 5)
    if enabled is not True:
        raise TransferDisabled(f"image_transfer_enabled reads {enabled!r}")
    parameter = axdr.structure(axdr.octets(image.identifier), axdr.u32(len(image.data)))
    try:
        await session.action(CLASS_IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, INITIATE, parameter)
    except DlmsError as exc:
        if isinstance(exc, LinkError | DlmsTimeout):
            raise
        raise InitiateRefused(f"image_transfer_initiate: {exc}") from exc
    values = await session.get_many(
        [(CLASS_IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, a) for a in (2, 3, 4)]
    )
    for value in values:
        if isinstance(value, DlmsError):
            raise value
    block_size, bitmap, first = values
    if not isinstance(block_size, int) or block_size < 1:
        raise InitiateRefused(f"image_block_size reads {block_size!r}")
    association = session.association
    room = max_block_size(association.server_max_pdu_size) if association else block_size
    if block_size > room:
        raise BlockTooLarge(
            f"image_block_size {block_size} does not fit the meter's max PDU "
            f"(room for {room} bytes)"
        )
    count = block_count(len(image.data), block_size)
    missing = missing_blocks(
        bitmap if isinstance(bitmap, axdr.BitString) else None,
        first if isinstance(first, int) else 0,
        count,
    )
    return block_size, missing, count - len(missing)


async def send_blocks(
    session: Session,
    image: FirmwareImage,
    block_size: int,
    blocks: Sequence[int],
    sent: Callable[[], None],
    prepare: Prepare | None = None,
) -> None:
    """Step 2: image_block_transfer of each block; ``sent`` counts each one on the wire."""
    for number in blocks:
        if prepare is not None:
            await prepare()
        value = image_block(image.data, number, block_size)
        parameter = axdr.structure(axdr.u32(number), axdr.octets(value))
        sent()
        try:
            await session.action(CLASS_IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, BLOCK, parameter)
        except DlmsError as exc:
            if isinstance(exc, LinkError | DlmsTimeout):
                raise
            raise BlockRefused(f"image_block_transfer {number}: {exc}") from exc


async def verify(session: Session, image: FirmwareImage) -> None:
    """Steps 3-4: image_verify (polling while it runs), then image_to_activate_info."""
    try:
        await session.action(CLASS_IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, VERIFY, axdr.i8(0))
    except TemporaryFailure:
        await _await_status(
            session,
            VERIFICATION_INITIATED,
            VERIFICATION_SUCCESSFUL,
            VerificationFailed,
            "image_verify",
        )
    except DlmsError as exc:
        if isinstance(exc, LinkError | DlmsTimeout):
            raise
        raise VerificationFailed(f"image_verify: {exc}") from exc
    info = await session.get(CLASS_IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, 7)
    wanted = (len(image.data), image.identifier)
    if not isinstance(info, list) or not any(
        isinstance(i, tuple | list) and len(i) >= 2 and (i[0], i[1]) == wanted for i in info
    ):
        raise ImageMismatch(
            f"image_to_activate_info {info!r} does not name {image.identifier!r} "
            f"of {len(image.data)} bytes"
        )


async def activate(session: Session) -> None:
    """Step 5: image_activate; a dropped link may be the meter restarting (checked later)."""
    try:
        await session.action(CLASS_IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, ACTIVATE, axdr.i8(0))
    except TemporaryFailure:
        await _await_status(
            session, ACTIVATION_INITIATED, ACTIVATION_SUCCESSFUL, ActivationFailed, "image_activate"
        )
    except (LinkError, DlmsTimeout):
        return
    except DlmsError as exc:
        raise ActivationFailed(f"image_activate: {exc}") from exc


async def active_firmware(session: Session) -> bytes:
    value = await session.get(CLASS_DATA, FIRMWARE_ID_OBIS, 2)
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, bytes):
        raise FirmwareError(f"active firmware identifier read as {value!r}")
    return value


SessionFactory = Callable[[], Session]
Prepare = Callable[[], Awaitable[None]]
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
                    report.old_version = _text(running)
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
    report.new_version = _text(version)
    if version != image.identifier:
        raise VersionNotChanged(
            f"active firmware is {_text(version)!r} after activation, not "
            f"{_text(image.identifier)!r}"
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
) -> UploadReport:
    """Upload to one inventory meter as the management client (LLS, or HLS-GMAC with
    suite-0 ciphering given ``security``); errors come back in the report (error class and
    text), never raised."""
    report = UploadReport(meter.meter_id, _text(image.identifier))
    try:
        password = None if security is not None else management_secret(meter, secrets)
        prepare: Prepare | None = None
        if security is not None:
            held = security

            async def prepare() -> None:
                await asyncio.to_thread(held.prepare)

        def connect() -> Session:
            return Session(
                open_transport(management_target(meter, request_timeout)),
                authentication="hls-gmac" if security is not None else "lls",
                password=password,
                request_timeout=request_timeout,
                max_pdu_size=max_pdu_size,
                security=security,
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
    **options: Any,
) -> list[UploadReport]:
    """Upload to every meter, one session per link at a time (an RS-485 bus is shared);
    with ``db`` each meter's upload is audited in ``command_audit`` as ``firmware``.

    Once ``stop`` is set no meter starts (those left say ``not_attempted``; one in progress
    keeps its blocks for the next run); ``finished`` hears of each meter done;
    ``security_for`` gives the ciphered meters their security context."""
    limit = asyncio.Semaphore(max(1, concurrency))
    own: dict[str, asyncio.Lock] = {}
    who = requested_by or getpass.getuser()

    async def one(meter: MeterRecord) -> UploadReport:
        lock: Any = (
            links.hold(meter.link_id, priority, meter.transport != "tcp")
            if links is not None
            else own.setdefault(meter.link_id, asyncio.Lock())
        )
        async with lock, limit:
            if stop is not None and stop.is_set():
                report = UploadReport(meter.meter_id, _text(image.identifier))
                report.error_class, report.error = "not_attempted", "stopped before this meter"
                return report
            started = now()
            try:
                security = await asyncio.to_thread(security_for, meter) if security_for else None
            except KeyStoreError as exc:
                report = UploadReport(meter.meter_id, _text(image.identifier))
                report.error_class, report.error = "no_keys", str(exc)
            else:
                report = await upload_meter(
                    meter, image, secrets=secrets, security=security, **options
                )
            if db is not None:
                record = audit_record(report, who, started, now())
                await asyncio.to_thread(record_command, db, record)
            if finished is not None:
                finished(report)
            return report

    return list(await asyncio.gather(*(one(m) for m in meters)))
