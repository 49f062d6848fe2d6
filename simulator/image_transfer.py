"""The simulated meter's image transfer object (Blue Book class 18, version 0) and firmware.

Image transfer 0.0.44.0.0.255: attribute 2 image_block_size, 3 image_transferred_blocks_status
(bit-string, first block in the first bit), 4 image_first_not_transferred_block_number,
5 image_transfer_enabled, 6 image_transfer_status (0 not initiated, 1 initiated,
2 verification initiated, 3 verification successful, 4 verification failed, 5 activation
initiated, 6 activation successful, 7 activation failed), 7 image_to_activate_info (array of
{size, identification, signature}); methods 1 image_transfer_initiate({identifier, size}),
2 image_block_transfer({block number, block value}), 3 image_verify(0), 4 image_activate(0).
The active firmware is the DSMR/IDIS "active firmware identifier" 1.0.0.2.0.255 (class 1).

The simulated meter's own rules (a real meter's are its maker's):

- block size: fixed at initiate to fit the smaller negotiated PDU (client and meter max PDU
  size) less :data:`BLOCK_OVERHEAD` for the ACTION-Request around it (ciphered), at most
  :data:`MAX_BLOCK_SIZE`; with general-block-transfer :data:`GBT_BLOCK_SIZE`, more than the
  meter's PDU (the ACTION comes in GBT blocks);
- initiate with the identifier and size of the image held (being transferred or verified,
  not failed) keeps the blocks received so far (a resume); anything else starts afresh;
- signature: an image is accepted when its last 32 bytes are the SHA-256 of the bytes before
  them (:func:`sign`); verification of an incomplete or unsigned image fails (status 4);
- verification runs "in the background": image_verify answers temporary-failure with status 2,
  and the outcome is there at the next status read or image_verify;
- activation needs a successful verification and makes the image's identifier the active
  firmware identifier;
- a meter with the ``firmware_rollback`` quirk reports the activation successful and keeps
  running its old firmware, as a meter that falls back after a failed restart;
- the blocks received persist in the meter (like the relay, in ``MeterState``), so a power cut
  (:class:`PowerCut`, the ``power_cut_after_blocks`` quirk) loses only the session.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from protocols import axdr
from protocols.enums import DataAccessResult
from protocols.errors import data_access_error

NOT_INITIATED = 0
INITIATED = 1
VERIFICATION_INITIATED = 2
VERIFICATION_SUCCESSFUL = 3
VERIFICATION_FAILED = 4
ACTIVATION_INITIATED = 5
ACTIVATION_SUCCESSFUL = 6
ACTIVATION_FAILED = 7

#: The firmware every simulated meter starts with.
DEFAULT_FIRMWARE = b"SIM-FW-1.0.0"
MAX_BLOCK_SIZE = 512
#: The block size with general-block-transfer negotiated: twice the meter's max PDU.
GBT_BLOCK_SIZE = 2048
#: ACTION-Request-Normal head (13), the {u32, octet-string} parameter head (11) and the
#: glo-ciphering wrapper (21), rounded up.
BLOCK_OVERHEAD = 48
DIGEST_SIZE = 32
#: Largest image the meter takes (its flash for a second image).
MAX_IMAGE_SIZE = 1 << 20


def sign(body: bytes) -> bytes:
    """An image the simulated meter accepts: ``body`` followed by its SHA-256."""
    return body + hashlib.sha256(body).digest()


def signature_ok(image: bytes) -> bool:
    """Whether the image ends with the SHA-256 of the bytes before it."""
    if len(image) <= DIGEST_SIZE:
        return False
    return hashlib.sha256(image[:-DIGEST_SIZE]).digest() == image[-DIGEST_SIZE:]


class PowerCut(Exception):
    """The meter lost power right after storing a block: the session ends unanswered."""


@dataclass(slots=True)
class Transfer:
    """One image being transferred: what was initiated and the blocks received."""

    identifier: bytes
    size: int
    block_size: int
    blocks: dict[int, bytes] = field(default_factory=dict)

    @property
    def block_count(self) -> int:
        return -(-self.size // self.block_size)

    def complete(self) -> bool:
        return len(self.blocks) == self.block_count

    def image(self) -> bytes:
        return b"".join(self.blocks[n] for n in range(self.block_count))

    def first_missing(self) -> int:
        """image_first_not_transferred_block_number (the block count once all are there)."""
        return next((n for n in range(self.block_count) if n not in self.blocks), self.block_count)


@dataclass(slots=True)
class Firmware:
    """The active firmware and the image transfer object's state."""

    active: bytes = DEFAULT_FIRMWARE
    status: int = NOT_INITIATED
    transfer: Transfer | None = None
    #: The outcome of a verification still "running" (status 2 until looked at).
    pending_verdict: bool | None = None
    #: image_to_activate_info once verified: (size, identification, signature).
    to_activate: tuple[int, bytes, bytes] | None = None

    def settle(self) -> None:
        """Finish a background verification: status 3 or 4."""
        verdict = self.pending_verdict
        if verdict is None or self.transfer is None:
            return
        self.pending_verdict = None
        t = self.transfer
        if verdict:
            self.status = VERIFICATION_SUCCESSFUL
            self.to_activate = (t.size, t.identifier, t.image()[-DIGEST_SIZE:])
        else:
            self.status = VERIFICATION_FAILED


def block_size_for(client_max_pdu: int, server_max_pdu: int, gbt: bool = False) -> int:
    """The block size the meter announces for an association with these PDU sizes; with
    general-block-transfer the ACTION goes in GBT blocks, so a block need not fit the PDU."""
    if gbt:
        return GBT_BLOCK_SIZE
    return max(0, min(MAX_BLOCK_SIZE, min(client_max_pdu, server_max_pdu) - BLOCK_OVERHEAD))


def get_attribute(fw: Firmware, attribute: int, block_size: int) -> bytes:
    """Encoded value of attribute 2..7 (``block_size``: what initiate would fix now)."""
    if attribute == 6:
        fw.settle()
    t = fw.transfer
    if attribute == 2:
        return axdr.encode(axdr.u32(t.block_size if t is not None else block_size))
    if attribute == 3:
        count = t.block_count if t is not None else 0
        bits = "".join("1" if t is not None and n in t.blocks else "0" for n in range(count))
        return axdr.encode(axdr.Typed(axdr.BIT_STRING, axdr.BitString.from_bits(bits)))
    if attribute == 4:
        return axdr.encode(axdr.u32(t.first_missing() if t is not None else 0))
    if attribute == 5:
        return axdr.encode(axdr.boolean(True))
    if attribute == 6:
        return axdr.encode(axdr.enum(fw.status))
    info = fw.to_activate
    items = [] if info is None else [axdr.structure(axdr.u32(info[0]), *map(axdr.octets, info[1:]))]
    return axdr.encode(axdr.array(items))


def _fail(what: str) -> Exception:
    return data_access_error(DataAccessResult.OTHER_REASON, what)


def _pair(param: Any, what: str) -> tuple[Any, Any]:
    if not isinstance(param, tuple | list) or len(param) != 2:
        raise data_access_error(DataAccessResult.TYPE_UNMATCHED, f"{what} parameters")
    return param[0], param[1]


def invoke(
    fw: Firmware,
    method: int,
    param: Any,
    block_size: int,
    power_cut_after: int | None = None,
    rollback: bool = False,
) -> None:
    """Run method 1..4, or raise the DataAccessError to answer with (or :class:`PowerCut`).

    ``rollback``: activation answers success but the meter comes back on its old firmware."""
    if method == 1:
        identifier, size = _pair(param, "image_transfer_initiate")
        if not isinstance(identifier, bytes) or not isinstance(size, int) or size < 1:
            raise data_access_error(DataAccessResult.TYPE_UNMATCHED, "image_transfer_initiate")
        if size > MAX_IMAGE_SIZE or block_size < 1:
            raise _fail(f"image of {size} bytes (block size {block_size})")
        t = fw.transfer
        fw.settle()
        resume = (
            t is not None
            and fw.status in (INITIATED, VERIFICATION_INITIATED, VERIFICATION_SUCCESSFUL)
            and (t.identifier, t.size) == (identifier, size)
        )
        if not resume:
            fw.transfer = Transfer(identifier, size, block_size)
        fw.status = INITIATED
        fw.to_activate = None
        return
    t = fw.transfer
    if method == 2:
        number, value = _pair(param, "image_block_transfer")
        if not isinstance(number, int) or not isinstance(value, bytes):
            raise data_access_error(DataAccessResult.TYPE_UNMATCHED, "image_block_transfer")
        if t is None or fw.status != INITIATED:
            raise _fail("image_block_transfer before image_transfer_initiate")
        if not 0 <= number < t.block_count:
            raise _fail(f"block {number} of {t.block_count}")
        expected = min(t.block_size, t.size - number * t.block_size)
        if len(value) != expected:
            raise _fail(f"block {number} holds {len(value)} bytes, not {expected}")
        t.blocks[number] = value
        if power_cut_after is not None and len(t.blocks) == power_cut_after and not t.complete():
            raise PowerCut(f"power cut after {power_cut_after} blocks")
        return
    if method == 3:
        if fw.status == VERIFICATION_INITIATED:
            fw.settle()
        elif fw.status in (INITIATED, VERIFICATION_FAILED) and t is not None:
            if not t.complete():
                fw.status = VERIFICATION_FAILED
                raise _fail(f"image incomplete: {len(t.blocks)} of {t.block_count} blocks")
            fw.status = VERIFICATION_INITIATED
            fw.pending_verdict = signature_ok(t.image())
            raise data_access_error(DataAccessResult.TEMPORARY_FAILURE, "verification running")
        if fw.status == VERIFICATION_FAILED:
            raise _fail("image verification failed")
        if fw.status not in (VERIFICATION_SUCCESSFUL, ACTIVATION_SUCCESSFUL):
            raise _fail("image_verify before image_transfer_initiate")
        return
    fw.settle()
    if fw.status == ACTIVATION_SUCCESSFUL:
        return
    if fw.status != VERIFICATION_SUCCESSFUL or t is None:
        raise _fail("image_activate without a verified image")
    if not rollback:
        fw.active = t.identifier
    fw.status = ACTIVATION_SUCCESSFUL
