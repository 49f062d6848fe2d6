"""The image transfer steps (Blue Book class 18) on one session, and the block planner.

Image transfer 0.0.44.0.0.255: attributes 2 image_block_size, 3 image_transferred_blocks_status
(bit-string, block n in bit n), 4 image_first_not_transferred_block_number,
5 image_transfer_enabled, 6 image_transfer_status (0 not initiated .. 7 activation failed),
7 image_to_activate_info; methods 1 image_transfer_initiate, 2 image_block_transfer,
3 image_verify, 4 image_activate. The active firmware identifier is 1.0.0.2.0.255.

The planner is pure (:func:`block_count`, :func:`image_block`, :func:`missing_blocks`,
:func:`max_block_size`); the steps (:func:`initiate`, :func:`send_blocks`, :func:`verify`,
:func:`activate`, :func:`active_firmware`, :func:`read_state`) each run on an open management
session and raise their own error class when the meter refuses. ``collector.firmware`` strings
them together across sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from collector.session import Session
from protocols import axdr
from protocols.enums import InterfaceClass
from protocols.errors import DlmsError, DlmsTimeout, LinkError, TemporaryFailure

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


def text_of(value: Any) -> str:
    """An identifier as text (bytes as ASCII, anything else as str)."""
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
    # In general block transfer the ACTION goes in GBT blocks: a block may exceed the PDU.
    room = (
        max_block_size(association.server_max_pdu_size)
        if association is not None and not session.gbt
        else block_size
    )
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


Prepare = Callable[[], Awaitable[None]]


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


STATUS_NAMES = (
    "not_initiated",
    "initiated",
    "verification_initiated",
    "verification_successful",
    "verification_failed",
    "activation_initiated",
    "activation_successful",
    "activation_failed",
)


@dataclass(slots=True, frozen=True)
class TransferState:
    """What a meter's image transfer object says now (``as_dict``: the CLI's JSON)."""

    active_firmware: str
    status: int
    block_size: int
    blocks_held: int
    first_missing: int
    to_activate: list[dict[str, Any]]

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status] if 0 <= self.status < 8 else f"status {self.status}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "active_firmware": self.active_firmware,
            "status": self.status_name,
            "block_size": self.block_size,
            "blocks_held": self.blocks_held,
            "first_missing": self.first_missing,
            "to_activate": self.to_activate,
        }


async def read_state(session: Session) -> TransferState:
    """The active firmware and attributes 2, 3, 4, 6 and 7, in two round trips."""
    active = text_of(await active_firmware(session))
    values = await session.get_many(
        [(CLASS_IMAGE_TRANSFER, IMAGE_TRANSFER_OBIS, a) for a in (2, 3, 4, 6, 7)]
    )
    for value in values:
        if isinstance(value, DlmsError):
            raise value
    block_size, bitmap, first, status, info = values
    held = bitmap.bits.count("1") if isinstance(bitmap, axdr.BitString) else 0
    to_activate = [
        {"size": i[0], "identification": text_of(i[1]), "signature": bytes(i[2]).hex()}
        for i in (info if isinstance(info, list) else [])
        if isinstance(i, tuple | list) and len(i) == 3
    ]
    if not (isinstance(block_size, int) and isinstance(first, int) and isinstance(status, int)):
        raise FirmwareError(f"image transfer attributes read as {values!r}")
    return TransferState(active, int(status), block_size, held, first, to_activate)
